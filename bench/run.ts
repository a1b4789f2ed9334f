/**
 * `npm run bench` (node --import tsx bench/run.ts). Runs every bench in turn; add new ones here.
 *
 *   BENCH_SECONDS       measuring time per crypto row (default 1)
 *   BENCH_LOAD_SECONDS  measuring time per load row (default 5; 1 with BENCH_QUICK=1)
 *   BENCH_QUICK=1       fast smoke run (short rows, small backlog, 20 fan-out servers)
 *   BENCH_NO_SYNAPSE=1  Gatehouse only
 *   BENCH_ONLY=crypto,knock,fanout,inbound   run a subset
 *   BENCH_INBOUND=4x1000  inbound row: origins × events per origin (default 4x1000; 4x200 with BENCH_QUICK=1)
 *   BENCH_INBOUND_GATEWAYS=2  inbound row with two `gatehouse serve` of one server on one Redis (origins alternate)
 *   BENCH_ONLY=scale-fanout,scale-room,scale-knocks   scale rows (bench/scale.ts; sizes: BENCH_SCALE_*, bench/README.md)
 *
 * Layout: this process (load generator, fake remote servers, sink farm) pins itself to core 1;
 * the server under test — Gatehouse (`gatehouse serve` child process) and its redis-server, or
 * Synapse's python (SQLite in-process) — runs on core 0. Figures are printed, never asserted.
 */
import { cpus } from "node:os";
import { cryptoBench } from "./crypto.js";
import { gatehouseTarget, knockBench, setRunTag, synapseTarget, type KnockFigures } from "./knock.js";
import { fanoutBench, gatehouseFanoutTarget, synapseFanoutTarget, type FanoutFigures } from "./fanout.js";
import { inboundBench, loadAverage, type InboundFigures } from "./inbound.js";
import { GatehouseProc, LOAD_CORE, pinSelf, RedisProc, SERVER_CORE, SynapseProc, synapseUnavailable } from "./lib/procs.js";
import { RemoteServer } from "../test/support/remote-server.js";
import { runScaleRows } from "./scale.js";
import { freePort } from "../src/embedded-redis.js";

const seconds = Number(process.env.BENCH_SECONDS ?? "1");
if (!(seconds > 0)) throw new Error(`BENCH_SECONDS must be a positive number, got ${process.env.BENCH_SECONDS}`);
const quick = process.env.BENCH_QUICK === "1";
const loadSeconds = Number(process.env.BENCH_LOAD_SECONDS ?? (quick ? "1" : "5"));
const only = new Set((process.env.BENCH_ONLY ?? "crypto,knock,fanout,inbound,scale-fanout,scale-room,scale-knocks").split(",").map((s) => s.trim()));

pinSelf();
console.log(`# Gatehouse benchmarks: node ${process.version}, ${cpus().length} CPU(s), ${cpus()[0]?.model ?? "unknown CPU"}`);
console.log(`# server under test on core ${SERVER_CORE}, load generator on core ${LOAD_CORE}${quick ? ", QUICK run" : ""}; ${new Date().toISOString()}; load average ${loadAverage()}`);
const inboundSize = /^(\d+)x(\d+)$/.exec(process.env.BENCH_INBOUND ?? (quick ? "4x200" : "4x1000"));
if (!inboundSize) throw new Error(`BENCH_INBOUND must be ORIGINSxEVENTS (e.g. 4x1000), got ${process.env.BENCH_INBOUND}`);
const inboundGateways = Number(process.env.BENCH_INBOUND_GATEWAYS ?? "1");
if (!Number.isInteger(inboundGateways) || inboundGateways < 1) throw new Error(`BENCH_INBOUND_GATEWAYS must be a positive integer, got ${process.env.BENCH_INBOUND_GATEWAYS}`);

if (only.has("crypto")) cryptoBench({ seconds: quick ? Math.min(seconds, 0.3) : seconds });

