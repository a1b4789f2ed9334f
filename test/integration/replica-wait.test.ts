// GATEHOUSE_REDIS_WAIT_REPLICAS (src/store/replica-wait.ts) on a real Redis Cluster of its own: the
// WAIT goes to the primary serving the room's slot (a stopped replica of THAT primary makes it time
// out; a room on another primary is unaffected). On a single Redis without replicas a WAIT times
// out, is counted, and the event is still acknowledged. Which answers wait, through a whole
// Gatehouse: test/http/replica-wait-answers.test.ts.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startRedisCluster, type EmbeddedRedisCluster } from "../../src/embedded-redis-cluster.js";
import { connectRedis } from "../../src/server.js";
import { RedisKeys } from "../../src/store/redis-keys.js";
import { ReplicaWait } from "../../src/store/replica-wait.js";
import { createLogger } from "../../src/logger.js";
import { loadConfig, ConfigError } from "../../src/config.js";
import { Cleanups } from "../support/cleanups.js";

const cleanups = new Cleanups("replica-wait");
after(() => cleanups.run());
const logger = createLogger("silent");

/**
 * The primaries and each one's replica, as node 0 sees them. Node 0 learns the replicas' roles by
 * gossip, which can lag the replicas' own sync under load: asked again until every primary has one.
 */
async function topology(cluster: EmbeddedRedisCluster): Promise<{ primaries: { id: string; port: number; slots: [number, number][] }[]; replicaOf: Map<string, number> }> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const primaries: { id: string; port: number; slots: [number, number][] }[] = [];
    const replicaOf = new Map<string, number>();
    for (const line of (await cluster.command(cluster.nodes[0]!.port, "CLUSTER", "NODES")).trim().split("\n")) {
      const f = line.split(" ");
      const port = Number(f[1]!.split("@")[0]!.split(":")[1]);
      if (f[2]!.includes("master")) {
        primaries.push({ id: f[0]!, port, slots: f.slice(8).map((r) => r.split("-").map(Number) as [number, number]).map(([a, b]) => [a, b ?? a]) });
      } else replicaOf.set(f[3]!, port);
    }
    if (primaries.every((p) => replicaOf.has(p.id)) || Date.now() > deadline) return { primaries, replicaOf };
    await new Promise((r) => setTimeout(r, 200));
  }
}

test("config: GATEHOUSE_REDIS_WAIT_REPLICAS / _TIMEOUT_MS", () => {
  const base = { GATEHOUSE_SERVER_NAME: "gate.test", GATEHOUSE_ADMIN_TOKEN: "t".repeat(32) };
  const cases = [
    { why: "default: off (an embedded Redis has no replica)", env: {}, want: { replicas: 0, timeoutMs: 1000 } },
    { why: "one replica, 250 ms", env: { GATEHOUSE_REDIS_WAIT_REPLICAS: "1", GATEHOUSE_REDIS_WAIT_TIMEOUT_MS: "250" }, want: { replicas: 1, timeoutMs: 250 } },
  ];
  for (const c of cases) assert.deepEqual(loadConfig({ ...base, ...c.env }).redisWait, c.want, c.why);
  const bad = [
    { why: "negative", env: { GATEHOUSE_REDIS_WAIT_REPLICAS: "-1" } },
    { why: "not a number", env: { GATEHOUSE_REDIS_WAIT_REPLICAS: "one" } },
    { why: "a timeout of 0 would block forever (WAIT 0 = no timeout)", env: { GATEHOUSE_REDIS_WAIT_TIMEOUT_MS: "0" } },
  ];
  for (const c of bad) assert.throws(() => loadConfig({ ...base, ...c.env }), ConfigError, c.why);
});

