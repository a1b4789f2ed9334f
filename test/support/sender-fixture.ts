/** Shared set-up for the sender tests: Gatehouse's identity, a Sender on a real Redis, queued PDUs. */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { Redis } from "ioredis";
import { connectRedis } from "../../src/server.js";
import { scanKeys, unlinkKeys } from "./redis-scan.js";
import { RedisKeys } from "../../src/store/redis-keys.js";
import { RoomStore } from "../../src/store/room-store.js";
import { FederationClient } from "../../src/net/federation-client.js";
import { makeSigningKey, type SigningKey } from "../../src/protocol/signing-key.js";
import { createLogger } from "../../src/logger.js";
import { Sender, type SenderSettings } from "../../src/sender/sender.js";
import type { Pdu } from "../../src/protocol/pdu.js";
import assert from "node:assert/strict";
import { SinkPeer, type SinkAttempt } from "./sink-peer.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startRedisCluster, type EmbeddedRedisCluster } from "../../src/embedded-redis-cluster.js";
import type { Cleanups } from "./cleanups.js";

export const GH_SERVER_NAME = "gatehouse.test";

export function redisUrl(): string {
  const url = process.env.REDIS_URL;
  if (!url) throw new Error("REDIS_URL is not set (run the tests with `node scripts/test.mjs`)");
  return url;
}

export function connect(url: string = redisUrl()): Redis {
  return connectRedis(url);
}

export function uniquePrefix(name: string): string {
  return `test-${name}-${randomBytes(4).toString("hex")}`;
}

export function gatehouseKey(seedHex?: string): SigningKey {
  return makeSigningKey("ed25519:test", seedHex ? Buffer.from(seedHex, "hex") : randomBytes(32));
}

export const FAST_SETTINGS: Partial<SenderSettings> = {
  concurrency: 8,
  backoffInitialMs: 100,
  backoffMaxMs: 800,
  maxRejectedAttempts: 3,
  // Pure exponential backoff (the outage cap has its own tests).
  backoffOutagePercent: 0,
  lockDurationMs: 2000,
  sweepIntervalMs: 0,
};

export interface TestSender {
  sender: Sender;
  store: RoomStore;
  keys: RedisKeys;
  redis: Redis;
  client: FederationClient;
  close(): Promise<void>;
}

export function makeSender(opts: {
  prefix: string;
  key: SigningKey;
  settings?: Partial<SenderSettings>;
  logLevel?: string;
  timeoutMs?: number;
  redisUrl?: string;
  /** GATEHOUSE_INSTANCE_ID (none: no identity across restarts). */
  instanceId?: string;
  /** Where the log lines go (JSON lines), e.g. to read the sender's decisions. */
  logStream?: NodeJS.WritableStream;
  /** SenderDeps.onJobHandedBack. */
  onJobHandedBack?: () => void;
}): TestSender {
  const redis = connect(opts.redisUrl);
  const keys = new RedisKeys(opts.prefix);
  const store = new RoomStore(redis, keys);
  const client = new FederationClient({
    serverName: GH_SERVER_NAME,
    signingKey: opts.key,
    insecureSkipTlsVerify: true,
    allowPrivateAddresses: true,
    timeoutMs: opts.timeoutMs ?? 5000,
  });
  const sender = new Sender({
    redis,
    keys,
    store,
    client,
    serverName: GH_SERVER_NAME,
    logger: createLogger(opts.logLevel ?? process.env.GATEHOUSE_TEST_LOG_LEVEL ?? "silent", opts.logStream),
    settings: { ...FAST_SETTINGS, ...opts.settings },
    instanceId: opts.instanceId,
    hostname: hostname(),
    ...(opts.onJobHandedBack ? { onJobHandedBack: opts.onJobHandedBack } : {}),
  });
  return {
    sender,
    store,
    keys,
    redis,
    client,
    async close() {
      await sender.close(2000);
      client.close();
      // quit() waits for every node's answer; on a cluster that lost a node it may never settle,
      // and an unsettled Cluster client keeps reconnecting. disconnect() always ends it.
      await Promise.race([redis.quit().catch(() => undefined), new Promise((r) => setTimeout(r, 2_000).unref())]);
      redis.disconnect();
    },
  };
}

