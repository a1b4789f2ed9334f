// Crash safety of the sender: a worker process killed with SIGKILL while its transaction is in
// flight, and a Redis (append-only file) killed and restarted while a transaction waits for a
// retry. In both cases every PDU is delivered, each under exactly one txnId, and the interrupted
// transaction is re-sent with its txnId and body unchanged.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Redis } from "ioredis";
import { SinkPeer } from "../support/sink-peer.js";
import { GH_SERVER_NAME, connect, deleteKeys, gatehouseKey, makeSender, numbersOf, assertExactlyOncePerTxn, persistPdus, range, uniquePrefix } from "../support/sender-fixture.js";
import { startRedis } from "../../src/embedded-redis.js";
import { RedisKeys } from "../../src/store/redis-keys.js";

const seedHex = randomBytes(32).toString("hex");
const key = gatehouseKey(seedHex);
const identity = { serverName: GH_SERVER_NAME, keyId: key.keyId, publicKey: key.publicKey };
const root = fileURLToPath(new URL("../..", import.meta.url));
const children: ChildProcess[] = [];
const cleanups: (() => Promise<void>)[] = [];

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  for (const c of cleanups) await c().catch(() => undefined);
});

function startWorker(prefix: string, env: Record<string, string> = {}): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", "test/support/sender-worker.ts"], {
    cwd: root,
    env: { ...process.env, GH_PREFIX: prefix, GH_SEED_HEX: seedHex, GH_LOCK_MS: "1000", ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("worker not ready after 20 s")), 20_000);
    let out = "";
    child.stdout!.on("data", (d) => {
      if (process.env.GATEHOUSE_TEST_LOG_LEVEL) process.stderr.write(d);
      out += d;
      if (out.includes("ready")) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.once("exit", (code) => reject(new Error(`worker exited (${code}) before it was ready`)));
  });
}

function killed(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGKILL");
  });
}


