// RoomStore against the real Redis at REDIS_URL (one Lua script per event).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import { connectRedis } from "../../src/server.js";
import { scanKeys } from "../support/redis-scan.js";
import { RoomStore, stateField, type PersistInput } from "../../src/store/room-store.js";
import { STATE_RECORD_WINDOW } from "../../src/store/state-cache.js";
import { RedisKeys } from "../../src/store/redis-keys.js";
import { buildEvent } from "../../src/protocol/event-signing.js";
import { getRoomVersion } from "../../src/protocol/room-versions.js";
import type { Pdu } from "../../src/protocol/pdu.js";
import { deletePrefix, dumpPrefix, requireRedisUrl } from "../support/gatehouse.js";
import { randomKey } from "../support/remote-server.js";

const V11 = getRoomVersion("11")!;
const SERVER = "store.test";
const CREATOR = `@creator:${SERVER}`;
const key = randomKey();

let redis: Redis;
let keys: RedisKeys;
let store: RoomStore;
let prefix: string;
let roomCounter = 0;

before(async () => {
  redis = connectRedis(requireRedisUrl(), { redisOptions: { maxRetriesPerRequest: 2 } });
  prefix = `ghtest:roomstore:${randomBytes(4).toString("hex")}`;
  keys = new RedisKeys(prefix);
  store = new RoomStore(redis, keys);
});
after(async () => {
  await deletePrefix(redis, prefix);
  assert.equal((await scanKeys(redis, `${prefix}:*`)).length, 0, "cleanup left keys behind");
  await redis.quit();
});

let ts = 1_700_000_000_000;
interface Ev {
  eventId: string;
  pdu: Pdu;
}
function ev(roomId: string, type: string, o: { stateKey?: string; content?: Record<string, unknown>; prev?: Ev[]; auth?: Ev[]; depth: number; sender?: string }): Ev {
  const built = buildEvent(
    {
      type,
      room_id: roomId,
      sender: o.sender ?? CREATOR,
      ...(o.stateKey !== undefined ? { state_key: o.stateKey } : {}),
      content: o.content ?? {},
      prev_events: (o.prev ?? []).map((e) => e.eventId),
      auth_events: (o.auth ?? []).map((e) => e.eventId),
      depth: o.depth,
      origin_server_ts: ++ts,
    },
    { roomVersion: V11, serverName: SERVER, key, clock: () => ts },
  );
  return { eventId: built.eventId, pdu: built.pdu };
}

function persist(roomId: string, e: Ev, o: Partial<PersistInput> = {}) {
  return store.persistEvent({ roomId, eventId: e.eventId, pdu: e.pdu, expectedStream: null, updatesState: typeof e.pdu.state_key === "string", ...o });
}

/** A new room with its create event persisted. */
async function newRoom(): Promise<{ roomId: string; create: Ev }> {
  const roomId = `!room${++roomCounter}x${randomBytes(3).toString("hex")}:${SERVER}`;
  const create = ev(roomId, "m.room.create", { stateKey: "", content: { room_version: "11" }, depth: 1 });
  assert.equal(await persist(roomId, create, { createRoom: { version: "11", creator: CREATOR, createdTs: 1234 } }), "persisted");
  return { roomId, create };
}

const dump = () => dumpPrefix(redis, prefix, []);

