/**
 * State at each event and current state as resolution (issue #14, deliverable 3), over HTTP
 * with a real Redis. The issue's scenario: two remote moderators with power 100, on two
 * servers, set m.room.topic concurrently on the same prev_events; the event with the older
 * origin_server_ts arrives last. Gatehouse must end where state resolution (and Synapse) ends,
 * whatever the arrival order. When the Synapse peers chroot is available the end state is also
 * compared with Synapse's own synapse.state.v2 on the same events.
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, ADMIN, FED, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";
import { stateField } from "../../src/store/room-store.js";
import type { Pdu } from "../../src/protocol/pdu.js";
import { resolveWithSynapse, synapseOracleSkipReason, triples } from "../support/synapse-state-res.js";

let t: TestGatehouse;
let remoteA: RemoteServer;
let remoteB: RemoteServer;
let n = 0;

before(async () => {
  t = await TestGatehouse.start({ name: "state-res" });
  [remoteA, remoteB] = await Promise.all([RemoteServer.start(), RemoteServer.start()]);
});
after(async () => {
  await t.cleanup();
  await Promise.all([remoteA.close(), remoteB.close()]);
});

const TOPIC = stateField("m.room.topic", "");
const oracleSkip = synapseOracleSkipReason();
if (oracleSkip) console.log(`# state-resolution HTTP test: Synapse comparison skipped: ${oracleSkip}`);

function send(from: RemoteServer, pdus: unknown[]) {
  return t.fed(from, "PUT", `${FED}/v1/send/${enc(`txn-${Date.now()}-${++n}`)}`, { origin: from.serverName, origin_server_ts: Date.now(), pdus });
}

/** A room with a moderator on each remote server (A's at 100, B's at `powerB`). */
async function roomWithTwoModerators(version: string, powerB = 100): Promise<{ roomId: string; modA: string; modB: string }> {
  const roomId = await t.createRoom({ room_version: version });
  const modA = remoteA.userId(`mod${++n}`);
  const modB = remoteB.userId(`mod${++n}`);
  await t.knockAcceptJoin(remoteA, roomId, modA);
  await t.knockAcceptJoin(remoteB, roomId, modB);
  const g = await t.graph(roomId);
  const pl = structuredClone(g.state.get(stateField("m.room.power_levels", ""))!.content) as { users: Record<string, number> };
  pl.users = { ...pl.users, [modA]: 100, [modB]: powerB };
  const res = await t.admin.put(`${ADMIN}/rooms/${enc(roomId)}/state/m.room.power_levels/`).send({ content: pl });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return { roomId, modA, modB };
}

/** Synapse's resolution of the states after the room's forward extremities, from Gatehouse's stored events. */
async function synapseCurrentState(roomId: string, versionId: string): Promise<[string, string, string][]> {
  const timeline = await t.store.timeline(roomId);
  const events = await t.store.getEvents(roomId, timeline.map((e) => e.eventId));
  const extremities = await t.store.getExtremities(roomId);
  const stateSets = await Promise.all(extremities.map(async (x) => (await t.store.stateAt(roomId, x, "after"))!));
  const [answer] = resolveWithSynapse([{ roomVersion: versionId, roomId, events: [...events].map(([eventId, pdu]) => ({ eventId, pdu })), stateSets }]);
  assert.deepEqual(answer!.problems, [], "Synapse accepts every event of the room");
  return answer!.resolved;
}

describe("concurrent topics from two remote moderators (the issue's scenario)", () => {
  for (const version of ["10", "12"]) {
    for (const order of ["newer first, older last", "older first, newer last"] as const) {
      test(`v${version}, ${order}: the topic with the later origin_server_ts wins (mainline, then origin_server_ts), as in Synapse`, async () => {
        const { roomId, modA, modB } = await roomWithTwoModerators(version);
        const base = await t.graph(roomId);
        const now = Date.now();
        // Same prev_events and auth events: built on the same state, concurrently.
        const tplNew = await t.template(roomId, { type: "m.room.topic", sender: modA, state_key: "", content: { topic: "newer, from A" } });
        const tplOld = await t.template(roomId, { type: "m.room.topic", sender: modB, state_key: "", content: { topic: "older, from B" } });
        const newer = remoteA.signEvent({ ...tplNew, origin_server_ts: now + 5_000 }, base.versionId);
        const older = remoteB.signEvent({ ...tplOld, origin_server_ts: now }, base.versionId);
        assert.deepEqual(newer.pdu.prev_events, older.pdu.prev_events);

        const arrivals: [RemoteServer, { pdu: Pdu; eventId: string }][] =
          order === "newer first, older last" ? [[remoteA, newer], [remoteB, older]] : [[remoteB, older], [remoteA, newer]];
        for (const [from, ev] of arrivals) {
          const res = await send(from, [ev.pdu]);
          assert.deepEqual(res.body, { pdus: { [ev.eventId]: {} } }, "both topics are accepted, neither soft-failed");
        }

        const g = await t.graph(roomId);
        assert.deepEqual(g.extremities, [newer.eventId, older.eventId].sort(), "the fork stays until an event merges it");
        assert.equal(g.stateIds.get(TOPIC), newer.eventId, "current state: the resolution of the two branches");
        // State at each event: each branch has its own topic.
        assert.equal((await t.store.stateAt(roomId, older.eventId, "after"))!.get(TOPIC), older.eventId);
        assert.equal((await t.store.stateAt(roomId, newer.eventId, "after"))!.get(TOPIC), newer.eventId);
        assert.deepEqual(await t.store.stateAt(roomId, older.eventId, "before"), new Map(base.stateIds));
        // The admin API reads the same current state.
        const topic = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/state/m.room.topic/`);
        assert.equal(topic.body.topic, "newer, from A", JSON.stringify(topic.body));

        if (!oracleSkip) assert.deepEqual(triples(new Map(g.stateIds)), await synapseCurrentState(roomId, base.versionId), "Synapse ends with the same state");

        // The next local event references both branches and keeps the resolved state.
        await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/send/m.room.message`).send({ content: { msgtype: "m.text", body: "after the fork" } });
        const merged = await t.graph(roomId);
        assert.equal(merged.extremities.length, 1);
        assert.equal(merged.stateIds.get(TOPIC), newer.eventId);
      });
    }
  }
});

