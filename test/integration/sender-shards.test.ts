// The sender's BullMQ queues sharded by destination (src/sender/shards.ts), on a real Redis (and on
// the cluster pass): a deterministic destination → shard mapping, one job per destination in its
// shard, /queue and the metrics across shards, and a change of the shard count that drains the old
// layout — with a process of the old count still running — without losing a PDU or sending one
// under a second txnId.
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { Queue } from "bullmq";
import { SinkPeer } from "../support/sink-peer.js";
import { GH_SERVER_NAME, connect, deleteKeys, gatehouseKey, makeSender, numbersOf, assertExactlyOncePerTxn, persistPdus, range, uniquePrefix } from "../support/sender-fixture.js";
import { shardOf, shardQueueName, layoutQueueNames, LEGACY_QUEUE_NAME } from "../../src/sender/shards.js";
import { RedisKeys } from "../../src/store/redis-keys.js";
import { scanKeys } from "../support/redis-scan.js";

const key = gatehouseKey();
const identity = { serverName: GH_SERVER_NAME, keyId: key.keyId, publicKey: key.publicKey };
const redis = connect();
const prefixes: string[] = [];
const cleanups: (() => Promise<void>)[] = [];

after(async () => {
  for (const c of cleanups) await c().catch(() => undefined);
  for (const p of prefixes) await deleteKeys(redis, p);
  await redis.quit();
});

async function sinks(n: number): Promise<SinkPeer[]> {
  const list = await Promise.all(range(0, n).map(() => SinkPeer.start(identity)));
  cleanups.push(async () => void (await Promise.all(list.map((s) => s.close()))));
  return list;
}

function sender(prefix: string, shards: number) {
  const s = makeSender({ prefix, key, settings: { shards } });
  cleanups.push(() => s.close());
  return s;
}

describe("shardOf: the destination → shard mapping", () => {
  test("deterministic, in range, and spread", () => {
    const cases = [
      { why: "one shard: everything in shard 0", destination: "matrix.org", count: 1, want: 0 },
      { why: "fixed values: the mapping must never change between releases (queued jobs would sit in the wrong shard)", destination: "matrix.org", count: 8, want: 4 },
      { why: "ports are part of the name", destination: "example.org:8448", count: 1024, want: 793 },
    ];
    for (const c of cases) assert.equal(shardOf(c.destination, c.count), c.want, c.why);
    // A value computed by hand from the FNV-1a definition (offset 2166136261, prime 16777619) for "a".
    assert.equal(shardOf("a", 2 ** 31), 0xe40c292c % 2 ** 31, "FNV-1a('a') = 0xe40c292c");
    const counts = new Array<number>(8).fill(0);
    for (let i = 0; i < 8000; i++) counts[shardOf(`hs${i}.example.org`, 8)]!++;
    for (const n of counts) assert.ok(n > 800 && n < 1200, `about 1,000 destinations per shard, got ${counts.join(",")}`);
    assert.deepEqual(layoutQueueNames(3), [shardQueueName(0, 3), shardQueueName(1, 3), shardQueueName(2, 3)]);
    assert.deepEqual(layoutQueueNames("legacy"), [LEGACY_QUEUE_NAME]);
  });
});