test("a worker killed (SIGKILL) mid-transaction: another worker re-sends the same txnId, nothing lost or doubled", { timeout: 30_000 }, async (t) => {
  const prefix = uniquePrefix("crash");
  const redis = connect();
  const sink = await SinkPeer.start(identity);
  // Producer side only (no workers), as in a serve process with GATEHOUSE_RUN_WORKERS=false.
  const producer = makeSender({ prefix, key });
  cleanups.push(async () => {
    await producer.close();
    await sink.close();
    await deleteKeys(redis, prefix);
    await redis.quit();
  });
  const roomId = `!crash:${GH_SERVER_NAME}`;
  const keys = new RedisKeys(prefix);

  sink.script = [{ hang: true }]; // processed on receipt, never answered
  await persistPdus(producer.store, roomId, [sink.serverName], 120);
  producer.sender.wake([sink.serverName]);
  const first = await startWorker(prefix);
  await sink.waitFor(() => sink.attempts.length === 1, 10_000, "the first transaction");
  const stored = await redis.hget(keys.outboundTxn(sink.serverName), "txn_id");
  assert.equal(stored, sink.attempts[0]!.txnId, "the transaction was stored before it was sent");
  await killed(first);

  // Events keep arriving while no worker runs; the dead worker's job still looks active.
  await persistPdus(producer.store, roomId, [sink.serverName], 30, 120);
  producer.sender.wake([sink.serverName]);
  assert.equal(await redis.llen(keys.outboundPdus(sink.serverName)), 150);

  const t0 = Date.now();
  await startWorker(prefix);
  await sink.waitFor(() => sink.delivered.length === 150 && sink.attempts.filter((a) => a.answered === 200).length === 3, 15_000, "all 150 PDUs");
  const takeoverMs = sink.attempts[1]!.receivedAt - t0;
  assert.equal(sink.attempts[1]!.txnId, sink.attempts[0]!.txnId, "the interrupted transaction keeps its txnId");
  assert.equal(sink.attempts[1]!.rawBody, sink.attempts[0]!.rawBody, "and its body");
  assert.deepEqual(numbersOf(sink.delivered), range(0, 150), "each PDU processed once, in order");
  assertExactlyOncePerTxn(sink.attempts);
  assert.equal(sink.maxConcurrent, 1, "never two transactions in flight to the destination");
  assert.equal(sink.badSignatures, 0);
  for (let i = 0; i < 50 && (await redis.llen(keys.outboundPdus(sink.serverName))) > 0; i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(await redis.llen(keys.outboundPdus(sink.serverName)), 0);
  assert.equal(await redis.exists(keys.outboundTxn(sink.serverName)), 0);
  t.diagnostic(`takeover after SIGKILL: ${takeoverMs} ms after the second worker started (lock 1000 ms)`);
});

/**
 * A worker holding a transaction unanswered (the sink hangs), with locks far longer than the
 * test: whatever takes the destination over does so through the mechanism under test, not
 * through lock expiry. Returns the sink, the first worker and a cleanup-registered prefix.
 */
async function hangingTransaction(name: string, env: Record<string, string>) {
  const prefix = uniquePrefix(name);
  const redis = connect();
  const sink = await SinkPeer.start(identity);
  const producer = makeSender({ prefix, key });
  cleanups.push(async () => {
    await producer.close();
    await sink.close();
    await deleteKeys(redis, prefix);
    await redis.quit();
  });
  sink.script = [{ hang: true }];
  await persistPdus(producer.store, `!${name}:${GH_SERVER_NAME}`, [sink.serverName], 80);
  producer.sender.wake([sink.serverName]);
  // Requests time out after 30 s: the hanging transaction stays in flight for the whole test.
  const first = await startWorker(prefix, { GH_LOCK_MS: "60000", GH_TIMEOUT_MS: "30000", ...env });
  await sink.waitFor(() => sink.attempts.length === 1, 10_000, "the first transaction");
  return { prefix, sink, first, redis, keys: new RedisKeys(prefix) };
}

async function assertResentAndDelivered(sink: SinkPeer, count: number) {
  await sink.waitFor(() => sink.delivered.length === count, 10_000, `all ${count} PDUs, long before the 60 s lock expires`);
  assert.equal(sink.attempts[1]!.txnId, sink.attempts[0]!.txnId, "the interrupted transaction keeps its txnId");
  assert.equal(sink.attempts[1]!.rawBody, sink.attempts[0]!.rawBody, "and its body");
  assert.deepEqual(numbersOf(sink.delivered), range(0, count), "each PDU processed once, in order");
  assertExactlyOncePerTxn(sink.attempts);
  assert.equal(sink.maxConcurrent, 1, "never two transactions in flight to the destination");
}

test("kill -9, restart with the same instance ID: the new process takes its dead incarnation's job back at once", { timeout: 30_000 }, async (t) => {
  const { prefix, sink, first } = await hangingTransaction("identity", { GH_INSTANCE_ID: "pod-0" });
  await killed(first);
  const t0 = Date.now();
  await startWorker(prefix, { GH_LOCK_MS: "60000", GH_INSTANCE_ID: "pod-0" });
  await assertResentAndDelivered(sink, 80);
  t.diagnostic(`re-sent ${sink.attempts[1]!.receivedAt - t0} ms after the restart was started (lock 60 s)`);
});

test("SIGTERM releases the locks: a worker of another instance resumes the destination at once", { timeout: 30_000 }, async (t) => {
  const { prefix, sink, first } = await hangingTransaction("sigterm", { GH_INSTANCE_ID: "pod-0", GH_SHUTDOWN_MS: "200" });
  const exited = new Promise((r) => first.once("exit", r));
  first.kill("SIGTERM");
  await exited;
  const t0 = Date.now();
  await startWorker(prefix, { GH_LOCK_MS: "60000", GH_INSTANCE_ID: "pod-1" });
  await assertResentAndDelivered(sink, 80);
  t.diagnostic(`re-sent ${sink.attempts[1]!.receivedAt - t0} ms after the other worker was started (lock 60 s)`);
});

test("a live process started with the same instance ID does not take over the other's job", { timeout: 30_000 }, async () => {
  const { prefix, sink, first, redis, keys } = await hangingTransaction("twin", { GH_INSTANCE_ID: "pod-0" });
  await startWorker(prefix, { GH_LOCK_MS: "60000", GH_INSTANCE_ID: "pod-0" });
  // The twin's start-up (claim, sweep) is over when it printed "ready"; give its workers a moment.
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(sink.attempts.length, 1, "the transaction is still only in flight once");
  assert.equal(sink.maxConcurrent, 1);
  assert.equal(await redis.llen(keys.outboundPdus(sink.serverName)), 80);
  // When the first one dies, the twin's claim named the twin itself: its job is taken over by
  // lock expiry (60 s here), not at once; not waited for.
  await killed(first);
});

test("Redis killed and restarted with its append-only file: queued PDUs and the stored transaction survive", { timeout: 30_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "gatehouse-aof-"));
  let redisServer = await startRedis({ dir, persistent: true });
  const port = redisServer.port;
  const prefix = uniquePrefix("aof");
  const sink = await SinkPeer.start(identity);
  const s = makeSender({ prefix, key, redisUrl: redisServer.url, settings: { backoffInitialMs: 300, backoffMaxMs: 1000 } });
  cleanups.push(async () => {
    await s.close();
    await sink.close();
    await redisServer.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const keys = new RedisKeys(prefix);
  sink.defaultAnswer = { status: 503 };
  await persistPdus(s.store, `!aof:${GH_SERVER_NAME}`, [sink.serverName], 60);
  await s.sender.startWorkers();
  await sink.waitFor(() => sink.attempts.length >= 1, 5000, "a failing attempt");
  const txnId = sink.attempts[0]!.txnId;
  await new Promise((r) => setTimeout(r, 1200)); // appendfsync everysec

  redisServer.child.kill("SIGKILL");
  await new Promise((r) => redisServer.child.once("exit", r));
  const attemptsWhileDown = sink.attempts.length;
  sink.defaultAnswer = { status: 200 };
  redisServer = await startRedis({ dir, persistent: true, port });
  const check = new Redis(redisServer.url);
  assert.equal(await check.hget(keys.outboundTxn(sink.serverName), "txn_id"), txnId, "stored transaction survived");
  assert.equal(await check.llen(keys.outboundPdus(sink.serverName)), 60, "queue survived");
  await check.quit();

  await sink.waitFor(() => sink.delivered.length === 60, 15_000, "60 PDUs after the restart");
  assert.ok(sink.attempts.length > attemptsWhileDown);
  const firstOk = sink.attempts.find((a) => a.answered === 200)!;
  assert.equal(firstOk.txnId, txnId, "re-sent with the same txnId");
  assert.deepEqual(numbersOf(sink.delivered), range(0, 60));
  assertExactlyOncePerTxn(sink.attempts);
});
