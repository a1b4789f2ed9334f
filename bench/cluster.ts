/**
 * Redis Cluster rows: the inbound (/send) and fan-out rows of `npm run bench` with Gatehouse on a
 * six-node loopback Redis Cluster (src/embedded-redis-cluster.ts), with 1 and 2 gateway processes,
 * against the same rows on a single redis-server in the same run; and the inbound row again with
 * GATEHOUSE_REDIS_WAIT_REPLICAS=1 (the cost of WAIT).
 *
 *   npx tsx bench/cluster.ts
 *   BENCH_INBOUND=4x1000 BENCH_CLUSTER_FANOUT=100 npx tsx bench/cluster.ts   (bigger rows)
 *   BENCH_CLUSTER_ROWS=single,cluster1,wait,cluster2                        (a subset)
 *
 * Two gateway processes are two `gatehouse serve` of ONE server (same name, key and data folder,
 * their own ports and instance IDs), each running sender workers; the origins of the inbound row
 * alternate between them. The redis-server processes are not pinned; each Gatehouse is pinned as
 * in `npm run bench`, both on the server core (this machine has two cores: the second process
 * adds no CPU, so compare CPU per PDU, not throughput).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../src/embedded-redis.js";
import { startRedisCluster } from "../src/embedded-redis-cluster.js";
import { GatehouseProc, RedisProc } from "./lib/procs.js";
import { setRunTag } from "./knock.js";
import { fanoutBench, gatehouseFanoutTarget, type FanoutFigures } from "./fanout.js";
import { inboundBench, loadAverage, type InboundFigures } from "./inbound.js";

const size = /^(\d+)x(\d+)$/.exec(process.env.BENCH_INBOUND ?? "4x400");
if (!size) throw new Error("BENCH_INBOUND must be ORIGINSxEVENTS");
const io = { origins: Number(size[1]), events: Number(size[2]), perTxn: 50 };
const servers = Number(process.env.BENCH_CLUSTER_FANOUT ?? 20);
const fo = { servers, rate: 20, seconds: 5, backlog: 100 };
const rows = new Set((process.env.BENCH_CLUSTER_ROWS ?? "single,cluster1,wait,cluster2").split(","));
const fmt = (n: number | undefined, d = 0) => (n !== undefined && Number.isFinite(n) ? n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }) : "–");

interface Row {
  name: string;
  inbound?: InboundFigures;
  fanout?: FanoutFigures;
}
const results: Row[] = [];
const cleanups: (() => Promise<unknown> | void)[] = [];
async function cleanup() {
  while (cleanups.length) await Promise.resolve(cleanups.pop()!()).catch((e) => console.error("cleanup:", e));
}

/** One Gatehouse (or two processes of it) on `redisUrl`; runs the rows asked. */
async function run(name: string, redisUrl: string, redisPids: number[], opts: { processes: 1 | 2; env?: Record<string, string>; fanout: boolean }) {
  console.log(`\n## ${name}\n`);
  const ghs: GatehouseProc[] = [];
  const first = await GatehouseProc.start({ redisUrl, logLevel: "warn", env: { GATEHOUSE_INSTANCE_ID: `bench-${results.length}-0`, ...opts.env } });
  ghs.push(first);
  if (opts.processes === 2) {
    const port = await freePort();
    ghs.push(
      await GatehouseProc.start({
        redisUrl,
        logLevel: "warn",
        dataDir: first.dataDir,
        federationPort: port,
        env: { GATEHOUSE_SERVER_NAME: first.serverName, GATEHOUSE_INSTANCE_ID: `bench-${results.length}-1`, ...opts.env },
      }),
    );
  }
  try {
    const target = gatehouseFanoutTarget(first);
    const pids = [...ghs.map((g) => g.pid), ...redisPids];
    const pidNames = [...ghs.map((_, i) => `node${ghs.length > 1 ? i + 1 : ""}`), ...redisPids.map((_, i) => (redisPids.length > 1 ? `redis${i + 1}` : "redis"))];
    const row: Row = { name };
    row.inbound = await inboundBench({ ...target, pids, pidNames, ports: ghs.map((g) => g.federationPort) }, io);
    if (opts.fanout) row.fanout = await fanoutBench(target, fo);
    results.push(row);
  } finally {
    for (const g of ghs.reverse()) {
      await g.stop();
      await g.cleanup();
    }
  }
}

try {
  setRunTag(Date.now().toString(36));
  if (rows.has("single")) {
    const redis = await RedisProc.start({ aof: false });
    cleanups.push(() => redis.stop());
    await run("single Redis, 1 gateway", redis.url, [redis.pid], { processes: 1, fanout: true });
    await redis.stop();
    cleanups.pop();
  }
  if (rows.has("cluster1") || rows.has("wait") || rows.has("cluster2")) {
    const dir = mkdtempSync(join(tmpdir(), "gatehouse-bench-cluster-"));
    const cluster = await startRedisCluster({ dir, nodeTimeoutMs: 5_000 });
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    cleanups.push(() => cluster.stop());
    const pids = cluster.nodes.map((n) => n.child.pid!);
    // Each row starts from an empty cluster (as the single-Redis row from a fresh redis-server):
    // the sink farms reuse ports with new keys, which a cached server key of an earlier row
    // would refuse. FLUSHALL on every node (replicas refuse it and follow their primary).
    const flush = () => Promise.all(cluster.nodes.map((n) => cluster.command(n.port, "FLUSHALL").catch(() => "")));
    if (rows.has("cluster1")) await flush();
    if (rows.has("cluster1")) await run("Redis Cluster (3+3), 1 gateway", cluster.url, pids, { processes: 1, fanout: true });
    if (rows.has("wait")) await flush();
    if (rows.has("wait")) await run("Redis Cluster, 1 gateway, WAIT 1", cluster.url, pids, { processes: 1, fanout: false, env: { GATEHOUSE_REDIS_WAIT_REPLICAS: "1", GATEHOUSE_REDIS_WAIT_TIMEOUT_MS: "1000" } });
    if (rows.has("cluster2")) await flush();
    if (rows.has("cluster2")) await run("Redis Cluster, 2 gateway processes", cluster.url, pids, { processes: 2, fanout: true });
  }
  console.log(`\n## summary (${new Date().toISOString()}, load average ${loadAverage()}; inbound ${io.origins} origins × ${io.events} events, ${io.perTxn}/txn; fan-out ${servers} servers)\n`);
  console.log("| setup | inbound PDUs/s (txn p50 / p99) | CPU per inbound PDU | fan-out live p50 / p99 | backlog drain |");
  console.log("|---|---|---|---|---|");
  for (const r of results) {
    const i = r.inbound;
    const f = r.fanout;
    const cpu = i ? `${fmt(i.cpuMsPerPdu, 3)} ms (${i.cpuSplit.map((c) => `${c.name} ${fmt(c.msPerPdu, 3)}`).join(" + ")})` : "–";
    const inb = i ? `${fmt(i.pdusPerSec)} (${fmt(i.txnP50Ms)} / ${fmt(i.txnP99Ms)} ms)${i.refused ? `, ${i.refused} refused` : ""}, forwarded ${fmt(i.forwarded)}` : "–";
    const live = f ? `${fmt(f.live.p50Ms)} / ${fmt(f.live.p99Ms)} ms` : "–";
    const drain = f ? `${fmt(f.backlog.deliveriesPerSec)} deliveries/s` : "–";
    console.log(`| ${r.name} | ${inb} | ${cpu} | ${live} | ${drain} |`);
  }
} finally {
  await cleanup();
}