describe("RoomStore.persistEvent", () => {
  test("the create event sets up the room record, state, timeline and extremities", async () => {
    const { roomId, create } = await newRoom();
    assert.deepEqual(await store.getRoom(roomId), { roomId, version: "11", creator: CREATOR, createdTs: 1234, depth: 1, stream: 1, stateGroupSeq: 1 });
    assert.ok((await store.listRooms()).includes(roomId));
    assert.deepEqual(await store.getEvent(roomId, create.eventId), create.pdu);
    assert.equal(await store.getEventJson(roomId, create.eventId), JSON.stringify(create.pdu));
    assert.equal(await store.roomOfEvent(create.eventId), roomId);
    assert.deepEqual(await store.getStateIds(roomId), new Map([[stateField("m.room.create", ""), create.eventId]]));
    assert.deepEqual(await store.getExtremities(roomId), [create.eventId]);
    assert.deepEqual(await store.timeline(roomId), [{ eventId: create.eventId, stream: 1 }]);
    assert.equal(await store.streamOf(roomId, create.eventId), 1);
    assert.equal(await store.getRoom("!unknown:store.test"), null);
  });

  test("a duplicate event is refused as 'duplicate' and changes nothing", async () => {
    const { roomId, create } = await newRoom();
    const join = ev(roomId, "m.room.member", { stateKey: CREATOR, content: { membership: "join" }, prev: [create], auth: [create], depth: 2 });
    assert.equal(await persist(roomId, join, { expectedStream: 1, destinations: ["a.example"] }), "persisted");
    const before = await dump();
    assert.equal(await persist(roomId, join, { expectedStream: 2, destinations: ["a.example"] }), "duplicate");
    assert.equal(await persist(roomId, join, { expectedStream: null, destinations: ["b.example"] }), "duplicate");
    assert.equal(await persist(roomId, create, { createRoom: { version: "11", creator: CREATOR, createdTs: 9 } }), "duplicate");
    assert.deepEqual(await dump(), before);
  });

  test("a stale expectedStream is a 'conflict' and writes nothing at all", async () => {
    const { roomId, create } = await newRoom();
    const a = ev(roomId, "m.room.member", { stateKey: CREATOR, content: { membership: "join" }, prev: [create], auth: [create], depth: 2 });
    assert.equal(await persist(roomId, a, { expectedStream: 1 }), "persisted");
    const b = ev(roomId, "m.room.topic", { stateKey: "", content: { topic: "late" }, prev: [create], depth: 2 });
    const before = await dump();
    assert.equal(await persist(roomId, b, { expectedStream: 1, destinations: ["a.example"] }), "conflict");
    assert.equal(await persist(roomId, b, { expectedStream: 3 }), "conflict");
    assert.deepEqual(await dump(), before);
    assert.equal(await store.getEvent(roomId, b.eventId), null);
    assert.equal(await store.roomOfEvent(b.eventId), null);
  });

  test("a run numbering its state groups from a stale counter is a 'conflict' and writes nothing; a current one moves the counter (why: group IDs are taken with the write)", async () => {
    const { roomId, create } = await newRoom();
    const topic = ev(roomId, "m.room.topic", { stateKey: "", content: { topic: "t" }, prev: [create], auth: [create], depth: 2 });
    const field = stateField("m.room.topic", "");
    const input = (id: string) => ({
      ...topic,
      updatesState: false,
      state: {
        groups: [{ id, parent: "1", delta: { [field]: topic.eventId }, depth: 1 }],
        before: "1",
        after: id,
        current: { group: id, set: [[field, topic.eventId]] as [string, string][], del: [], members: [], reset: false },
      },
    });
    // Another writer took group 2 after the snapshot (counter 1) this run numbered from.
    await store.allocateStateGroups(roomId, 1);
    const before = await dump();
    assert.equal(await store.persistEvents(roomId, [input("2")], { expectedStream: 1, groupSeq: { expected: 1, last: 2 } }), "conflict");
    assert.deepEqual(await dump(), before, "nothing written");
    assert.deepEqual(await store.persistEvents(roomId, [input("3")], { expectedStream: 1, groupSeq: { expected: 2, last: 3 } }), ["persisted"]);
    assert.equal((await store.getRoom(roomId))?.stateGroupSeq, 3);
    assert.deepEqual(await store.allocateStateGroups(roomId, 1), ["4"], "the next ID taken is after the run's");
    assert.equal((await store.getRoom(roomId))?.stateGroup, "3");
  });

  test("concurrent writers at the same stream position: exactly one wins (check-and-write is atomic)", async () => {
    const { roomId, create } = await newRoom();
    const candidates = Array.from({ length: 12 }, (_, i) => ev(roomId, "m.room.message", { content: { body: `m${i}` }, prev: [create], depth: 2 }));
    const results = await Promise.all(candidates.map((c) => persist(roomId, c, { expectedStream: 1, destinations: ["q.example"] })));
    assert.equal(results.filter((r) => r === "persisted").length, 1, JSON.stringify(results));
    assert.equal(results.filter((r) => r === "conflict").length, 11);
    const winner = candidates[results.indexOf("persisted")]!;
    assert.deepEqual(await store.timeline(roomId), [
      { eventId: create.eventId, stream: 1 },
      { eventId: winner.eventId, stream: 2 },
    ]);
    assert.deepEqual(await store.getExtremities(roomId), [winner.eventId]);
    assert.deepEqual(await redis.lrange(keys.outboundPdus("q.example"), 0, -1), [`${roomId} ${winner.eventId}`]);
    for (const c of candidates) if (c !== winner) assert.equal(await store.getEvent(roomId, c.eventId), null);
  });

  test("extremities, depth, state, members and timeline follow a forking and merging DAG", async () => {
    const { roomId, create } = await newRoom();
    const join = ev(roomId, "m.room.member", { stateKey: CREATOR, content: { membership: "join" }, prev: [create], auth: [create], depth: 2 });
    assert.equal(await persist(roomId, join, { expectedStream: 1 }), "persisted");
    assert.deepEqual(await store.getExtremities(roomId), [join.eventId]);
    assert.deepEqual(await store.getMembers(roomId), { [CREATOR]: "join" });

    // Two siblings (like concurrent knocks): both become extremities.
    const k1 = ev(roomId, "m.room.member", { stateKey: "@k1:x.example", sender: CREATOR, content: { membership: "knock" }, prev: [join], depth: 3 });
    const k2 = ev(roomId, "m.room.member", { stateKey: "@k2:x.example", sender: CREATOR, content: { membership: "knock" }, prev: [join], depth: 3 });
    assert.equal(await persist(roomId, k1, { expectedStream: 2 }), "persisted");
    assert.equal(await persist(roomId, k2, { expectedStream: 3 }), "persisted");
    assert.deepEqual((await store.getExtremities(roomId)).sort(), [k1.eventId, k2.eventId].sort());
    assert.deepEqual(await store.getMembers(roomId), { [CREATOR]: "join", "@k1:x.example": "knock", "@k2:x.example": "knock" });
    assert.equal(await store.getMembership(roomId, "@k2:x.example"), "knock");
    assert.equal((await store.getRoom(roomId))!.depth, 3);

    // A message merging both: one extremity again; it is not state.
    const msg = ev(roomId, "m.room.message", { content: { body: "merge" }, prev: [k1, k2], depth: 4 });
    const stateBefore = await store.getStateIds(roomId);
    assert.equal(await persist(roomId, msg, { expectedStream: 4 }), "persisted");
    assert.deepEqual(await store.getExtremities(roomId), [msg.eventId]);
    assert.deepEqual(await store.getStateIds(roomId), stateBefore);

    // A membership change updates the state and the members mirror.
    const leave = ev(roomId, "m.room.member", { stateKey: "@k1:x.example", sender: CREATOR, content: { membership: "leave" }, prev: [msg], depth: 5 });
    assert.equal(await persist(roomId, leave, { expectedStream: 5 }), "persisted");
    assert.equal(await store.getMembership(roomId, "@k1:x.example"), "leave");
    assert.equal((await store.getStateIds(roomId)).get(stateField("m.room.member", "@k1:x.example")), leave.eventId);

    // A shallower event (depth 2) does not lower the room's depth.
    const shallow = ev(roomId, "m.room.message", { content: { body: "old" }, prev: [leave], depth: 2 });
    assert.equal(await persist(roomId, shallow, { expectedStream: 6 }), "persisted");
    const room = (await store.getRoom(roomId))!;
    assert.equal(room.depth, 5);
    assert.equal(room.stream, 7);

    assert.deepEqual(
      (await store.timeline(roomId)).map((e) => e.eventId),
      [create, join, k1, k2, msg, leave, shallow].map((e) => e.eventId),
    );
    assert.deepEqual((await store.timeline(roomId, 3, 2)).map((e) => e.stream), [3, 4]);

    const current = await store.getCurrentState(roomId);
    assert.equal(current.stream, 7);
    assert.equal(current.depth, 5);
    assert.deepEqual(current.extremities, [shallow.eventId]);
    assert.deepEqual(current.state.get(stateField("m.room.member", "@k2:x.example")), k2.pdu);
    assert.equal(current.stateIds.size, 4);
  });

  test("updatesState=false keeps a state event out of current state (graph still advances)", async () => {
    const { roomId, create } = await newRoom();
    const topic = ev(roomId, "m.room.topic", { stateKey: "", content: { topic: "t" }, prev: [create], depth: 2 });
    assert.equal(await persist(roomId, topic, { expectedStream: 1, updatesState: false }), "persisted");
    assert.equal((await store.getStateIds(roomId)).has(stateField("m.room.topic", "")), false);
    assert.deepEqual(await store.getExtremities(roomId), [topic.eventId]);
  });

  test("a soft-failed event is kept (event, timeline, status) but touches no state, extremities, depth or queue", async () => {
    const { roomId, create } = await newRoom();
    const before = {
      state: await store.getStateIds(roomId),
      ext: await store.getExtremities(roomId),
      members: await store.getMembers(roomId),
    };
    const bad = ev(roomId, "m.room.member", { stateKey: "@bad:x.example", sender: CREATOR, content: { membership: "join" }, prev: [create], depth: 9 });
    assert.equal(await persist(roomId, bad, { expectedStream: null, updatesState: false, status: "soft_failed", destinations: ["sf.example"] }), "persisted");
    assert.deepEqual(await store.getEvent(roomId, bad.eventId), bad.pdu);
    assert.equal(await store.eventStatus(roomId, bad.eventId), "soft_failed");
    assert.equal(await store.streamOf(roomId, bad.eventId), 2);
    assert.deepEqual(await store.getStateIds(roomId), before.state);
    assert.deepEqual(await store.getExtremities(roomId), before.ext);
    assert.deepEqual(await store.getMembers(roomId), before.members);
    assert.equal((await store.getRoom(roomId))!.depth, 1);
    assert.equal(await redis.exists(keys.outboundPdus("sf.example")), 0);
    assert.equal(await store.eventStatus(roomId, create.eventId), null);
  });

  test("outbound queue entries are written by the same script, one per destination", async () => {
    const { roomId, create } = await newRoom();
    const d1 = `d1-${roomCounter}.example`;
    const d2 = `d2-${roomCounter}.example:8448`;
    const a = ev(roomId, "m.room.message", { content: { body: "a" }, prev: [create], depth: 2 });
    const b = ev(roomId, "m.room.message", { content: { body: "b" }, prev: [a], depth: 3 });
    assert.equal(await persist(roomId, a, { expectedStream: 1, destinations: [d1, d2] }), "persisted");
    assert.equal(await persist(roomId, b, { expectedStream: 2, destinations: [d2] }), "persisted");
    assert.deepEqual(await redis.lrange(keys.outboundPdus(d1), 0, -1), [`${roomId} ${a.eventId}`]);
    assert.deepEqual(await redis.lrange(keys.outboundPdus(d2), 0, -1), [`${roomId} ${a.eventId}`, `${roomId} ${b.eventId}`]);
    const dests = await redis.smembers(keys.destinations());
    assert.ok(dests.includes(d1) && dests.includes(d2));
    // Not queued: duplicates and conflicts.
    assert.equal(await persist(roomId, b, { expectedStream: 3, destinations: [d1] }), "duplicate");
    const c = ev(roomId, "m.room.message", { content: { body: "c" }, prev: [b], depth: 4 });
    assert.equal(await persist(roomId, c, { expectedStream: 1, destinations: [d1] }), "conflict");
    assert.deepEqual(await redis.lrange(keys.outboundPdus(d1), 0, -1), [`${roomId} ${a.eventId}`]);
  });
});

