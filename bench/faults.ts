/**
 * `npm run faults` (node --import tsx bench/faults.ts): scripted fault runs against Gatehouse on
 * an external redis-server with the append-only file on, while admin messages stream into a room
 * with FAULT_SINKS (default 20) remote servers (sink farm) at 20 events/s. Sender settings are
 * Gatehouse's defaults (only the backoff and timeouts below are shortened, for the peer faults).
 * Two topologies (FAULT_TOPOLOGY=default,split; both by default):
 *
 *   default — `gatehouse serve` with its sender in-process (the README's deployment):
 *     1. kill -9 serve mid-traffic, restart it at once;
 *     2. SIGTERM serve (a rolling restart), restart it;
 *     3. restart Redis (SIGTERM: AOF flushed; ~1 s down);
 *     4. destinations fail (HTTP 500) for 5 s, hang for 5 s, are down (refused) for 10 s.
 *   split — `gatehouse serve` (GATEHOUSE_RUN_WORKERS=false) + two `gatehouse worker`s:
 *     1. kill -9 worker A, not restarted (worker B must notice and take over);
 *     2. kill -9 worker B, restart it at once (same GATEHOUSE_INSTANCE_ID, as a pod's container);
 *     3. SIGTERM worker B, restart it;
 *     4. kill -9 serve, restart it (the gateway only: admin sends fail meanwhile).
 *
 * For each process fault: ack→delivered (admin 200 → the last of the servers received the
 * event) p50 and max over the events acknowledged from 2 s before to 6 s after the fault, and
 * "recovered after": from the moment the restarted process was ready (or the fault, when nothing
 * restarts) until everything acknowledged up to 1 s after that moment was delivered everywhere. At the end: PDUs lost (accepted events a joined server never
 * received; must be 0), PDUs delivered under a second txnId (must be 0), acknowledged events
 * missing from the timeline. Target for every fault: recovery < 5 s.
 */
import type { ChildProcess } from "node:child_process";
import { GatehouseProc, pinSelf, RedisProc, sleep } from "./lib/procs.js";
import { SinkFarm } from "./lib/sink-farm-client.js";
import { enc } from "./lib/fed.js";
import { acceptedTimeline, catchUpSeconds, checkDeliveries, createRoom, expectedDeliveries, joinSinks, waitDelivered } from "./lib/scenario.js";

const SINKS = Number(process.env.FAULT_SINKS ?? "20");
const RATE = 20;
const TOPOLOGIES = (process.env.FAULT_TOPOLOGY ?? "default,split").split(",").map((t) => t.trim()) as ("default" | "split")[];
/** Settings for this run (see bench/README.md, "Faults"); the sender's lock and sweep are the defaults. */
export const FAULT_ENV = {
  GATEHOUSE_SENDER_BACKOFF_INITIAL_MS: "250",
  GATEHOUSE_SENDER_BACKOFF_MAX_MS: "30000",
  GATEHOUSE_FEDERATION_TIMEOUT_MS: "3000",
  GATEHOUSE_SHUTDOWN_TIMEOUT_MS: "2000",
};
/** How long a process fault is watched at most (the old behaviour needed about a minute). */
const WATCH_MS = 90_000;

interface FaultFigures {
  fault: string;
  events: number;
  p50: number | null;
  max: number | null;
  restartedAfter: number | null;
  recoveredAfter: number | null;
}

const pct = (xs: number[], p: number) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]! : null);
const secs = (ms: number | null) => (ms === null ? "—" : `${(ms / 1000).toFixed(2)} s`);

pinSelf();
console.log(`# faults: ${SINKS} servers, ${RATE} events/s, topologies ${TOPOLOGIES.join(", ")}, ${new Date().toISOString()}`);
console.log(`# settings: ${Object.entries(FAULT_ENV).map(([k, v]) => `${k}=${v}`).join(" ")}`);
let failed = false;
const summaries: string[] = [];
for (const topology of TOPOLOGIES) {
  const ok = await runTopology(topology);
  failed ||= !ok;
}
console.log(`\n# all topologies\n${summaries.join("\n")}`);
process.exitCode = failed ? 1 : 0;

