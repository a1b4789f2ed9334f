// Gatehouse on a real Redis Cluster (six redis-server processes, src/embedded-redis-cluster.ts),
// whatever REDIS_URL the rest of the run uses: connectRedis's redis-cluster:// URL, and proof that
// the cluster is real (a cross-slot script is refused, so the slot-safety tests below mean something).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Redis } from "ioredis";
import { startRedisCluster, type EmbeddedRedisCluster } from "../../src/embedded-redis-cluster.js";
import { connectRedis, parseClusterUrl } from "../../src/server.js";

let cluster: EmbeddedRedisCluster;
let redis: Redis;
let dir: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "gatehouse-cluster-"));
  cluster = await startRedisCluster({ dir });
  redis = connectRedis(cluster.url);
});

after(async () => {
  redis?.disconnect();
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test("the test cluster has three primaries, each with one replica, and covers every slot", async () => {
  const nodes = (await cluster.command(cluster.nodes[0]!.port, "CLUSTER", "NODES")).trim().split("\n");
  assert.equal(nodes.filter((l) => / master /.test(l) || /myself,master/.test(l)).length, 3, nodes.join("\n"));
  assert.equal(nodes.filter((l) => / slave /.test(l) || /myself,slave/.test(l)).length, 3, nodes.join("\n"));
  assert.match(await cluster.command(cluster.nodes[0]!.port, "CLUSTER", "INFO"), /cluster_slots_ok:16384/);
});

test("connectRedis reaches keys on every primary through the redis-cluster:// seed list", async () => {
  const keys = Array.from({ length: 30 }, (_, i) => `ghtest:cluster:{k${i}}:x`);
  await Promise.all(keys.map((k, i) => redis.set(k, String(i))));
  assert.deepEqual(await Promise.all(keys.map((k) => redis.get(k))), keys.map((_, i) => String(i)));
  const slots = new Set(await Promise.all(keys.map((k) => cluster.command(cluster.nodes[0]!.port, "CLUSTER", "KEYSLOT", k))));
  assert.ok(slots.size > 20, "the keys spread over many slots");
  await Promise.all(keys.map((k) => redis.del(k)));
});

test("the cluster is real: a script over two slots is refused with CROSSSLOT", async () => {
  await assert.rejects(redis.eval("return redis.call('GET', KEYS[1])", 2, "ghtest:{a}:x", "ghtest:{b}:x"), /CROSSSLOT/);
  assert.equal(await redis.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, "ghtest:{a}:x", "1"), "OK");
  await redis.del("ghtest:{a}:x");
});

test("parseClusterUrl reads seeds, user and password", () => {
  const cases = [
    { why: "seeds only", url: "redis-cluster://a.example.net:7000,b.example.net:7001", want: { nodes: [{ host: "a.example.net", port: 7000 }, { host: "b.example.net", port: 7001 }] } },
    { why: "password, percent-decoded", url: "redis-cluster://:p%40ss@a.example.net:7000", want: { nodes: [{ host: "a.example.net", port: 7000 }], password: "p@ss" } },
    { why: "ACL user and password", url: "redis-cluster://gh:pw@[::1]:7000", want: { nodes: [{ host: "::1", port: 7000 }], username: "gh", password: "pw" } },
    { why: "not a cluster URL", url: "redis://a.example.net:7000", want: null },
  ];
  for (const c of cases) assert.deepEqual(parseClusterUrl(c.url), c.want, c.why);
});