describe("RoomStore reads", () => {
  test("reads of more event IDs than fit in one call's arguments (a send_join in a 100k-member room) go in chunks, in order", async () => {
    // 150,000 spread arguments overflow V8's stack (RangeError); the store reads in chunks of
    // MULTI_READ_CHUNK. The one real event sits past the first chunk, so order is checked too.
    const { roomId, create } = await newRoom();
    const ids = Array.from({ length: 150_000 }, (_, i) => `$missing${i}`);
    ids[123_456] = create.eventId;
    const events = await store.getEvents(roomId, ids);
    assert.deepEqual([...events.keys()], [create.eventId]);
    const streams = await store.streamsOf(roomId, ids);
    assert.equal(streams.length, ids.length);
    assert.equal(streams.filter((x) => x !== null).length, 1);
    assert.notEqual(streams[123_456], null, "the create event's stream position, at its own index");
    assert.equal((await store.eventStatuses(roomId, ids)).size, 0);
    assert.equal((await store.redactionsOf(roomId, ids)).size, 0);
    assert.ok((await store.eventStateGroups(roomId, ids)).size <= 1);
  });

  test("stateAt before/after an event replays accepted state in order, skipping soft-failed events", async () => {
    const { roomId, create } = await newRoom();
    const join = ev(roomId, "m.room.member", { stateKey: CREATOR, content: { membership: "join" }, prev: [create], auth: [create], depth: 2 });
    const t1 = ev(roomId, "m.room.topic", { stateKey: "", content: { topic: "one" }, prev: [join], auth: [create, join], depth: 3 });
    const msg = ev(roomId, "m.room.message", { content: { body: "hi" }, prev: [t1], auth: [create, join], depth: 4 });
    const sf = ev(roomId, "m.room.topic", { stateKey: "", content: { topic: "soft" }, prev: [msg], depth: 5 });
    const t2 = ev(roomId, "m.room.topic", { stateKey: "", content: { topic: "two" }, prev: [msg], auth: [create, join], depth: 5 });
    let s = 1;
    for (const e of [join, t1, msg]) assert.equal(await persist(roomId, e, { expectedStream: s++ }), "persisted");
    assert.equal(await persist(roomId, sf, { updatesState: false, status: "soft_failed" }), "persisted");
    assert.equal(await persist(roomId, t2, { expectedStream: 5 }), "persisted");

    const topicKey = stateField("m.room.topic", "");
    const beforeT1 = (await store.stateAt(roomId, t1.eventId, "before"))!;
    assert.deepEqual(beforeT1, new Map([[stateField("m.room.create", ""), create.eventId], [stateField("m.room.member", CREATOR), join.eventId]]));
    assert.equal((await store.stateAt(roomId, t1.eventId, "after"))!.get(topicKey), t1.eventId);
    assert.equal((await store.stateAt(roomId, msg.eventId, "after"))!.get(topicKey), t1.eventId);
    // The soft-failed topic never counts, even "after" itself.
    assert.equal((await store.stateAt(roomId, sf.eventId, "after"))!.get(topicKey), t1.eventId);
    assert.equal((await store.stateAt(roomId, t2.eventId, "before"))!.get(topicKey), t1.eventId);
    assert.equal((await store.stateAt(roomId, t2.eventId, "after"))!.get(topicKey), t2.eventId);
    assert.deepEqual(await store.stateAt(roomId, t2.eventId, "after"), await store.getStateIds(roomId));
    assert.equal(await store.stateAt(roomId, "$unknown", "before"), null);
    // The create event: nothing before it.
    assert.deepEqual(await store.stateAt(roomId, create.eventId, "before"), new Map());
  });

  test("authChain: everything reachable through auth_events, excluding the start events", async () => {
    const { roomId, create } = await newRoom();
    const join = ev(roomId, "m.room.member", { stateKey: CREATOR, content: { membership: "join" }, prev: [create], auth: [create], depth: 2 });
    const pl = ev(roomId, "m.room.power_levels", { stateKey: "", content: { users: { [CREATOR]: 100 } }, prev: [join], auth: [create, join], depth: 3 });
    const jr = ev(roomId, "m.room.join_rules", { stateKey: "", content: { join_rule: "knock" }, prev: [pl], auth: [create, join, pl], depth: 4 });
    const knock = ev(roomId, "m.room.member", { stateKey: "@k:x.example", sender: CREATOR, content: { membership: "knock" }, prev: [jr], auth: [create, pl, jr], depth: 5 });
    let s = 1;
    for (const e of [join, pl, jr, knock]) assert.equal(await persist(roomId, e, { expectedStream: s++ }), "persisted");

    const chain = await store.authChain(roomId, [knock.eventId]);
    assert.deepEqual([...chain.keys()].sort(), [create, join, pl, jr].map((e) => e.eventId).sort());
    assert.deepEqual(chain.get(pl.eventId), pl.pdu);
    assert.deepEqual([...(await store.authChain(roomId, [join.eventId])).keys()], [create.eventId]);
    assert.deepEqual([...(await store.authChain(roomId, [create.eventId])).keys()], []);
    // Several starts, duplicates and unknown IDs.
    const multi = await store.authChain(roomId, [pl.eventId, pl.eventId, "$missing"]);
    assert.deepEqual([...multi.keys()].sort(), [create.eventId, join.eventId].sort());
    // authChainIds: the same IDs, each once, from starts given as IDs or as PDUs in hand (a
    // snapshot's state); a start reachable from another start is in the chain.
    const cases = [
      { why: "one start by ID", starts: [knock.eventId], chain: [create, join, pl, jr] },
      { why: "the same start as a PDU in hand (only its auth_events are followed)", starts: [knock.pdu], chain: [create, join, pl, jr] },
      { why: "a state's events as PDUs: the ones others name are in the chain", starts: [join.pdu, pl.pdu, jr.pdu], chain: [create, join, pl] },
      { why: "IDs and PDUs mixed, duplicates and an unknown ID", starts: [pl.pdu, pl.eventId, "$missing", join.eventId], chain: [create, join] },
      { why: "the create event: nothing", starts: [create.pdu], chain: [] },
    ];
    for (const c of cases) {
      const ids = await store.authChainIds(roomId, c.starts);
      assert.equal(new Set(ids).size, ids.length, `${c.why}: each once`);
      assert.deepEqual([...ids].sort(), c.chain.map((e) => e.eventId).sort(), c.why);
    }
  });

  test("getEvents returns only the events that exist", async () => {
    const { roomId, create } = await newRoom();
    const found = await store.getEvents(roomId, [create.eventId, "$nope"]);
    assert.deepEqual([...found.keys()], [create.eventId]);
    assert.deepEqual(await store.getEvents(roomId, []), new Map());
  });

  test("aliases: set, list per room, resolve, remove", async () => {
    const { roomId } = await newRoom();
    await store.setAlias("#b:store.test", roomId);
    await store.setAlias("#a:store.test", roomId);
    assert.deepEqual(await store.aliasesOf(roomId), ["#a:store.test", "#b:store.test"]);
    assert.equal(await store.aliasTarget("#a:store.test"), roomId);
    await store.removeAlias("#a:store.test");
    assert.equal(await store.aliasTarget("#a:store.test"), null);
    assert.deepEqual(await store.aliasesOf(roomId), ["#b:store.test"]);
  });
});

