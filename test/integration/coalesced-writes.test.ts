// The room store's Redis connection pipelines by coalescing writes (src/store/coalesced-writes.ts):
// the commands issued in one event-loop turn reach the socket in one write, each is answered in
// order as without pipelining, a later turn's commands are not held back, and a reconnection's
// new socket is coalesced too. Against the real Redis at REDIS_URL; the socket's writes are
// counted at Node's stream layer (_write / _writev: one call is one syscall's worth).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import { connectRedis, parseClusterUrl } from "../../src/server.js";
import { deletePrefix, requireRedisUrl } from "../support/gatehouse.js";

const url = requireRedisUrl();
const onCluster = parseClusterUrl(url) !== null;
const prefix = `ghtest:coalesce:${randomBytes(4).toString("hex")}`;
const opened: Redis[] = [];
after(async () => {
  if (opened[0]) await deletePrefix(opened[0], prefix);
  for (const r of opened) r.disconnect();
});

/** Counts the socket's writes to the kernel (Node calls _write for one chunk, _writev for several). */
function countWrites(redis: Redis): { writes: () => number } {
  const socket = (redis as unknown as { stream: { _write: (...a: unknown[]) => unknown; _writev?: (...a: unknown[]) => unknown } }).stream;
  let n = 0;
  const w = socket._write;
  socket._write = function (this: unknown, ...a: unknown[]) {
    n++;
    return w.apply(this, a);
  };
  const wv = socket._writev;
  if (wv)
    socket._writev = function (this: unknown, ...a: unknown[]) {
      n++;
      return wv.apply(this, a);
    };
  return { writes: () => n };
}

async function ready(autoPipelining: boolean): Promise<Redis> {
  const r = connectRedis(url, { autoPipelining, redisOptions: { maxRetriesPerRequest: 2 } });
  opened.push(r);
  await r.ping();
  return r;
}

const cases: { why: string; autoPipelining: boolean; turns: number; perTurn: number; wantWrites: (turns: number, perTurn: number) => number }[] = [
  { why: "ten commands issued in one turn go out in one write", autoPipelining: true, turns: 1, perTurn: 10, wantWrites: () => 1 },
  { why: "each turn's commands go out at the end of that turn: a later turn is not held back", autoPipelining: true, turns: 3, perTurn: 4, wantWrites: (t) => t },
  { why: "one command per turn (a knock request's snapshot, then its persist script) is one write each", autoPipelining: true, turns: 5, perTurn: 1, wantWrites: (t) => t },
  { why: "without pipelining (BullMQ's connection) every command is its own write", autoPipelining: false, turns: 2, perTurn: 5, wantWrites: (t, p) => t * p },
];

for (const c of cases) {
  test(`coalesced Redis writes: ${c.why}`, async (t) => {
    if (onCluster) return t.skip("a Redis Cluster connection is not pipelined (connectRedis: ioredis#2109)");
    const redis = await ready(c.autoPipelining);
    const key = `${prefix}:${randomBytes(3).toString("hex")}`;
    const counter = countWrites(redis);
    let expect = 0;
    for (let turn = 0; turn < c.turns; turn++) {
      // Issued together, then awaited: the next turn starts after this turn's answers.
      const answers = await Promise.all(Array.from({ length: c.perTurn }, () => redis.incr(key)));
      assert.deepEqual(answers, Array.from({ length: c.perTurn }, (_, i) => expect + i + 1), "answered in order, as without pipelining");
      expect += c.perTurn;
    }
    assert.equal(counter.writes(), c.wantWrites(c.turns, c.perTurn));
  });
}

test("coalesced Redis writes: a reconnection's new socket is coalesced too", async (t) => {
  if (onCluster) return t.skip("a Redis Cluster connection is not pipelined (connectRedis: ioredis#2109)");
  const redis = await ready(true);
  const before = (redis as unknown as { stream: object }).stream;
  const reconnected = new Promise((resolve) => redis.once("ready", resolve));
  redis.disconnect(true);
  await reconnected;
  assert.notEqual((redis as unknown as { stream: object }).stream, before, "a new socket");
  const counter = countWrites(redis);
  const key = `${prefix}:re`;
  assert.deepEqual(await Promise.all([redis.incr(key), redis.incr(key), redis.incr(key)]), [1, 2, 3]);
  assert.equal(counter.writes(), 1);
});