describe("sender: destinations spread over shard queues", { timeout: 60_000 }, () => {
  test("each destination's job lives in its shard; /queue and the metrics cover every shard; every PDU once", async () => {
    const prefix = uniquePrefix("shards");
    prefixes.push(prefix);
    const peers = await sinks(6);
    const s = sender(prefix, 4);
    const roomId = `!shards${Date.now()}:${GH_SERVER_NAME}`;
    const names = peers.map((p) => p.serverName);
    // Every destination fails first (500): its job waits, delayed, in its shard.
    for (const p of peers) p.defaultAnswer = { status: 500 };
    await persistPdus(s.store, roomId, names, 30);
    await s.sender.startWorkers();
    await Promise.all(peers.map((p) => p.waitFor(() => p.attempts.length > 0, 10_000, "a first attempt")));
    for (const d of names) {
      const q = s.sender.queueOf(d);
      assert.equal(q.name, shardQueueName(shardOf(d, 4), 4), `${d}: its shard's queue`);
      const jobId = await q.getDeduplicationJobId(d);
      assert.ok(jobId, `${d}: one job, found in its shard`);
      for (const other of s.sender.queues.filter((x) => x !== q)) assert.equal(await other.getDeduplicationJobId(d), null, `${d}: no job in another shard`);
    }
    const metrics = await s.sender.view.metricsSnapshot();
    const jobs = Object.values(metrics.jobs).reduce((a, b) => a + b, 0);
    assert.equal(jobs, 6, "the job counts are summed over the shards: one per destination");
    const page = await s.sender.view.page({ from: 0, limit: 100, orderBy: "destination", dir: "f" });
    assert.deepEqual(page.destinations.map((d) => d.destination), [...names].sort(), "/queue lists every shard's destinations");
    for (const p of peers) p.defaultAnswer = { status: 200 };
    for (const d of names) await s.sender.retryNow(d);
    await Promise.all(peers.map((p) => p.waitFor(() => p.delivered.length === 30, 15_000, "30 PDUs")));
    for (const p of peers) {
      assert.deepEqual(numbersOf(p.delivered), range(0, 30), `${p.serverName}: every PDU once, in order`);
      assertExactlyOncePerTxn(p.attempts);
    }
    await s.close();
    // disconnect() ends a connection on its close event: give it a moment.
    for (let i = 0; i < 40 && s.sender.bull.openConnections > 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(s.sender.bull.openConnections, 0, "no connection BullMQ made from the sender's outlives it");
    const used = new Set(names.map((d) => shardOf(d, 4)));
    assert.ok(used.size > 1, "six destinations used more than one shard");
  });
});

describe("sender: changing the shard count drains the old layout", { timeout: 90_000 }, () => {
  test("a stored transaction queued under 4 shards is re-sent under 2 with the same txnId and body; old queues paused and empty", async () => {
    const prefix = uniquePrefix("reshard");
    prefixes.push(prefix);
    const peers = await sinks(4);
    const names = peers.map((p) => p.serverName);
    const roomId = `!reshard${Date.now()}:${GH_SERVER_NAME}`;
    const a = sender(prefix, 4);
    for (const p of peers) p.defaultAnswer = { status: 503 };
    await persistPdus(a.store, roomId, names, 20);
    await a.sender.startWorkers();
    await Promise.all(peers.map((p) => p.waitFor(() => p.attempts.length > 0, 10_000, "a first (failed) attempt")));
    const firstTxn = new Map(peers.map((p) => [p.serverName, p.attempts[0]!.txnId]));
    await a.close();

    for (const p of peers) p.defaultAnswer = { status: 200 };
    const b = sender(prefix, 2);
    await b.sender.startWorkers();
    await Promise.all(peers.map((p) => p.waitFor(() => p.delivered.length === 20, 15_000, "20 PDUs")));
    for (const p of peers) {
      assert.deepEqual(numbersOf(p.delivered), range(0, 20), `${p.serverName}: every PDU once`);
      assertExactlyOncePerTxn(p.attempts);
      assert.equal(p.attempts.find((x) => x.answered === 200)!.txnId, firstTxn.get(p.serverName), "the stored transaction was re-sent, not rebuilt");
    }
    const keys = new RedisKeys(prefix);
    assert.equal(await redis.get(keys.senderLayout()), "2", "the layout in use");
    for (const name of layoutQueueNames(4)) {
      const q = new Queue(name, { connection: redis, prefix: `${prefix}:bull` });
      assert.equal(await q.isPaused(), true, `${name} paused: an old process still running reads nothing from it`);
      const c = await q.getJobCounts("waiting", "delayed", "prioritized");
      assert.equal(Object.values(c).reduce((x, y) => x + y, 0), 0, `${name}: no wake-up left`);
      await q.close();
    }
  });

  test("an old-count process still running stops serving; the new one delivers every PDU exactly once; the legacy {send} queue is drained too", async () => {
    const prefix = uniquePrefix("reshard-live");
    prefixes.push(prefix);
    const peers = await sinks(4);
    const names = peers.map((p) => p.serverName);
    const roomId = `!reshardlive${Date.now()}:${GH_SERVER_NAME}`;
    // A pre-sharding deployment left a job in the one `{send}` queue.
    const legacy = new Queue(LEGACY_QUEUE_NAME, { connection: redis, prefix: `${prefix}:bull` });
    await legacy.add("destination", { destination: names[0] }, { deduplication: { id: names[0]! }, delay: 60_000 });
    const old = sender(prefix, 3);
    for (const p of peers) p.defaultAnswer = { delayMs: 150 };
    await old.sender.startWorkers();
    assert.equal(await legacy.isPaused(), true, "the legacy queue is paused when the first sharded process starts");
    assert.equal((await legacy.getJobCounts("delayed")).delayed, 0, "its wake-up removed");
    await legacy.close();
    // Traffic while the layout changes under the running old process.
    const writes = (async () => {
      for (let i = 0; i < 60; i += 10) {
        await persistPdus(old.store, roomId, names, 10, i);
        old.sender.wake(names);
        await new Promise((r) => setTimeout(r, 40));
      }
    })();
    await new Promise((r) => setTimeout(r, 100));
    const neu = sender(prefix, 5);
    await neu.sender.startWorkers();
    await writes;
    for (const q of old.sender.queues) assert.equal(await q.isPaused(), true, `${q.name}: the old layout is paused`);
    // What the old process wakes now sits in a paused queue; the new process's sweep picks it up.
    await neu.sender.recoverySweep();
    await Promise.all(peers.map((p) => p.waitFor(() => p.delivered.length >= 60, 20_000, "60 PDUs")));
    await new Promise((r) => setTimeout(r, 300));
    for (const p of peers) {
      assert.deepEqual(numbersOf(p.delivered), range(0, 60), `${p.serverName}: every PDU once, in order`);
      assertExactlyOncePerTxn(p.attempts);
      assert.equal(p.maxConcurrent, 1, `${p.serverName}: never two transactions in flight at once`);
    }
    assert.equal(await redis.get(new RedisKeys(prefix).senderLayout()), "5");
    assert.equal((await scanKeys(redis, `${prefix}:sender:shards:lock`)).length, 0, "the migration lock is released");
  });
});