describe("RoomStore.persistEvents (a run of events in one script)", () => {
  /** A second store on its own prefix: the same events written one by one there, as a run here. */
  async function twoStores() {
    const otherPrefix = `${prefix}-onebyone`;
    const other = new RoomStore(redis, new RedisKeys(otherPrefix));
    const roomId = `!run${++roomCounter}x${randomBytes(3).toString("hex")}:${SERVER}`;
    const create = ev(roomId, "m.room.create", { stateKey: "", content: { room_version: "11" }, depth: 1 });
    for (const s of [store, other]) {
      assert.equal(await s.persistEvent({ roomId, eventId: create.eventId, pdu: create.pdu, expectedStream: null, updatesState: true, createRoom: { version: "11", creator: CREATOR, createdTs: 1 } }), "persisted");
    }
    /** Keys of one room, without the store's prefix (both stores' rooms compare equal when written alike). */
    const roomKeys = async (p: string) => {
      const all = await dumpPrefix(redis, p, []);
      return Object.fromEntries(Object.entries(all).filter(([k]) => k.includes(roomId)).map(([k, v]) => [k.slice(p.length), v]));
    };
    return { roomId, create, other, otherPrefix, roomKeys };
  }

  test("a run leaves the room exactly as writing its events one by one does (why: one atomic write per run must not change what is stored)", async () => {
    const { roomId, create, other, otherPrefix, roomKeys } = await twoStores();
    const join = ev(roomId, "m.room.member", { stateKey: CREATOR, content: { membership: "join" }, prev: [create], auth: [create], depth: 2 });
    const m1 = ev(roomId, "m.room.message", { content: { body: "one" }, prev: [join], auth: [create, join], depth: 3 });
    const late = ev(roomId, "m.room.message", { content: { body: "soft-failed" }, prev: [join], auth: [create, join], depth: 3 });
    const m2 = ev(roomId, "m.room.message", { content: { body: "two" }, prev: [m1], auth: [create, join], depth: 4 });
    const redaction = ev(roomId, "m.room.redaction", { content: { redacts: m1.eventId }, prev: [m2], auth: [create, join], depth: 5 });
    const joinField = stateField("m.room.member", CREATOR);
    const inputs: Omit<PersistInput, "roomId" | "expectedStream" | "createRoom">[] = [
      {
        ...join,
        updatesState: false,
        state: { groups: [{ id: "2", parent: "1", delta: { [joinField]: join.eventId }, depth: 1 }], before: "1", after: "2", current: { group: "2", set: [[joinField, join.eventId]], del: [], members: [[CREATOR, "join"]], reset: false } },
      },
      { ...m1, updatesState: false, state: { groups: [], before: "2", after: "2", current: { group: "2", set: [], del: [], members: [], reset: false } } },
      { ...late, updatesState: false, status: "soft_failed", state: { groups: [], before: "2", after: "2" } },
      { ...m2, updatesState: false, state: { groups: [], before: "2", after: "2", current: { group: "2", set: [], del: [], members: [], reset: false } } },
      { ...redaction, updatesState: false, redaction: { target: m1.eventId, senderHasRedactLevel: true }, state: { groups: [], before: "2", after: "2", current: { group: "2", set: [], del: [], members: [], reset: false } } },
    ];
    let stream = 1;
    for (const input of inputs) assert.equal(await other.persistEvent({ roomId, expectedStream: stream++, ...input }), "persisted");
    assert.deepEqual(await store.persistEvents(roomId, inputs, { expectedStream: 1 }), ["persisted", "persisted", "persisted", "persisted", "persisted"]);
    assert.deepEqual(await roomKeys(prefix), await roomKeys(otherPrefix));
    assert.deepEqual(await store.getExtremities(roomId), [redaction.eventId]);
    assert.equal((await store.getRoom(roomId))?.stream, 6);
    await deletePrefix(redis, otherPrefix);
  });

  test("a forked run with a repeated event, a merge and a soft-failed event leaves the room as one-by-one writes do (why: the script writes a run's keys once each, with the last value)", async () => {
    const { roomId, create, other, otherPrefix, roomKeys } = await twoStores();
    const join = ev(roomId, "m.room.member", { stateKey: CREATOR, content: { membership: "join" }, prev: [create], auth: [create], depth: 2 });
    const a = ev(roomId, "m.room.message", { content: { body: "a" }, prev: [join], auth: [create, join], depth: 3 });
    const b = ev(roomId, "m.room.message", { content: { body: "b" }, prev: [join], auth: [create, join], depth: 3 });
    const soft = ev(roomId, "m.room.message", { content: { body: "soft" }, prev: [a], auth: [create, join], depth: 4 });
    const merge = ev(roomId, "m.room.message", { content: { body: "merge" }, prev: [a, b], auth: [create, join], depth: 4 });
    const c = ev(roomId, "m.room.message", { content: { body: "c" }, prev: [b], auth: [create, join], depth: 4 });
    const joinField = stateField("m.room.member", CREATOR);
    const msg = (e: Ev, group: string, reset = false): Omit<PersistInput, "roomId" | "expectedStream" | "createRoom"> => ({
      ...e, updatesState: false, destinations: ["a.example", "b.example"],
      state: { groups: [{ id: String(Number(group) + 10), parent: group, delta: {}, depth: 2 }], before: group, after: group, current: { group: String(Number(group) + 10), set: [], del: [], members: [], reset } },
    });
    const first: Omit<PersistInput, "roomId" | "expectedStream" | "createRoom"> = {
      ...join, updatesState: false,
      state: { groups: [{ id: "2", parent: "1", delta: { [joinField]: join.eventId }, depth: 1 }], before: "1", after: "2", current: { group: "2", set: [[joinField, join.eventId]], del: [], members: [[CREATOR, "join"]], reset: false } },
    };
    const inputs = [first, msg(a, "2"), msg(b, "2", true), { ...soft, updatesState: false, status: "soft_failed" as const, state: { groups: [], before: "2", after: "2" } }, msg(merge, "2"), msg(c, "2")];
    let stream = 1;
    for (const input of inputs) assert.equal(await other.persistEvent({ roomId, expectedStream: stream++, ...input }), "persisted");
    const withRepeat = [...inputs.slice(0, 3), inputs[1]!, ...inputs.slice(3)];
    assert.deepEqual(await store.persistEvents(roomId, withRepeat, { expectedStream: 1 }), ["persisted", "persisted", "persisted", "duplicate", "persisted", "persisted", "persisted"]);
    const [here, there] = [await roomKeys(prefix), await roomKeys(otherPrefix)];
    // Outbox entry IDs are times: compare the entries' fields, in order.
    const outboxKey = Object.keys(here).find((k) => k.includes("outbox"));
    for (const d of [here, there]) if (outboxKey) d[outboxKey] = JSON.stringify(d[outboxKey]).replace(/\d+-\d+/g, "ID");
    assert.deepEqual(here, there);
    assert.deepEqual((await store.getExtremities(roomId)).sort(), [merge.eventId, c.eventId].sort());
    assert.equal((await store.getRoom(roomId))?.stream, 7);
    await deletePrefix(redis, otherPrefix);
  });

  test("a stale stream position writes nothing of the run; stored events in it are duplicates (why: a refused run is never half-written)", async () => {
    const { roomId, create } = await twoStores();
    const m1 = ev(roomId, "m.room.message", { content: { body: "one" }, prev: [create], auth: [create], depth: 2 });
    const m2 = ev(roomId, "m.room.message", { content: { body: "two" }, prev: [m1], auth: [create], depth: 3 });
    const run = [m1, m2].map((e) => ({ ...e, updatesState: false, destinations: ["a.example"] }));
    const before = await dump();
    assert.equal(await store.persistEvents(roomId, run, { expectedStream: 0 }), "conflict");
    assert.deepEqual(await dump(), before);
    assert.deepEqual(await store.persistEvents(roomId, [run[0]!], { expectedStream: 1 }), ["persisted"]);
    // m1 is stored now: the run at the old position is a conflict (m2 is new), nothing written.
    const afterM1 = await dump();
    assert.equal(await store.persistEvents(roomId, run, { expectedStream: 1 }), "conflict");
    assert.deepEqual(await dump(), afterM1);
    // At the current position: m1 a duplicate (nothing of it written again), m2 persisted.
    assert.deepEqual(await store.persistEvents(roomId, run, { expectedStream: 2 }), ["duplicate", "persisted"]);
    assert.deepEqual(await store.timeline(roomId), [
      { eventId: create.eventId, stream: 1 },
      { eventId: m1.eventId, stream: 2 },
      { eventId: m2.eventId, stream: 3 },
    ]);
    assert.deepEqual(await redis.lrange(keys.outboundPdus("a.example"), -2, -1), [`${roomId} ${m1.eventId}`, `${roomId} ${m2.eventId}`]);
  });
});

