/**
 * `npm run faults` (node --import tsx bench/faults.ts): scripted fault runs against Gatehouse
 * deployed as `gatehouse serve` (GATEHOUSE_RUN_WORKERS=false) + a separate `gatehouse worker`,
 * both on an external redis-server with the append-only file on, while admin messages stream
 * into a room with FAULT_SINKS (default 20) remote servers (sink farm) at 20 events/s:
 *
 *   1. kill -9 the worker mid-traffic, start a new one (takes over after GATEHOUSE_SENDER_LOCK_MS);
 *   2. kill -9 the gateway (serve) mid-traffic, restart it;
 *   3. restart Redis (SIGTERM: AOF flushed; ~1 s down);
 *   4. destinations fail (HTTP 500) for 5 s, then come back;
 *   5. destinations hang (no answer) for 5 s, then come back (hung connections reset);
 *   6. destinations are down (connection refused) for 10 s, then come back.
 *
 * Reported: PDUs lost (accepted events a joined server never received; must be 0), PDUs
 * delivered under a second txnId (must be 0), acknowledged events missing from the timeline,
 * and the time each recovered destination group takes to catch up (target < 5 s).
 */
import { GatehouseProc, pinSelf, RedisProc, sleep } from "./lib/procs.js";
import { SinkFarm } from "./lib/sink-farm-client.js";
import { enc } from "./lib/fed.js";
import { acceptedTimeline, catchUpSeconds, checkDeliveries, createRoom, expectedDeliveries, joinSinks, waitDelivered } from "./lib/scenario.js";

const SINKS = Number(process.env.FAULT_SINKS ?? "20");
const RATE = 20;
/** Sender settings for this run (see bench/README.md, "Faults"). */
export const FAULT_ENV = {
  GATEHOUSE_SENDER_LOCK_MS: "2000",
  GATEHOUSE_SENDER_BACKOFF_INITIAL_MS: "250",
  GATEHOUSE_SENDER_BACKOFF_MAX_MS: "30000",
  GATEHOUSE_SENDER_SWEEP_INTERVAL_MS: "5000",
  GATEHOUSE_FEDERATION_TIMEOUT_MS: "3000",
  GATEHOUSE_SHUTDOWN_TIMEOUT_MS: "2000",
};

pinSelf();
console.log(`# faults: ${SINKS} servers, ${RATE} events/s, ${new Date().toISOString()}`);
console.log(`# settings: ${Object.entries(FAULT_ENV).map(([k, v]) => `${k}=${v}`).join(" ")}`);
const redis = await RedisProc.start({ aof: true });
const gh = await GatehouseProc.start({ redisUrl: redis.url, runWorkers: false, env: FAULT_ENV });
let worker = await gh.startWorker();
const farm = await SinkFarm.start(SINKS);
const log = (s: string) => console.log(`  [${((Date.now() - start) / 1000).toFixed(1)} s] ${s}`);
let start = Date.now();
const acknowledged: string[] = [];
let sendFailures = 0;
let stop = false;

try {
  await farm.verifyAs({ serverName: gh.serverName, keyId: gh.keyId, publicKeyBase64: Buffer.from(gh.publicKey).toString("base64").replace(/=+$/, "") });
  const roomId = await createRoom(gh, { preset: "public_chat", name: "faults" });
  const joins = await joinSinks(gh, farm, roomId, Array.from({ length: SINKS }, (_, i) => i));
  start = Date.now();
  log(`${joins.size} servers joined ${roomId}`);

  const traffic = (async () => {
    let n = 0;
    while (!stop) {
      const due = start + n * (1000 / RATE);
      const wait = due - Date.now();
      if (wait > 0) await sleep(wait);
      const r = await gh.admin("POST", `/rooms/${enc(roomId)}/send/m.room.message`, { content: { msgtype: "m.text", body: `fault ${n++}` } }).catch(() => ({ status: 0, body: null }));
      if (r.status === 200) acknowledged.push(r.body.event_id);
      else sendFailures++;
    }
  })();

  const catchUps: { fault: string; seconds: number | null }[] = [];
  /** Events accepted since `since` (stream order), for the catch-up check. */
  const recentIds = async (sinceCount: number) => (await acceptedTimeline(redis.url, roomId)).slice(sinceCount).map((t) => t.eventId);

  await sleep(3000);
  log("kill -9 worker");
  await gh.killWorker9(worker);
  await sleep(500);
  worker = await gh.startWorker();
  log("new worker started");
  await sleep(4000);

  log("kill -9 gatehouse serve");
  await gh.kill9();
  await gh.launch();
  log("gatehouse serve restarted");
  await sleep(3000);

  log("restart redis (SIGTERM, AOF on)");
  await redis.restart(1000);
  log("redis back");
  await sleep(4000);

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

  stop = true;
  await traffic;
  log(`traffic stopped: ${acknowledged.length} events acknowledged, ${sendFailures} admin sends failed (gateway or Redis down)`);

  const timeline = await acceptedTimeline(redis.url, roomId);
  const inTimeline = new Set(timeline.map((t) => t.eventId));
  const ackLost = acknowledged.filter((id) => !inTimeline.has(id)).length;
  const expected = expectedDeliveries(timeline, joins);
  const drain = await waitDelivered(farm, expected, 120_000);
  const report = await checkDeliveries(farm, expected);
  const stats = await farm.stats();
  const bad = stats.perDest.reduce((a, d) => a + d.badSignatures, 0);
  const errors = gh.allLogFiles().flatMap((f) => gh.logLines(50, f));

  console.log("\n## fault-run summary\n");
  console.log(`timeline: ${timeline.length} accepted events; ${report.expected} expected deliveries to ${report.destinations} servers; final drain ${drain === null ? "DID NOT COMPLETE in 120 s" : `${drain.toFixed(1)} s`}`);
  console.log(`PDUs lost: ${report.missing}`);
  console.log(`PDUs delivered under a second txnId: ${report.dupAcrossTxns}`);
  console.log(`acknowledged events missing from the timeline: ${ackLost}`);
  console.log(`bad X-Matrix signatures at the sinks: ${bad}; unexpected extra PDUs: ${report.extra}`);
  for (const w of report.worst) console.log(`  ${w}`);
  for (const c of catchUps) console.log(`catch-up after "${c.fault}": ${c.seconds === null ? "> 60 s" : `${c.seconds.toFixed(2)} s`}`);
  console.log(`error log lines (serve + workers): ${errors.length}`);
  for (const e of errors.slice(0, 10)) console.log(`  ${e.msg} ${e.err ?? e.error ?? ""}`);
  const ok = report.missing === 0 && report.dupAcrossTxns === 0 && ackLost === 0 && drain !== null;
  console.log(`\nverdict: ${ok ? "PASS" : "FAIL"} (catch-up target < 5 s: ${catchUps.every((c) => c.seconds !== null && c.seconds < 5) ? "met" : "NOT met"})`);
  process.exitCode = ok ? 0 : 1;
} finally {
  stop = true;
  await farm.stop();
  await gh.stop();
  await redis.stop();
  if (!process.env.FAULT_KEEP) {
    gh.cleanup();
    redis.cleanup();
  } else console.log(`kept: ${gh.dataDir} ${redis.dir}`);
}