const cleanups: (() => Promise<void> | void)[] = [];
async function cleanup() {
  while (cleanups.length) await Promise.resolve(cleanups.pop()!()).catch((e) => console.error("cleanup:", e));
}
process.on("SIGINT", () => void cleanup().then(() => process.exit(130)));

const fmt = (n: number | undefined, d = 0) => (n !== undefined && Number.isFinite(n) ? n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }) : "–");

try {
  if (only.has("knock") || only.has("fanout") || only.has("inbound")) {
    setRunTag(Date.now().toString(36));
    const redis = await RedisProc.start({ aof: false });
    cleanups.push(() => redis.cleanup());
    cleanups.push(() => redis.stop());
    // Its /metrics: the inbound row prints what the gatehouse_room_* counters moved by.
    const metricsPorts = [await freePort()];
    const gh = await GatehouseProc.start({ redisUrl: redis.url, logLevel: process.env.BENCH_LOG_LEVEL ?? "info", env: { GATEHOUSE_METRICS_LISTEN: `127.0.0.1:${metricsPorts[0]}` } });
    cleanups.push(() => gh.cleanup());
    cleanups.push(() => gh.stop());
    const why = synapseUnavailable();
    let hs: SynapseProc | null = null;
    if (why) console.log(`\n# Synapse skipped: ${why}`);
    else {
      hs = new SynapseProc("benchS", 18908, 18948);
      hs.start();
      cleanups.push(() => hs!.stop());
      console.log(`# Synapse ${hs.serverName} (pid ${hs.pid}) started and pinned to core ${SERVER_CORE}`);
    }
    console.log(`# Gatehouse ${gh.serverName} (pid ${gh.pid}), redis ${redis.url} (pid ${redis.pid})`);

    const knocks: KnockFigures[] = [];
    const fanouts: FanoutFigures[] = [];
    const inbounds: InboundFigures[] = [];
    if (only.has("knock")) {
      console.log("\n## knocks\n");
      const remote = await RemoteServer.start();
      cleanups.push(() => remote.close());
      knocks.push(await knockBench(gatehouseTarget(gh, redis), remote, { seconds: loadSeconds, quick, gatehouse: gh, redis, metricsUrl: `http://127.0.0.1:${metricsPorts[0]}/metrics` }));
      if (hs) knocks.push(await knockBench(await synapseTarget(hs), remote, { seconds: loadSeconds, quick }));
    }
    if (only.has("fanout")) {
      console.log("\n## fan-out\n");
      const fo = { servers: quick ? 20 : 100, rate: 20, seconds: quick ? 2 : 10, backlog: quick ? 50 : 200 };
      fanouts.push(await fanoutBench(gatehouseFanoutTarget(gh), { ...fo, redis, gatehouse: gh }));
      if (hs) fanouts.push(await fanoutBench(await synapseFanoutTarget(hs), fo));
    }

    if (only.has("inbound")) {
      console.log("\n## inbound (PUT /send)\n");
      const io = { origins: Number(inboundSize[1]), events: Number(inboundSize[2]), perTxn: 50 };
      // BENCH_INBOUND_GATEWAYS=N: N `gatehouse serve` of ONE server (same name, key and data
      // folder, own ports and instance IDs, each with its sender workers) on the one Redis, as a
      // Kubernetes deployment with replicas; the origins alternate between them (all pinned to
      // the server core: compare CPU per PDU, not throughput).
      const ghs = [gh];
      for (let n = 1; n < inboundGateways; n++) {
        metricsPorts.push(await freePort());
        const extra = await GatehouseProc.start({
          redisUrl: redis.url,
          logLevel: process.env.BENCH_LOG_LEVEL ?? "info",
          dataDir: gh.dataDir,
          env: { GATEHOUSE_SERVER_NAME: gh.serverName, GATEHOUSE_INSTANCE_ID: `bench-inbound-${n}`, GATEHOUSE_METRICS_LISTEN: `127.0.0.1:${metricsPorts[n]}` },
        });
        cleanups.push(() => extra.stop());
        ghs.push(extra);
      }
      const nodes = ghs.length > 1 ? ghs.map((g, n) => ({ pid: g.pid, name: `node${n + 1}` })) : [{ pid: gh.pid, name: "node" }];
      inbounds.push(
        await inboundBench(
          { ...gatehouseFanoutTarget(gh), pids: [...nodes.map((x) => x.pid), redis.pid], pidNames: [...nodes.map((x) => x.name), "redis"], redisUrl: redis.url, ports: ghs.map((g) => g.federationPort), metricsUrls: metricsPorts.map((p) => `http://127.0.0.1:${p}/metrics`) },
          io,
        ),
      );
      if (hs) inbounds.push(await inboundBench({ ...(await synapseFanoutTarget(hs)), pids: [hs.pid], pidNames: ["synapse"] }, io));
    }

    // --- summary -------------------------------------------------------------------------------------
    console.log("\n## summary\n");
    const g = knocks.find((k) => k.target === "Gatehouse");
    const s = knocks.find((k) => k.target === "Synapse");
    const ratio = (a?: number, b?: number) => (a && b ? `${fmt(a / b, 1)}×` : "–");
    const rows: string[][] = [];
    if (g) {
      for (const c of [1, 10, 50]) {
        const a = g.makeKnock[c];
        if (!a) continue;
        const b = s?.makeKnock[c];
        rows.push([`make_knock replay, ${c} conn`, `${fmt(a.opsPerSec)} req/s (p50 ${fmt(a.p50Ms, 2)} / p99 ${fmt(a.p99Ms, 2)} ms)`, b ? `${fmt(b.opsPerSec)} req/s (p50 ${fmt(b.p50Ms, 1)} / p99 ${fmt(b.p99Ms, 1)} ms)` : "–", ratio(a.opsPerSec, b?.opsPerSec)]);
      }
      for (const c of [1, 10]) {
        const a = g.distinct[c];
        if (!a) continue;
        const b = s?.distinct[c];
        rows.push([`distinct knocks (make+send), ${c} client(s)`, `${fmt(a.opsPerSec)} knocks/s (p50 ${fmt(a.p50Ms, 1)} / p99 ${fmt(a.p99Ms, 1)} ms)`, b ? `${fmt(b.opsPerSec, 1)} knocks/s (p50 ${fmt(b.p50Ms)} / p99 ${fmt(b.p99Ms)} ms)` : "–", ratio(a.opsPerSec, b?.opsPerSec)]);
      }
      if (g.sendOnly) rows.push(["send_knock only, 10 conn", `${fmt(g.sendOnly.opsPerSec)} knocks/s (p50 ${fmt(g.sendOnly.p50Ms, 1)} / p99 ${fmt(g.sendOnly.p99Ms, 1)} ms)`, s?.sendOnly ? `${fmt(s.sendOnly.opsPerSec, 1)} knocks/s (p50 ${fmt(s.sendOnly.p50Ms)} / p99 ${fmt(s.sendOnly.p99Ms)} ms)` : "–", ratio(g.sendOnly.opsPerSec, s?.sendOnly?.opsPerSec)]);
      if (g.ceiling && g.sendOnly)
        rows.push([
          "send_knock vs crypto ceiling (1 core)",
          `${fmt((100 * g.sendOnly.opsPerSec) / g.ceiling.fullPerSec)} % of ${fmt(g.ceiling.fullPerSec)}/s (X-Matrix + event check); ${fmt((100 * g.sendOnly.opsPerSec) / g.ceiling.eventOnlyPerSec)} % of ${fmt(g.ceiling.eventOnlyPerSec)}/s (event check only)`,
          "",
          "",
        ]);
      if (g.memory) rows.push(["memory per hosted member (knock)", `Redis ${fmt(g.memory.redisBytesPerMember)} B, RSS ${fmt(g.memory.rssBytesPerMember)} B (${g.memory.knocks} knocks)`, "", ""]);
      if (g.heapPerMember) rows.push(["heap per hosted member (state cache, in-process)", `${fmt(g.heapPerMember.bytesPerMember)} B (${fmt(g.heapPerMember.members)} members)`, "", ""]);
    }
    for (const f of fanouts.filter((x) => x.target === "Gatehouse")) {
      const sf = fanouts.find((x) => x.target === "Synapse");
      rows.push([`fan-out live (${f.servers} servers, 20 ev/s): enqueue→delivered`, `p50 ${fmt(f.live.p50Ms)} / p99 ${fmt(f.live.p99Ms)} ms, ${fmt(f.live.pdusPerTxn, 2)} PDUs/txn`, sf ? `p50 ${fmt(sf.live.p50Ms)} / p99 ${fmt(sf.live.p99Ms)} ms, ${fmt(sf.live.pdusPerTxn, 2)} PDUs/txn` : "–", ""]);
      rows.push([`fan-out backlog drain (${f.backlog.events} events × ${f.servers})`, `${fmt(f.backlog.deliveriesPerSec)} deliveries/s, ${fmt(f.backlog.pdusPerTxn, 1)} PDUs/txn (${fmt(f.backlog.drainSeconds, 2)} s)`, sf ? `${fmt(sf.backlog.deliveriesPerSec)} deliveries/s, ${fmt(sf.backlog.pdusPerTxn, 1)} PDUs/txn (${fmt(sf.backlog.drainSeconds, 2)} s)` : "–", ratio(f.backlog.deliveriesPerSec, sf?.backlog.deliveriesPerSec)]);
      if (f.memory) rows.push(["memory per queued PDU (per destination entry)", `Redis ${fmt(f.memory.redisBytesPerQueuedPdu)} B, RSS ${fmt(f.memory.rssBytesPerQueuedPdu)} B (${fmt(f.memory.queuedEntries)} entries)`, "", ""]);
    }
    const gi = inbounds.find((x) => x.target === "Gatehouse");
    const si = inbounds.find((x) => x.target === "Synapse");
    if (gi) {
      const inb = (x: InboundFigures) => `${fmt(x.pdusPerSec)} PDUs/s (txn p50 ${fmt(x.txnP50Ms)} / p99 ${fmt(x.txnP99Ms)} ms)${x.refused ? `, ${fmt(x.refused)} refused` : ""}; forwarded ${fmt(x.forwarded)} of ${fmt((x.pdusPerSec * x.seconds) * (x.origins - 1))}`;
      const cpu = (x: InboundFigures) => `${fmt(x.cpuMsPerPdu, 3)} ms${x.cpuSplit.length > 1 ? ` (${x.cpuSplit.map((c) => `${c.name} ${fmt(c.msPerPdu, 3)}`).join(" + ")})` : ""}`;
      rows.push([`inbound /send, ${gi.origins} origins × ${fmt(gi.events)} events, ${gi.perTxn}/txn`, inb(gi), si ? inb(si) : "–", ratio(gi.pdusPerSec, si?.pdusPerSec)]);
      rows.push(["server CPU per inbound PDU (incl. forwarding)", cpu(gi), si ? cpu(si) : "–", si ? `${fmt(si.cpuMsPerPdu / gi.cpuMsPerPdu, 1)}× less` : ""]);
    }
    console.log(`load average at the end: ${loadAverage()}`);
    console.log("| scenario | Gatehouse | Synapse 1.160 | ratio |");
    console.log("|---|---|---|---|");
    for (const r of rows) console.log(`| ${r.join(" | ")} |`);
  }
  await runScaleRows(only, quick, synapseUnavailable(), () => {
    // One Synapse per bench process, named after its first scale row: runs of single rows can go side by side.
    const slot = Number(process.env.BENCH_SCALE_SYNAPSE_SLOT ?? ["scale-fanout", "scale-room", "scale-knocks"].findIndex((r) => only.has(r)));
    const hs = new SynapseProc(`benchScale${slot}`, 18918 + slot, 18958 + slot);
    hs.start();
    cleanups.push(() => hs.stop());
    return hs;
  });
} finally {
  await cleanup();
}