describe("state cache across replicas: the room's state-event record (issue #16, two gateways)", () => {
  type Read = { path: string; delta?: { local: number; remote: number; skipped: number } };
  /** Another replica: its own RoomStore (state and event caches) on the same Redis and prefix. */
  function replica() {
    const reads: Read[] = [];
    const s = new RoomStore(redis, keys, { onStateRead: (path, delta) => reads.push({ path, ...(delta ? { delta } : {}) }) });
    return { s, reads, last: () => reads[reads.length - 1] };
  }
  /** The replica's snapshot, checked against the current state in Redis. */
  async function followed(r: ReturnType<typeof replica>, roomId: string): Promise<Read> {
    const snap = await r.s.currentSnapshot(roomId);
    assert.deepEqual(Object.fromEntries(snap.current.stateIds), await redis.hgetall(keys.state(roomId)), "the replica's state is the room's");
    return r.last()!;
  }
  /** As a Gatehouse before the record left the room: no record, no coverage fields. */
  async function forgetRecord(roomId: string) {
    await redis.del(keys.stateEvents(roomId));
    await redis.hdel(keys.room(roomId), "state_events_from", "state_events_to");
  }
  let depth = 10;
  function chain(roomId: string, prev: Ev) {
    let last = prev;
    return {
      msg: (body: string) => (last = ev(roomId, "m.room.message", { content: { body }, prev: [last], depth: ++depth })),
      topic: (topic: string) => (last = ev(roomId, "m.room.topic", { stateKey: "", content: { topic }, prev: [last], depth: ++depth })),
    };
  }

  test("a replica reads only the state events another wrote, not its messages (why: each gateway read every event of the other whole, doubling Redis bytes out)", async () => {
    const { roomId, create } = await newRoom();
    const b = replica();
    assert.equal((await followed(b, roomId)).path, "full");
    const c = chain(roomId, create);
    const run = [c.msg("1"), c.msg("2"), c.msg("3"), c.topic("t1"), c.msg("4"), c.msg("5")];
    const results = await store.persistEvents(roomId, run.map((e) => ({ eventId: e.eventId, pdu: e.pdu, updatesState: typeof e.pdu.state_key === "string" })), { expectedStream: 1 });
    assert.deepEqual(results, run.map(() => "persisted"));
    // The record, written in the same script: the create event and the topic by position, and it covers 1..7.
    assert.deepEqual(await redis.zrange(keys.stateEvents(roomId), 0, -1, "WITHSCORES"), [create.eventId, "1", run[3]!.eventId, "5"]);
    assert.deepEqual(await redis.hmget(keys.room(roomId), "state_events_from", "state_events_to", "stream"), ["1", "7", "7"]);
    assert.deepEqual(await followed(b, roomId), { path: "delta", delta: { local: 0, remote: 1, skipped: 5 } });
    assert.equal((await b.s.currentSnapshot(roomId)).current.stateIds.get(stateField("m.room.topic", "")), run[3]!.eventId);
  });

  test("a room written before the record: replicas read the uncovered events whole, then follow by the record from the next write (why: storage from the previous version must keep working)", async () => {
    const { roomId, create } = await newRoom();
    const early = replica();
    const b = replica();
    await followed(early, roomId);
    await followed(b, roomId);
    const c = chain(roomId, create);
    const t1 = c.topic("old");
    const m1 = c.msg("old");
    for (const e of [t1, m1]) assert.equal(await persist(roomId, e), "persisted");
    await forgetRecord(roomId);
    // Written by the previous version: nothing tells the replica which are state events.
    assert.deepEqual(await followed(b, roomId), { path: "delta", delta: { local: 0, remote: 2, skipped: 0 } });
    // The first write of this version starts the record at its own first position (4).
    const t2 = c.topic("new");
    const m2 = c.msg("new");
    for (const e of [t2, m2]) assert.equal(await persist(roomId, e), "persisted");
    assert.deepEqual(await redis.hmget(keys.room(roomId), "state_events_from", "state_events_to"), ["4", "5"]);
    assert.deepEqual(await followed(b, roomId), { path: "delta", delta: { local: 0, remote: 1, skipped: 1 } });
    // A replica still at position 1 (before the record starts) reads its whole delta, as before the record.
    assert.deepEqual(await followed(early, roomId), { path: "delta", delta: { local: 0, remote: 4, skipped: 0 } });
    assert.equal((await early.s.currentSnapshot(roomId)).current.stateIds.get(stateField("m.room.topic", "")), t2.eventId);
  });

  test("a write by the previous version after this one's (a rolling upgrade) is read whole, not skipped (why: its state events are not in the record)", async () => {
    const { roomId, create } = await newRoom();
    const b = replica();
    const c = chain(roomId, create);
    assert.equal(await persist(roomId, c.msg("new")), "persisted");
    await followed(b, roomId);
    // What the previous version's script leaves: the event written, `stream` moved, no record
    // entry, `state_events_to` where it was.
    const old = c.topic("by an old replica");
    assert.equal(await persist(roomId, old), "persisted");
    await redis.zrem(keys.stateEvents(roomId), old.eventId);
    await redis.hset(keys.room(roomId), "state_events_to", "2");
    assert.deepEqual(await followed(b, roomId), { path: "delta", delta: { local: 0, remote: 1, skipped: 0 } });
    assert.equal((await b.s.currentSnapshot(roomId)).current.stateIds.get(stateField("m.room.topic", "")), old.eventId);
    // The next write of this version restarts the record after the old one's position.
    const m = c.msg("new again");
    const t = c.topic("new again");
    for (const e of [m, t]) assert.equal(await persist(roomId, e), "persisted");
    assert.deepEqual(await redis.hmget(keys.room(roomId), "state_events_from", "state_events_to"), ["4", "5"]);
    assert.deepEqual(await followed(b, roomId), { path: "delta", delta: { local: 0, remote: 1, skipped: 1 } });
  });

  test("the record keeps the last STATE_RECORD_WINDOW positions; a replica within the delta limit still follows by it (why: the record must not grow with the room, e.g. one entry per member forever)", async () => {
    const { roomId, create } = await newRoom();
    const c = chain(roomId, create);
    const first = c.topic("first");
    assert.equal(await persist(roomId, first), "persisted");
    const b = replica();
    await followed(b, roomId);
    // A run that takes the room past the window: the first entries leave the record.
    const run = Array.from({ length: STATE_RECORD_WINDOW }, (_, i) => (i === STATE_RECORD_WINDOW - 2 ? c.topic("late") : c.msg(String(i))));
    const results = await store.persistEvents(roomId, run.map((e) => ({ eventId: e.eventId, pdu: e.pdu, updatesState: typeof e.pdu.state_key === "string" })), { expectedStream: 2 });
    assert.ok(Array.isArray(results) && results.every((r) => r === "persisted"));
    const stream = 2 + STATE_RECORD_WINDOW;
    assert.deepEqual(await redis.hmget(keys.room(roomId), "state_events_from", "state_events_to", "stream"), [String(stream - STATE_RECORD_WINDOW + 1), String(stream), String(stream)]);
    assert.deepEqual(await redis.zrange(keys.stateEvents(roomId), 0, -1, "WITHSCORES"), [run[STATE_RECORD_WINDOW - 2]!.eventId, String(stream - 1)], "the create event and the first topic are trimmed");
    // B is further behind than the delta limit: a full read. Then within it: by the record.
    assert.equal((await followed(b, roomId)).path, "full");
    const t = c.topic("after");
    const m = c.msg("after");
    for (const e of [t, m]) assert.equal(await persist(roomId, e), "persisted");
    assert.deepEqual(await followed(b, roomId), { path: "delta", delta: { local: 0, remote: 1, skipped: 1 } });
  });

  test("a rejected state event is recorded but changes no state (why: the record only says which events a delta must look at; the status still decides)", async () => {
    const { roomId, create } = await newRoom();
    const b = replica();
    await followed(b, roomId);
    const c = chain(roomId, create);
    const rejected = c.topic("rejected");
    assert.equal(await persist(roomId, rejected, { status: "rejected", updatesState: false }), "persisted");
    const m = c.msg("after");
    assert.equal(await persist(roomId, m), "persisted");
    assert.equal(await redis.zscore(keys.stateEvents(roomId), rejected.eventId), "2");
    assert.deepEqual(await followed(b, roomId), { path: "delta", delta: { local: 0, remote: 0, skipped: 1 } });
    assert.equal((await b.s.currentSnapshot(roomId)).current.stateIds.get(stateField("m.room.topic", "")), undefined);
  });
});
