// The fan-out stage (src/store/fanout.ts) against the real Redis at REDIS_URL — a single Redis or,
// in the cluster pass of `npm test`, a Redis Cluster, where the room's outbox and each destination's
// queue are in different slots. The outbox entries are written here as the persist script writes
// them (XADD e/d in the room's slot), so that a crash between the two steps can be staged.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import { Fanout, FANOUT_SEEN_KEEP } from "../../src/store/fanout.js";
import { RedisKeys } from "../../src/store/redis-keys.js";
import { connectRedis } from "../../src/server.js";
import { deletePrefix, requireRedisUrl } from "../support/gatehouse.js";

let redis: Redis;
let keys: RedisKeys;
let prefix: string;
let n = 0;

before(() => {
  redis = connectRedis(requireRedisUrl(), { redisOptions: { maxRetriesPerRequest: 2 } });
  prefix = `ghtest:fanout:${randomBytes(4).toString("hex")}`;
  keys = new RedisKeys(prefix);
});
after(async () => {
  await deletePrefix(redis, prefix);
  redis.disconnect();
});

const room = () => `!r${++n}-${randomBytes(3).toString("hex")}:fanout.test`;
const outbox = (roomId: string, eventId: string, dests: string[], id = "*") => redis.xadd(keys.outbox(roomId), id, "e", eventId, "d", dests.join(" "));
const queue = (d: string) => redis.lrange(keys.outboundPdus(d), 0, -1);

test("each outbox entry reaches every one of its destinations once, in outbox order; the outbox is emptied", async () => {
  const r = room();
  for (let i = 0; i < 5; i++) await outbox(r, `$e${i}`, i % 2 ? ["a.example", "b.example"] : ["a.example"]);
  const f = new Fanout(redis, keys);
  assert.deepEqual([...(await f.drain(r))].sort(), ["a.example", "b.example"]);
  assert.deepEqual(await queue("a.example"), [0, 1, 2, 3, 4].map((i) => `${r} $e${i}`));
  assert.deepEqual(await queue("b.example"), [`${r} $e1`, `${r} $e3`]);
  assert.equal(await redis.xlen(keys.outbox(r)), 0);
  assert.ok(await redis.sismember(keys.destinations(), "b.example"));
  assert.match((await redis.hget(keys.fanoutCursors("a.example"), r))!, /^\d+-\d+$/);
  await Promise.all([redis.del(keys.outboundPdus("a.example")), redis.del(keys.outboundPdus("b.example"))]);
});

test("a crash between queueing and the outbox delete: the re-run queues nothing twice", async () => {
  const r = room();
  const ids = [await outbox(r, "$x1", ["c.example", "d.example"]), await outbox(r, "$x2", ["c.example", "d.example"])];
  // Step 1 ran for c.example only, then the process died (the entries are still in the outbox).
  const f = new Fanout(redis, keys) as unknown as { redis: Redis & { gatehouseFanoutQueue(...a: string[] | [number, ...string[]]): Promise<number> } };
  assert.equal(await f.redis.gatehouseFanoutQueue(3, keys.outboundPdus("c.example"), keys.fanoutCursors("c.example"), keys.fanoutSeen("c.example"), r, String(Date.now()), String(FANOUT_SEEN_KEEP), ids[0]!, "$x1", ids[1]!, "$x2"), 2);
  await new Fanout(redis, keys).drain(r);
  assert.deepEqual(await queue("c.example"), [`${r} $x1`, `${r} $x2`], "c.example: once each");
  assert.deepEqual(await queue("d.example"), [`${r} $x1`, `${r} $x2`], "d.example: not lost");
  assert.equal(await redis.xlen(keys.outbox(r)), 0);
});

test("table: what the dedupe and the cursor decide", async () => {
  const cases = [
    { why: "the same event under a new outbox entry (the room's primary lost the first in a failover, the event was persisted again): not queued twice", second: (r: string) => outbox(r, "$y1", ["e.example"]), want: (r: string) => [`${r} $y1`] },
    { why: "a new event whose outbox ID is at or before the cursor (the room's slot rolled back in a failover): queued, not lost", rollback: true, second: (r: string) => outbox(r, "$y2", ["e.example"], "1-1"), want: (r: string) => [`${r} $y1`, `${r} $y2`] },
    { why: "the same event under two outbox entries read in one batch (one script call, one ZMSCORE for both): queued once", second: async (r: string) => { await outbox(r, "$y4", ["e.example"]); await outbox(r, "$y4", ["e.example"]); return ""; }, want: (r: string) => [`${r} $y1`, `${r} $y4`] },
    { why: "several new events in one call keep their outbox order in the queue, after the ones queued before", second: async (r: string) => { for (const e of ["$y5", "$y6", "$y7"]) await outbox(r, e, ["e.example"]); return ""; }, want: (r: string) => [`${r} $y1`, `${r} $y5`, `${r} $y6`, `${r} $y7`] },
    { why: "concurrent drains of one room in two processes: once each", second: async (r: string) => { await outbox(r, "$y3", ["e.example"]); await Promise.all([new Fanout(redis, keys).drain(r), new Fanout(redis, keys).drain(r)]); return ""; }, want: (r: string) => [`${r} $y1`, `${r} $y3`] },
  ];
  for (const c of cases) {
    const r = room();
    await redis.del(keys.outboundPdus("e.example"));
    await outbox(r, "$y1", ["e.example"]);
    await new Fanout(redis, keys).drain(r);
    // The rolled-back stream: a fresh outbox whose IDs start over.
    if ("rollback" in c) await redis.del(keys.outbox(r));
    await c.second(r);
    await new Fanout(redis, keys).drain(r);
    assert.deepEqual(await queue("e.example"), c.want(r), c.why);
  }
});

test("the sender's sweep drains a remote room's outbox (an appservice invite left by a crash) and unlists it once empty", async () => {
  const { RoomStore } = await import("../../src/store/room-store.js");
  const store = new RoomStore(redis, keys);
  const r = room();
  // appservice/push.ts lists the room, then writes the event and its outbox entry; the process died before the fan-out.
  await redis.sadd(keys.remoteOutboxRooms(), r);
  await outbox(r, "$inv", ["as:bridge"]);
  assert.deepEqual(await store.drainOutboxes(), ["as:bridge"]);
  assert.deepEqual(await queue("as:bridge"), [`${r} $inv`]);
  assert.equal(await redis.xlen(keys.outbox(r)), 0);
  assert.equal(await redis.sismember(keys.remoteOutboxRooms(), r), 0, "unlisted once drained");
  assert.deepEqual(await store.drainOutboxes(), [], "nothing queued twice");
  assert.deepEqual(await queue("as:bridge"), [`${r} $inv`]);
});