describe("soft failure against the resolved current state", () => {
  test("a topic on an old branch by a moderator (50) banned on the other branch by one with 100 is soft-failed, not applied", async () => {
    const { roomId, modA, modB } = await roomWithTwoModerators("12", 50);
    const base = await t.graph(roomId);
    // On one branch A's moderator bans B's moderator; on the other, built on the same state,
    // B's moderator changes the topic. The topic passes the auth rules at its own state but not
    // against the current state, where its sender is banned.
    const ban = remoteA.signEvent(await t.template(roomId, { type: "m.room.member", sender: modA, state_key: modB, content: { membership: "ban" } }), base.versionId);
    const topic = remoteB.signEvent(await t.template(roomId, { type: "m.room.topic", sender: modB, state_key: "", content: { topic: "sneaky" } }), base.versionId);
    assert.deepEqual((await send(remoteA, [ban.pdu])).body, { pdus: { [ban.eventId]: {} } });
    assert.deepEqual((await send(remoteB, [topic.pdu])).body, { pdus: { [topic.eventId]: {} } });
    assert.equal(await t.store.eventStatus(roomId, topic.eventId), "soft_failed");
    const g = await t.graph(roomId);
    assert.equal(g.stateIds.get(TOPIC), base.stateIds.get(TOPIC), "the topic did not change");
    assert.deepEqual(g.extremities, [ban.eventId], "a soft-failed event is no forward extremity");
    assert.equal(await t.store.getMembership(roomId, modB), "ban");
    // Its own state is still recorded (others may build on it).
    assert.equal((await t.store.stateAt(roomId, topic.eventId, "after"))!.get(TOPIC), topic.eventId);
  });
});

describe("state groups in Redis", () => {
  test("every key of a room's state lives in the room's hash slot ({roomId} tag)", async () => {
    const roomId = await t.createRoom({ room_version: "12" });
    await t.setState(roomId, "m.room.topic", "", { topic: "slot" });
    for (const key of [t.gh.keys.stateGroups(roomId), t.gh.keys.eventState(roomId)]) {
      assert.ok(key.includes(`{${roomId}}`), key);
      assert.ok((await t.redis.hlen(key)) > 0, `${key} is written`);
    }
  });

  test("groups are deltas, stored whole again every 50: the state at an early event still reads right after 60 changes", async () => {
    const roomId = await t.createRoom({ room_version: "12" });
    const ids: string[] = [];
    for (let i = 0; i < 60; i++) ids.push(await t.setState(roomId, "m.room.topic", "", { topic: `topic ${i}` }));
    const groups = Object.values(await t.redis.hgetall(t.gh.keys.stateGroups(roomId))).map((j) => JSON.parse(j) as { p: string | null; d: Record<string, string>; n: number });
    assert.ok(Math.max(...groups.map((g) => g.n)) < 50, "no chain longer than 50 deltas");
    const whole = groups.filter((g) => g.p === null);
    assert.ok(whole.length >= 2, "a whole group besides the create event's");
    const deltas = groups.filter((g) => g.p !== null);
    assert.ok(deltas.every((g) => Object.keys(g.d).length === 1), "a state event on current state stores one key");
    // Read with a cold group cache (another process): from Redis alone.
    const { RoomStore } = await import("../../src/store/room-store.js");
    const cold = new RoomStore(t.redis, t.gh.keys);
    assert.equal((await cold.stateAt(roomId, ids[4]!, "after"))!.get(TOPIC), ids[4]);
    assert.equal((await cold.stateAt(roomId, ids[4]!, "before"))!.get(TOPIC), ids[3]);
    assert.deepEqual(await cold.stateAt(roomId, ids[59]!, "after"), await t.store.getStateIds(roomId));
  });

  test("a room stored before state groups (no groups at all) gets a whole group from its current state on the next event", async () => {
    const roomId = await t.createRoom({ room_version: "11" });
    const before = await t.store.getStateIds(roomId);
    // Forget the state groups, as data written by an older Gatehouse would be.
    await t.redis.del(t.gh.keys.stateGroups(roomId), t.gh.keys.eventState(roomId));
    await t.redis.hdel(t.gh.keys.room(roomId), "state_group");
    const restarted = new (await import("../../src/store/room-store.js")).RoomStore(t.redis, t.gh.keys);
    const last = (await t.store.timeline(roomId)).at(-1)!.eventId;
    assert.deepEqual(await restarted.stateAt(roomId, last, "after"), before, "old events: replayed from the timeline");
    const topic = await t.setState(roomId, "m.room.topic", "", { topic: "after the upgrade" });
    const after = await t.store.stateAt(roomId, topic, "after");
    assert.deepEqual(after, new Map([...before, [TOPIC, topic]]));
    assert.deepEqual(await t.store.getStateIds(roomId), after);
  });
});