/**
 * Persists `count` synthetic message events (numbered from `from`, `content.n`) queued for
 * `destinations`, through the real persist script, in order. Does not wake the sender.
 */
export async function persistPdus(store: RoomStore, roomId: string, destinations: readonly string[], count: number, from = 0): Promise<void> {
  const writes: Promise<unknown>[] = [];
  for (let i = from; i < from + count; i++) {
    const pdu = {
      room_id: roomId,
      type: "m.room.message",
      sender: `@bot:${GH_SERVER_NAME}`,
      origin_server_ts: 1_700_000_000_000 + i,
      depth: i + 1,
      prev_events: [],
      auth_events: [],
      content: { msgtype: "m.text", body: `message ${i}`, n: i },
      hashes: { sha256: "x" },
    } as unknown as Pdu;
    // One connection and no awaits in between: the scripts run in this order.
    writes.push(store.persistEvent({ roomId, eventId: `$e${i}-${roomId.slice(1, 9)}`, pdu, expectedStream: null, updatesState: false, destinations }));
  }
  const results = await Promise.all(writes);
  if (results.some((r) => r !== "persisted")) throw new Error(`persistEvent: ${results.find((r) => r !== "persisted")}`);
}

export function numbersOf(pdus: readonly Record<string, unknown>[]): number[] {
  return pdus.map((p) => (p.content as { n: number }).n);
}

export const range = (from: number, count: number): number[] => Array.from({ length: count }, (_, i) => from + i);

export async function deleteKeys(redis: Redis, prefix: string): Promise<void> {
  await unlinkKeys(redis, await scanKeys(redis, `${prefix}:*`));
}

/** Each PDU appears in exactly one txnId; retries of a txnId carry the identical body. */
export function assertExactlyOncePerTxn(attempts: readonly SinkAttempt[]): void {
  const bodyOf = new Map<string, string>();
  const txnOfPdu = new Map<number, string>();
  for (const a of attempts) {
    const prev = bodyOf.get(a.txnId);
    if (prev !== undefined) assert.equal(a.rawBody, prev, `txn ${a.txnId} re-sent with a different body`);
    bodyOf.set(a.txnId, a.rawBody);
    for (const n of numbersOf(a.body.pdus)) {
      const t = txnOfPdu.get(n);
      assert.ok(t === undefined || t === a.txnId, `PDU ${n} sent under two txnIds (${t}, ${a.txnId})`);
      txnOfPdu.set(n, a.txnId);
    }
  }
}

/**
 * A Redis Cluster of its own (six redis-server processes in a temporary folder) and `sinkCount`
 * sink peers for Gatehouse's identity, both undone by `cleanups` (the fault tests on a cluster).
 */
export async function clusterWithSinks(
  cleanups: Cleanups,
  opts: { name: string; key: SigningKey; nodeTimeoutMs: number; sinkCount: number },
): Promise<{ cluster: EmbeddedRedisCluster; sinks: SinkPeer[] }> {
  const dir = mkdtempSync(join(tmpdir(), `gatehouse-${opts.name}-`));
  const cluster = await startRedisCluster({ dir, nodeTimeoutMs: opts.nodeTimeoutMs });
  cleanups.add("the Redis Cluster", async () => {
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const identity = { serverName: GH_SERVER_NAME, keyId: opts.key.keyId, publicKey: opts.key.publicKey };
  const sinks = await Promise.all(range(0, opts.sinkCount).map(() => SinkPeer.start(identity)));
  cleanups.add("the sink peers", () => Promise.all(sinks.map((s) => s.close())));
  return { cluster, sinks };
}
