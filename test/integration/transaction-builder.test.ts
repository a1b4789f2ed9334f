// The sender's TransactionBuilder over a real RoomStore and Redis (REDIS_URL; in the cluster pass
// of `npm test` a Redis Cluster, where two rooms' events are in different slots): which reads a
// transaction's PDUs cost, and what the body holds.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import { connectRedis } from "../../src/server.js";
import { RoomStore } from "../../src/store/room-store.js";
import { RedisKeys } from "../../src/store/redis-keys.js";
import { TransactionBuilder } from "../../src/sender/transaction-builder.js";
import { FederationTransport } from "../../src/sender/transport.js";
import { canonicalJson } from "../../src/protocol/canonical-json.js";
import { createLogger } from "../../src/logger.js";
import { deletePrefix, requireRedisUrl } from "../support/gatehouse.js";

let redis: Redis;
let keys: RedisKeys;
let store: RoomStore;
let prefix: string;

before(() => {
  redis = connectRedis(requireRedisUrl(), { redisOptions: { maxRetriesPerRequest: 2 } });
  prefix = `ghtest:txnbuilder:${randomBytes(4).toString("hex")}`;
  keys = new RedisKeys(prefix);
  store = new RoomStore(redis, keys);
});
after(async () => {
  await deletePrefix(redis, prefix);
  redis.disconnect();
});

const transport = new FederationTransport({ request: () => Promise.reject(new Error("not used")) }, "builder.test", () => true);

/** Stores events as the persist script does (the event key holds its JSON); returns their refs. */
async function stored(roomId: string, n: number): Promise<{ ref: string; json: string }[]> {
  const out: { ref: string; json: string }[] = [];
  for (let i = 0; i < n; i++) {
    const eventId = `$e${i}-${randomBytes(3).toString("hex")}`;
    // Keys out of canonical order: the body must carry the canonical form.
    const json = JSON.stringify({ type: "m.room.message", room_id: roomId, content: { msgtype: "m.text", body: `m${i}` }, depth: i + 1 });
    await redis.set(keys.event(roomId, eventId), json);
    out.push({ ref: `${roomId} ${eventId}`, json });
  }
  return out;
}

/** The builder with its store reads recorded (room, how many events); `withCache`: it also sees the store's event cache. */
function builder(withCache = false) {
  const reads: [string, number][] = [];
  const b = new TransactionBuilder({
    store: {
      getEventJsons: (roomId, ids) => {
        reads.push([roomId, ids.length]);
        return store.getEventJsons(roomId, ids);
      },
      ...(withCache ? { cachedEvent: (roomId: string, eventId: string) => store.cachedEvent(roomId, eventId) } : {}),
    },
    logger: createLogger("silent"),
  });
  return { b, reads };
}

test("PDUs in the store's event cache are encoded from it, the others read (why: an inbound run this process had just written was read back and parsed for its outbound transactions)", async () => {
  const room = `!m${randomBytes(3).toString("hex")}:builder.test`;
  const events = await stored(room, 4);
  const eventId = (ref: string) => ref.slice(ref.indexOf(" ") + 1);
  // Three of the four in the event cache (as after this process wrote them), one only in Redis.
  await store.getEvents(room, events.slice(0, 3).map((e) => eventId(e.ref)));
  assert.ok(store.cachedEvent(room, eventId(events[0]!.ref)) && !store.cachedEvent(room, eventId(events[3]!.ref)));
  const { b, reads } = builder(true);
  const encoded = await b.encodedEvents("dest.test", transport, events.map((e) => e.ref));
  assert.deepEqual(reads, [[room, 1]], "only the uncached event is read");
  // Byte for byte what the read path gives (the stored JSON has its keys out of canonical order).
  assert.deepEqual(encoded.map((x) => x!.toString("utf8")), events.map((e) => canonicalJson(JSON.parse(e.json))));
  const { b: readOnly } = builder(false);
  const viaReads = await readOnly.encodedEvents("dest.test", transport, events.map((e) => e.ref));
  assert.deepEqual(encoded.map((x) => x!.toString("utf8")), viaReads.map((x) => x!.toString("utf8")));
});

test("a transaction's PDUs are read with one MGET per room, then served from the cache (why: one GET per PDU was a Redis command per PDU)", async () => {
  const roomA = `!a${randomBytes(3).toString("hex")}:builder.test`;
  const roomB = `!b${randomBytes(3).toString("hex")}:builder.test`;
  const a = await stored(roomA, 3);
  const bEvents = await stored(roomB, 2);
  const missing = `${roomA} $not-stored`;
  const refs = [a[0]!.ref, bEvents[0]!.ref, a[1]!.ref, missing, bEvents[1]!.ref, a[2]!.ref];
  const { b, reads } = builder();
  const encoded = await b.encodedEvents("dest.test", transport, refs);
  assert.deepEqual(reads.sort(), [[roomA, 4], [roomB, 2]].sort());
  const want = [a[0], bEvents[0], a[1], null, bEvents[1], a[2]].map((e) => (e ? canonicalJson(JSON.parse(e.json)) : null));
  assert.deepEqual(encoded.map((x) => (x ? x.toString("utf8") : null)), want);
  // Another destination's transaction of the same PDUs: nothing read again (the missing one is).
  const again = await b.encodedEvents("other.test", transport, refs);
  assert.deepEqual(again.map((x) => (x ? x.toString("utf8") : null)), want);
  assert.deepEqual(reads.slice(2), [[roomA, 1]]);
});

test("concurrent transactions of the same new PDUs share one read (why: a backlog drain asks every destination for the same events at once)", async () => {
  const room = `!c${randomBytes(3).toString("hex")}:builder.test`;
  const events = await stored(room, 4);
  const { b, reads } = builder();
  const refs = events.map((e) => e.ref);
  const [x, y] = await Promise.all([b.encodedEvents("d1.test", transport, refs), b.encodedEvents("d2.test", transport, refs.slice(1))]);
  assert.deepEqual(reads, [[room, 4]]);
  assert.deepEqual(y.map((p) => p!.toString()), x.slice(1).map((p) => p!.toString()));
});

test("a failed read fails the transaction being built, and the next build reads again (why: a Redis error must not leave a PDU out of a stored body)", async () => {
  const room = `!f${randomBytes(3).toString("hex")}:builder.test`;
  const [e] = await stored(room, 1);
  let fail = true;
  const reads: number[] = [];
  const b = new TransactionBuilder({
    store: {
      getEventJsons: (roomId, ids) => {
        reads.push(ids.length);
        return fail ? Promise.reject(new Error("connection lost")) : store.getEventJsons(roomId, ids);
      },
    },
    logger: createLogger("silent"),
  });
  await assert.rejects(b.build("d.test", transport, [e!.ref], [], 1), /connection lost/);
  fail = false;
  const body = await b.build("d.test", transport, [e!.ref], [], 1);
  assert.equal(body.toString(), `{"origin":"builder.test","origin_server_ts":1,"pdus":[${canonicalJson(JSON.parse(e!.json))}]}`);
  assert.deepEqual(reads, [1, 1]);
});
