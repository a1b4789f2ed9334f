// State groups in a growing room (issue 16, Redis bytes per member): when a delta chain reaches
// stateGroupDepthLimit, the next group is stored as one delta on the whole group the chain
// started from (while that delta is at most stateGroupRebaseLimit keys), not as the whole state
// again. Each case grows a room through the admin API, one state event at a time, and checks the
// groups written, the state before/after every event (against a linear replay of the timeline)
// read by this Gatehouse and by a second one built on the same keys (no caches), and, for rooms
// stored by the previous layout (groups without `b`), that they read and grow correctly.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import request from "supertest";
import { TestGatehouse, ADMIN, enc } from "../support/gatehouse.js";
import { buildGatehouse, type Gatehouse } from "../../src/app.js";
import { createLogger } from "../../src/logger.js";
import { connectRedis } from "../../src/server.js";
import type { Redis } from "ioredis";
import { stateField, stateGroupDepthLimit, stateGroupRebaseLimit } from "../../src/store/room-store.js";

let t: TestGatehouse;
const fresh: Gatehouse[] = [];
const conns: Redis[] = [];
before(async () => {
  t = await TestGatehouse.start({ name: "state-group-rebase" });
});
after(async () => {
  for (const g of fresh) await g.close();
  for (const c of conns) await c.quit().catch(() => undefined);
  await t.cleanup();
});

interface StoredGroup {
  p?: string | null;
  d: Record<string, string | null>;
  n?: number;
  b?: string;
  a?: string;
}

async function storedGroups(roomId: string): Promise<Map<string, StoredGroup>> {
  const raw = await t.redis.hgetall(t.gh.keys.stateGroups(roomId));
  return new Map(Object.entries(raw).map(([id, j]) => [id, JSON.parse(j) as StoredGroup]));
}

/** A second Gatehouse on the same Redis keys: nothing cached, so every state is read from Redis. */
function freshGatehouse(): Gatehouse {
  const redis = connectRedis(t.config.redisUrl!, { autoPipelining: true, redisOptions: { maxRetriesPerRequest: 2 } });
  const queueRedis = connectRedis(t.config.redisUrl!);
  conns.push(redis, queueRedis);
  const g = buildGatehouse({ config: t.config, logger: createLogger("silent"), redis, queueRedis, ownKeys: t.ownKeys, adminToken: t.adminToken, redisPrefix: t.prefix });
  fresh.push(g);
  return g;
}

/** Puts `count` state events (`org.example.k` with new keys from `from`; every 7th updates m.room.topic). */
async function grow(admin: (path: string) => request.Test, roomId: string, from: number, count: number): Promise<void> {
  for (let i = from; i < from + count; i++) {
    const path = i % 7 === 0 ? `${ADMIN}/rooms/${enc(roomId)}/state/m.room.topic/` : `${ADMIN}/rooms/${enc(roomId)}/state/org.example.k/k${i}`;
    const res = await admin(path).send({ content: i % 7 === 0 ? { topic: `t${i}` } : { i } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  }
}

/** The state before/after every event of the room, read by `g`, equals a linear replay of the timeline. */
async function assertStatesLinear(g: Pick<Gatehouse, "store">, roomId: string): Promise<number> {
  const timeline = await g.store.timeline(roomId);
  const ids = timeline.map((e) => e.eventId);
  const pdus = await g.store.getEvents(roomId, ids);
  let state = new Map<string, string>();
  for (const id of ids) {
    const pdu = pdus.get(id)!;
    assert.deepEqual(await g.store.stateAt(roomId, id, "before"), state, `state before ${pdu.type} ${id}`);
    if (typeof pdu.state_key === "string") state = new Map(state).set(stateField(pdu.type, pdu.state_key), id);
    assert.deepEqual(await g.store.stateAt(roomId, id, "after"), state, `state after ${pdu.type} ${id}`);
  }
  return ids.length;
}

const admin = (g: Gatehouse) => (path: string) => request(g.adminApp).put(path).set("Authorization", `Bearer ${t.adminToken}`);
const initialState = (n: number) => Array.from({ length: n }, (_, i) => ({ type: "org.example.init", state_key: `i${i}`, content: { i } }));

describe("long state-group chains are rebased on their whole group", () => {
  const cases: { why: string; initial: number; grow: number; oldLayout: boolean }[] = [
    {
      why: "a room of ~160 keys grown by 160 state events: chains of 50 are rebased until the delta passes half the state (80 keys), then stored whole",
      initial: 150,
      grow: 160,
      oldLayout: false,
    },
    {
      why: "a room stored by the previous layout (no `b` in its groups) reads the same, stores its first long chain whole, and rebases after that",
      initial: 150,
      grow: 60,
      oldLayout: true,
    },
  ];
  for (const c of cases) {
    test(c.why, async () => {
      const roomId = await t.createRoom({ room_version: "12", initial_state: initialState(c.initial) });
      await grow((p) => t.admin.put(p), roomId, 0, c.grow);
      let g = t.gh;
      const stripped = new Set<string>();
      if (c.oldLayout) {
        // What a previous version left in Redis: the same groups without `b`.
        const key = t.gh.keys.stateGroups(roomId);
        for (const [id, j] of Object.entries(await t.redis.hgetall(key))) {
          const { b: _b, ...old } = JSON.parse(j) as StoredGroup;
          stripped.add(id);
          await t.redis.hset(key, id, JSON.stringify(old));
        }
        g = freshGatehouse();
        await assertStatesLinear(g, roomId);
        const before = new Set((await storedGroups(roomId)).keys());
        await grow(admin(g), roomId, c.grow, 160);
        const added = [...(await storedGroups(roomId))].filter(([id]) => !before.has(id)).sort((x, y) => Number(x[0]) - Number(y[0]));
        const firstLong = added.find(([, s]) => s.p === null || s.n === 1);
        assert.ok(firstLong, "a long chain was closed");
        assert.equal(firstLong[1].p, null, "the first long chain on old groups (base unknown) is stored whole");
        assert.ok(
          added.some(([, s]) => typeof s.p === "string" && s.n === 1 && s.b === s.p && Object.keys(s.d).length > 1),
          "after that whole group, a long chain is rebased on it",
        );
      }
      const groups = await storedGroups(roomId);
      const wholes = new Set([...groups].filter(([, s]) => s.p === null).map(([id]) => id));
      const rebased = [...groups].filter(([, s]) => typeof s.p === "string" && wholes.has(s.p) && s.n === 1 && Object.keys(s.d).length > 1);
      assert.ok(rebased.length >= 1, "some group is one delta of several keys on a whole group");
      for (const [id, s] of rebased) {
        const size = 160 + 160;
        assert.ok(Object.keys(s.d).length <= stateGroupRebaseLimit(size, stateGroupDepthLimit(size)), `group ${id}: rebased delta within the limit`);
        if (!stripped.has(id)) assert.equal(s.b, s.p, `group ${id} records its base`);
      }
      // Every delta group's depth is below the chain limit, so a read walks at most that far.
      for (const [id, s] of groups) assert.ok((s.n ?? 0) < 81, `group ${id} at depth ${s.n}`);
      // Whole groups only when the delta would pass half the state: fewer than one per 50 events.
      assert.ok(wholes.size <= 1 + Math.ceil((c.grow + (c.oldLayout ? 160 : 0)) / 100), `${wholes.size} whole groups`);
      const n = await assertStatesLinear(g, roomId);
      assert.ok(n > c.initial + c.grow);
      await assertStatesLinear(freshGatehouse(), roomId);
    });
  }
});
