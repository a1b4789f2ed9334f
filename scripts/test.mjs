#!/usr/bin/env node
// `npm test`: type-check, then run every test file under test/ (except test/interop unless
// --interop) with node's test runner. When REDIS_URL is unset a private redis-server is started
// for the run and stopped afterwards.
//
// --cluster (or GATEHOUSE_TEST_REDIS=cluster) starts a six-node Redis Cluster on loopback instead
// (src/embedded-redis-cluster.ts) and gives the tests its redis-cluster:// URL. A full run (no
// filters) runs the Redis-backed suites a second time on such a cluster (CLUSTER_PASS below).
//
// --interop as root runs inside a private network and mount namespace (unshare): lo is its only
// interface, and /etc/resolv.conf (and the Synapse chroot's) name 127.0.0.53, where the named-server
// tests start a dnsmasq. No lookup or connection of the interop tests leaves the namespace, and
// their servers may use any loopback address and port without meeting other processes.
import { spawnSync, spawn } from "node:child_process";
import { readdirSync, statSync, mkdtempSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join, relative } from "node:path";
import { tmpdir } from "node:os";
import { register } from "tsx/esm/api";

// Lets this plain script load the TypeScript source (the embedded Redis starter).
register();
const { startRedis } = await import("../src/embedded-redis.ts");
const { startRedisCluster } = await import("../src/embedded-redis-cluster.ts");

const root = new URL("..", import.meta.url).pathname;
const args = process.argv.slice(2);
const interop = args.includes("--interop");
const cluster = args.includes("--cluster") || process.env.GATEHOUSE_TEST_REDIS === "cluster";
const filters = args.filter((a) => !a.startsWith("--"));

function findTests(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...findTests(p));
    else if (name.endsWith(".test.ts")) out.push(p);
  }
  return out;
}

const netns = await import("../src/dev/netns.ts");
if (interop && process.getuid?.() === 0 && !netns.inPrivateNamespace()) {
  if (netns.privateNamespaceAvailable()) process.exit(netns.runInPrivateNamespace([process.execPath, fileURLToPath(import.meta.url), ...args]));
  console.log("# unshare --net --mount is not available: interop runs in this namespace, named-server tests skip");
}
if (interop && netns.inPrivateNamespace()) {
  netns.setUpPrivateNamespace("127.0.0.53", [join(process.env.PEERS_ROOT ?? "/var/tmp/matrix-peers/sid", "etc/resolv.conf")]);
  console.log("# interop in a private network namespace: lo only, DNS at 127.0.0.53 (the named-server tests start dnsmasq)");
}

let files = findTests(join(root, "test"))
  .map((f) => relative(root, f))
  .filter((f) => (interop ? f.startsWith("test/interop/") : !f.startsWith("test/interop/")))
  // test/image needs a built container image (scripts/image-build.sh; .ci/run runs it).
  .filter((f) => !f.startsWith("test/image/") || filters.length > 0)
  .sort();
if (filters.length) files = files.filter((f) => filters.some((x) => f.includes(x)));

if (!interop && !filters.length) {
  console.log("# type-checking (tsc --noEmit)");
  const tsc = spawnSync(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", join(root, "tsconfig.json"), "--noEmit"], {
    stdio: "inherit",
    cwd: root,
  });
  if (tsc.status !== 0) process.exit(tsc.status ?? 1);

  // Architecture boundaries: no import cycles in src/, and the protocol core imports no adapters
  // and no I/O modules (eslint.config.js).
  console.log("# boundaries (madge --circular, eslint no-restricted-imports)");
  const madge = spawnSync(
    process.execPath,
    [join(root, "node_modules/madge/bin/cli.js"), "--circular", "--no-spinner", "--extensions", "ts", "--ts-config", join(root, "tsconfig.json"), join(root, "src")],
    { stdio: "inherit", cwd: root },
  );
  if (madge.status !== 0) process.exit(madge.status ?? 1);
  const eslint = spawnSync(process.execPath, [join(root, "node_modules/eslint/bin/eslint.js"), "--max-warnings=0", "src"], { stdio: "inherit", cwd: root });
  if (eslint.status !== 0) process.exit(eslint.status ?? 1);
}

/**
 * Runs `list` with node's test runner against a private Redis (a cluster when `onCluster`), unless
 * REDIS_URL names one. Resolves to the exit code.
 */
async function runPass(list, onCluster) {
  let redis = null;
  let redisDir = null;
  const env = { ...process.env };
  if (!env.REDIS_URL || onCluster) {
    redisDir = mkdtempSync(join(tmpdir(), "gatehouse-test-redis-"));
    redis = onCluster ? await startRedisCluster({ dir: redisDir }) : await startRedis({ dir: redisDir });
    env.REDIS_URL = redis.url;
    console.log(`# started ${onCluster ? "a six-node Redis Cluster" : "redis-server"} for the tests at ${redis.url}`);
  }
  const child = spawn(
    process.execPath,
    // A test (or hook) that hangs fails after 5 minutes instead of holding CI until its limit.
    ["--import", "tsx", "--test", "--test-reporter=spec", `--test-concurrency=${interop ? 1 : 2}`, "--test-timeout=300000", ...list],
    { stdio: "inherit", cwd: root, env },
  );
  const code = await new Promise((resolve) => child.on("exit", (c, sig) => resolve(c ?? (sig ? 1 : 0))));
  if (redis) await redis.stop();
  if (redisDir) rmSync(redisDir, { recursive: true, force: true });
  return code;
}

// The Redis Cluster pass of a full run: the suites that exercise Redis (the store, the fan-out,
// the sender, and the HTTP suites through the room service) again against a six-node cluster.
// GATEHOUSE_TEST_CLUSTER=off skips it. Left out: suites that start their own single redis-server
// (durability, sender-crash, two-gatehouses) or use no Redis.
const CLUSTER_PASS = [
  "test/integration/",
  "test/http/send-transaction", "test/http/knock", "test/http/leave-join", "test/http/event-reads",
  "test/http/redactions", "test/http/state-resolution", "test/http/history-visibility", "test/http/upgrade",
  "test/http/admin", "test/http/rate-limit",
  // Streamed send_join and /state: MGET of event bytes and HMGET of redaction records per chunk.
  "test/http/streamed-answers",
  // Application services: createRoom's whole-room write and remote invites through the outbox.
  "test/http/appservice-push", "test/http/client-api",
];
// (and the two that start a cluster of their own: redis-cluster, cluster-failover).
const CLUSTER_SKIP = [
  "test/integration/durability", "test/integration/sender-crash", "test/integration/two-gatehouses",
  "test/integration/redis-cluster", "test/integration/cluster-failover", "test/integration/cluster-slot-move",
  "test/integration/replica-wait",
];

let code = await runPass(files, cluster);
if (!filters.length && !interop && !cluster && process.env.GATEHOUSE_TEST_CLUSTER !== "off") {
  const clusterFiles = files.filter((f) => CLUSTER_PASS.some((x) => f.startsWith(x)) && !CLUSTER_SKIP.some((x) => f.startsWith(x)));
  console.log(`# the Redis Cluster pass: ${clusterFiles.length} suites again on a six-node cluster (GATEHOUSE_TEST_CLUSTER=off skips it)`);
  const clusterCode = await runPass(clusterFiles, true);
  if (code === 0) code = clusterCode;
}
process.exit(code);
