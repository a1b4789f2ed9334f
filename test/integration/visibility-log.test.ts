// The per-process log of history visibility and membership changes (src/store/visibility-log.ts)
// on real Redis: built from the timeline, extended by deltas, skipping events kept out of state,
// in batches, and rebuilt when Redis lost or rewrote the history under it.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import { connectRedis } from "../../src/server.js";
import { RedisKeys } from "../../src/store/redis-keys.js";
import { VisibilityLog } from "../../src/store/visibility-log.js";
import type { Pdu } from "../../src/protocol/pdu.js";
import { deletePrefix, requireRedisUrl } from "../support/gatehouse.js";

const ROOM = "!log:hs.test";
let redis: Redis;
let keys: RedisKeys;
let prefix: string;
let fetched = 0;

before(() => {
  redis = connectRedis(requireRedisUrl(), { autoPipelining: true, redisOptions: { maxRetriesPerRequest: 20 } });
  prefix = `ghtest:vislog:${randomBytes(4).toString("hex")}`;
  keys = new RedisKeys(prefix);
  // Counts the events the log reads.
  const mget = redis.mget.bind(redis) as (...keys: string[]) => Promise<(string | null)[]>;
  (redis as unknown as { mget: (...k: string[]) => Promise<(string | null)[]> }).mget = (...k: string[]) => {
    fetched += k.length;
    return mget(...k);
  };
});
after(async () => {
  await deletePrefix(redis, prefix);
  await redis.quit();
});

let stream = 0;
/** Appends an event to the room's timeline (as the persist script does), with a status if given. */
async function append(id: string, pdu: Partial<Pdu>, status?: string) {
  // Stored as the persist script stores it (JSON.stringify of the PDU).
  const full = { sender: "@c:hs.test", content: {}, origin_server_ts: 0, depth: 0, prev_events: [], auth_events: [], ...pdu } as Pdu;
  await redis.set(keys.event(ROOM, id), JSON.stringify(full));
  await redis.zadd(keys.timeline(ROOM), ++stream, id);
  if (status) await redis.hset(keys.eventStatus(ROOM), id, status);
}
const member = (user: string, membership: string) => ({ type: "m.room.member", state_key: user, content: { membership } });

describe("VisibilityLog", () => {
  test("builds, extends by deltas, skips events out of state and non-state events", async () => {
    const log = new VisibilityLog(redis, keys);
    await append("$c", { type: "m.room.create", state_key: "", content: {} });
    await append("$j", member("@c:hs.test", "join"));
    await append("$hv", { type: "m.room.history_visibility", state_key: "", content: { history_visibility: "joined" } });
    await append("$msg", { type: "m.room.message", content: { body: "hi", nested: { type: "m.room.member", state_key: "@z:hs.test", content: { membership: "join" } } } });
    assert.deepEqual((await log.entries(ROOM)).entries, [
      { stream: 2, stateKey: "@c:hs.test", kind: "member", membership: "join" },
      { stream: 3, stateKey: "", kind: "visibility", visibility: "joined" },
    ]);
    fetched = 0;
    await append("$soft", member("@x:other", "join"), "soft_failed");
    await append("$inv", member("@u:other", "invite"));
    await append("$bad", { type: "m.room.history_visibility", state_key: "", content: { history_visibility: "nonsense" } });
    const entries = (await log.entries(ROOM)).entries;
    assert.equal(fetched, 3, "only the delta is read");
    assert.deepEqual(entries.slice(2), [
      { stream: 6, stateKey: "@u:other", kind: "member", membership: "invite" },
      { stream: 7, stateKey: "", kind: "visibility", visibility: "shared" },
    ]);
    fetched = 0;
    assert.equal(((await log.entries(ROOM)).entries).length, 4);
    assert.equal(fetched, 0, "nothing new: no event read");
  });

  test("a timeline rewritten under the cache (Redis restored or flushed) is read again", async () => {
    const log = new VisibilityLog(redis, keys);
    assert.equal(((await log.entries(ROOM)).entries).length, 4);
    await redis.del(keys.timeline(ROOM), keys.eventStatus(ROOM));
    stream = 0;
    await append("$c2", { type: "m.room.create", state_key: "", content: {} });
    await append("$j2", member("@d:hs.test", "join"));
    assert.deepEqual((await log.entries(ROOM)).entries, [{ stream: 2, stateKey: "@d:hs.test", kind: "member", membership: "join" }]);
  });

  test("more events than one batch", async () => {
    const log = new VisibilityLog(redis, keys);
    for (let i = 0; i < 1200; i++) await append(`$m${i}`, i % 100 === 0 ? member(`@u${i}:hs.test`, "join") : { type: "m.room.message", content: {} });
    const entries = (await log.entries(ROOM)).entries;
    assert.equal(entries.length, 1 + 12);
    assert.deepEqual(
      entries.map((e) => e.stream),
      [...entries.map((e) => e.stream)].sort((a, b) => a - b),
    );
  });

  test("concurrent reads of a delta append its entries once", async () => {
    const log = new VisibilityLog(redis, keys);
    const before = (await log.entries(ROOM)).entries.length;
    await append("$c1", member("@p:hs.test", "join"));
    await append("$c2", member("@q:hs.test", "join"));
    const results = await Promise.all([log.entries(ROOM), log.entries(ROOM), log.entries(ROOM)]);
    for (const r of results) assert.equal(r.stream, stream);
    assert.equal((await log.entries(ROOM)).entries.length, before + 2);
  });
});