test("single Redis without replicas: WAIT 1 times out after the timeout, is reported, never throws", async () => {
  const url = process.env.REDIS_URL!;
  if (url.startsWith("redis-cluster://")) return; // the cluster case is the next test
  const redis = connectRedis(url);
  cleanups.add("the Redis client", () => redis.quit());
  const seen: { acknowledged: number; seconds: number; timedOut: boolean }[] = [];
  const w = new ReplicaWait(redis, new RedisKeys("test-wait"), { replicas: 1, timeoutMs: 150, logger, onWait: (i) => seen.push(i) });
  await w.afterRoomWrites(["!a:gate.test"]);
  assert.equal(seen.length, 1);
  assert.equal(seen[0]!.timedOut, true);
  assert.ok(seen[0]!.seconds >= 0.14, `waited ${seen[0]!.seconds} s`);
  const off = new ReplicaWait(redis, new RedisKeys("test-wait"), { replicas: 0, timeoutMs: 150, logger, onWait: (i) => seen.push(i) });
  await off.afterRoomWrites(["!a:gate.test"]);
  assert.equal(seen.length, 1, "replicas 0: no WAIT at all");
});

test("on a cluster the WAIT goes to the room's primary: its replica stopped → timeout; a room on another primary is acknowledged", { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "gatehouse-wait-"));
  const cluster = await startRedisCluster({ dir, nodeTimeoutMs: 15_000 });
  cleanups.add("the Redis Cluster", async () => {
    for (const n of cluster.nodes) n.child.kill("SIGCONT");
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const redis = connectRedis(cluster.url);
  cleanups.add("the Redis client", () => redis.quit());
  const keys = new RedisKeys("test-wait");
  const { primaries, replicaOf } = await topology(cluster);
  const slotOf = async (k: string) => Number(await cluster.command(cluster.nodes[0]!.port, "CLUSTER", "KEYSLOT", k));
  const ownerOf = (slot: number) => primaries.find((p) => p.slots.some(([a, b]) => slot >= a && slot <= b))!;
  // Two rooms on different primaries.
  const roomA = "!wait-a:gate.test";
  const ownerA = ownerOf(await slotOf(keys.room(roomA)));
  let roomB = "";
  for (let i = 0; !roomB; i++) if (ownerOf(await slotOf(keys.room(`!wait-b${i}:gate.test`))) !== ownerA) roomB = `!wait-b${i}:gate.test`;
  const seen: { acknowledged: number; seconds: number; timedOut: boolean }[] = [];
  // Where an acknowledgement is expected, a long timeout (an answer ends the WAIT at once, so the
  // test does not depend on the machine's speed); the short one only where it must time out.
  const w = new ReplicaWait(redis, keys, { replicas: 1, timeoutMs: 400, logger, onWait: (i) => seen.push(i) });
  const patient = new ReplicaWait(redis, keys, { replicas: 1, timeoutMs: 20_000, logger, onWait: (i) => seen.push(i) });

  await redis.set(keys.room(roomA), "x");
  await redis.set(keys.room(roomB), "x");
  await patient.afterRoomWrites([roomA, roomB]);
  assert.equal(seen.length, 2, "one WAIT per primary");
  assert.ok(seen.every((s) => !s.timedOut && s.acknowledged >= 1), `both acknowledged: ${JSON.stringify(seen)}`);

  // Stop the replica of room A's primary only.
  const replicaPort = replicaOf.get(ownerA.id);
  const replica = cluster.nodes.find((n) => n.port === replicaPort);
  assert.ok(replica, `room A's primary has a replica (node 0's view: ${JSON.stringify([...replicaOf])})`);
  replica.child.kill("SIGSTOP");
  try {
    seen.length = 0;
    await redis.set(keys.room(roomA), "y");
    await w.afterRoomWrites([roomA]);
    assert.equal(seen[0]!.timedOut, true, "room A's primary has no replica answering");
    assert.ok(seen[0]!.seconds >= 0.39, `waited the timeout (${seen[0]!.seconds} s)`);
    seen.length = 0;
    await redis.set(keys.room(roomB), "y");
    await patient.afterRoomWrites([roomB]);
    assert.equal(seen[0]!.timedOut, false, "room B's primary is another node, its replica answers");
    assert.ok(seen[0]!.acknowledged >= 1, `acknowledged by room B's replica: ${JSON.stringify(seen)}`);
  } finally {
    replica.child.kill("SIGCONT");
  }
});