async function runTopology(topology: "default" | "split"): Promise<boolean> {
  console.log(`\n## topology: ${topology}${topology === "default" ? " (serve with the sender in-process)" : " (serve + 2 workers)"}\n`);
  const redis = await RedisProc.start({ aof: true });
  const gh = await GatehouseProc.start({ redisUrl: redis.url, runWorkers: topology === "default", env: FAULT_ENV });
  const workerEnv = (name: string) => ({ GATEHOUSE_INSTANCE_ID: name });
  const workers: ChildProcess[] = topology === "split" ? [await gh.startWorker(workerEnv("worker-a")), await gh.startWorker(workerEnv("worker-b"))] : [];
  const farm = await SinkFarm.start(SINKS);
  let start = Date.now();
  const log = (s: string) => console.log(`  [${((Date.now() - start) / 1000).toFixed(1)} s] ${s}`);
  const acked: { id: string; at: number }[] = [];
  let sendFailures = 0;
  let stop = false;
  let traffic: Promise<void> = Promise.resolve();
  const figures: FaultFigures[] = [];

  /** Runs a process fault at `at` = now and watches the events acknowledged around it. */
  const processFault = async (fault: string, act: () => Promise<number | null>) => {
    const at = Date.now();
    log(fault);
    const readyAt = await act();
    log(`${fault}: done${readyAt ? ` (ready after ${secs(readyAt - at)})` : ""}`);
    await sleep(6000);
    const window = acked.filter((a) => a.at >= at - 2000 && a.at <= at + 6000);
    let receipts = await farm.receipts(window.map((a) => a.id), at);
    const t0 = Date.now();
    while (receipts.lastReceipt.some((r) => r === null) && Date.now() - t0 < WATCH_MS) {
      await sleep(250);
      receipts = await farm.receipts(window.map((a) => a.id), at);
    }
    const lat = window.flatMap((a, i) => (receipts.lastReceipt[i] == null ? [] : [receipts.lastReceipt[i]! - a.at]));
    // Recovery: everything acknowledged up to 1 s after the process was ready again (or after the
    // fault, when nothing restarts) delivered everywhere, measured from that moment.
    const from = readyAt ?? at;
    const early = window.flatMap((a, i) => (a.at <= from + 1000 ? [receipts.lastReceipt[i]] : []));
    const recovered = early.some((r) => r == null) ? null : Math.max(0, Math.max(from, ...(early as number[])) - from);
    const f: FaultFigures = {
      fault,
      events: window.length,
      p50: pct(lat, 50),
      max: lat.length === window.length ? Math.max(...lat) : null,
      restartedAfter: readyAt ? readyAt - at : null,
      recoveredAfter: recovered,
    };
    figures.push(f);
    log(`${fault}: ${f.events} events acknowledged around it: ack→delivered p50 ${secs(f.p50)}, max ${secs(f.max)}; recovered ${secs(f.recoveredAfter)} after ${readyAt ? "the restart" : "the fault"}`);
    await sleep(2000);
  };

  try {
    await farm.verifyAs({ serverName: gh.serverName, keyId: gh.keyId, publicKeyBase64: Buffer.from(gh.publicKey).toString("base64").replace(/=+$/, "") });
    const roomId = await createRoom(gh, { preset: "public_chat", name: "faults" });
    const joins = await joinSinks(gh, farm, roomId, Array.from({ length: SINKS }, (_, i) => i));
    start = Date.now();
    log(`${joins.size} servers joined ${roomId}`);

    traffic = (async () => {
      let n = 0;
      while (!stop) {
        const due = start + n * (1000 / RATE);
        const wait = due - Date.now();
        if (wait > 0) await sleep(wait);
        const r = await gh.admin("POST", `/rooms/${enc(roomId)}/send/m.room.message`, { content: { msgtype: "m.text", body: `fault ${n++}` } }).catch(() => ({ status: 0, body: null }));
        if (r.status === 200) acked.push({ id: r.body.event_id, at: Date.now() });
        else sendFailures++;
      }
    })();
    await sleep(3000);

    const catchUps: { fault: string; seconds: number | null }[] = [];
    if (topology === "default") {
      await processFault("kill -9 serve, restart at once", async () => {
        await gh.kill9();
        await gh.launch();
        return Date.now();
      });
      await processFault("SIGTERM serve (rolling restart), restart", async () => {
        await gh.stopServe("SIGTERM");
        await gh.launch();
        return Date.now();
      });
      await processFault("restart redis (SIGTERM, AOF on, 1 s down)", async () => {
        await redis.restart(1000);
        return Date.now();
      });
      const recentIds = async (sinceCount: number) => (await acceptedTimeline(redis.url, roomId)).slice(sinceCount).map((t) => t.eventId);
      const group = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i).filter((i) => i < SINKS);
      const scenarios: { fault: string; mode: "fail" | "hang" | "down"; indices: number[]; seconds: number }[] = [
        { fault: "HTTP 500 for 5 s", mode: "fail", indices: group(0, 5), seconds: 5 },
        { fault: "hang for 5 s", mode: "hang", indices: group(5, 5), seconds: 5 },
        { fault: "down (refused) for 10 s", mode: "down", indices: group(10, 5), seconds: 10 },
      ];
      for (const s of scenarios) {
        const before = (await acceptedTimeline(redis.url, roomId)).length;
        log(`${s.indices.length} destinations: ${s.fault}`);
        await farm.mode(s.indices, s.mode);
        await sleep(s.seconds * 1000);
        const ids = await recentIds(before);
        await farm.mode(s.indices, "ok", { release: "destroy" });
        const t = await catchUpSeconds(farm, s.indices, ids, 60_000);
        catchUps.push({ fault: s.fault, seconds: t });
        log(`${s.fault}: back; caught up with the ${ids.length} events of the outage in ${t === null ? "> 60 s" : `${t.toFixed(2)} s`}`);
        await sleep(2000);
      }
    } else {
      await processFault("kill -9 worker A (not restarted)", async () => {
        await gh.killWorker9(workers[0]!);
        return null;
      });
      await processFault("kill -9 worker B, restart it at once", async () => {
        await gh.killWorker9(workers[1]!);
        workers[1] = await gh.startWorker(workerEnv("worker-b"));
        return Date.now();
      });
      await processFault("SIGTERM worker B (rolling restart), restart", async () => {
        await gh.stopWorker(workers[1]!, "SIGTERM");
        workers[1] = await gh.startWorker(workerEnv("worker-b"));
        return Date.now();
      });
      await processFault("kill -9 serve (gateway only), restart", async () => {
        await gh.kill9();
        await gh.launch();
        return Date.now();
      });
    }

    stop = true;
    await traffic;
    log(`traffic stopped: ${acked.length} events acknowledged, ${sendFailures} admin sends failed (gateway or Redis down)`);

    const timeline = await acceptedTimeline(redis.url, roomId);
    const inTimeline = new Set(timeline.map((t) => t.eventId));
    const ackLost = acked.filter((a) => !inTimeline.has(a.id)).length;
    const expected = expectedDeliveries(timeline, joins);
    const drain = await waitDelivered(farm, expected, 120_000);
    const report = await checkDeliveries(farm, expected);
    const stats = await farm.stats();
    const bad = stats.perDest.reduce((a, d) => a + d.badSignatures, 0);
    const errors = gh.allLogFiles().flatMap((f) => gh.logLines(50, f));

    console.log(`\n### ${topology}: summary\n`);
    console.log("| fault | events around it | ack→delivered p50 | max | restarted after | recovered after |");
    console.log("|---|---|---|---|---|---|");
    for (const f of figures) console.log(`| ${f.fault} | ${f.events} | ${secs(f.p50)} | ${secs(f.max)} | ${secs(f.restartedAfter)} | ${secs(f.recoveredAfter)} |`);
    console.log(`\ntimeline: ${timeline.length} accepted events; ${report.expected} expected deliveries to ${report.destinations} servers; final drain ${drain === null ? "DID NOT COMPLETE in 120 s" : `${drain.toFixed(1)} s`}`);
    console.log(`PDUs lost: ${report.missing}`);
    console.log(`PDUs delivered under a second txnId: ${report.dupAcrossTxns}`);
    console.log(`acknowledged events missing from the timeline: ${ackLost}`);
    console.log(`bad X-Matrix signatures at the sinks: ${bad}; unexpected extra PDUs: ${report.extra}`);
    for (const w of report.worst) console.log(`  ${w}`);
    for (const c of catchUps) console.log(`catch-up after "${c.fault}": ${c.seconds === null ? "> 60 s" : `${c.seconds.toFixed(2)} s`}`);
    console.log(`error log lines (serve + workers): ${errors.length}`);
    for (const e of errors.slice(0, 10)) console.log(`  ${e.msg} ${e.err ?? e.error ?? ""}`);
    const ok = report.missing === 0 && report.dupAcrossTxns === 0 && ackLost === 0 && drain !== null;
    const recoveryMet = figures.every((f) => f.recoveredAfter !== null && f.recoveredAfter < 5000) && catchUps.every((c) => c.seconds !== null && c.seconds < 5);
    const verdict = `${topology}: ${ok ? "PASS" : "FAIL"} (lost ${report.missing}, second txnId ${report.dupAcrossTxns}; recovery target < 5 s: ${recoveryMet ? "met" : "NOT met"})`;
    console.log(`\nverdict: ${verdict}`);
    summaries.push(verdict);
    return ok;
  } finally {
    stop = true;
    await traffic.catch(() => undefined);
    await farm.stop();
    await gh.stop();
    await redis.stop();
    if (!process.env.FAULT_KEEP) {
      gh.cleanup();
      redis.cleanup();
    } else console.log(`kept: ${gh.dataDir} ${redis.dir}`);
  }
}
