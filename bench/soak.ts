/**
 * `npm run soak` (node --import tsx bench/soak.ts): Gatehouse under mixed traffic for
 * SOAK_SECONDS (default 1800).
 *
 * One knock room with 100 remote servers joined (a sink farm, one process, 100 server names),
 * 10 of which misbehave in cycles (5 answer 500, 5 hang until Gatehouse's request timeout, for
 * 10 s of every 30 s). Traffic: admin messages (10/s) and knock flows by users of 4 more fake
 * servers — knock, then rescind (send_leave), accept + join, deny, or stay pending. Everything
 * fans out to the 100 servers.
 *
 * SOAK_USERS=N bounds the room: knockers are drawn from N users per run (reused in turn), and a
 * user who joined leaves again, so the room's state stops growing after the first round (events
 * still accumulate in Redis). With a bounded room, Gatehouse's memory must be flat.
 *
 * Checks, printed as a summary: no error other than the injected ones (our requests, Gatehouse's
 * log), RSS and Redis memory sampled (flat?), and every accepted event delivered to every server
 * that was in the room exactly once (never under a second txnId), compared with the timeline.
 */
import { freePort, GatehouseProc, pinSelf, RedisProc, rssOf, sleep } from "./lib/procs.js";
import { SinkFarm } from "./lib/sink-farm-client.js";
import { Conn } from "./lib/loadgen.js";
import { handshake, HandshakeError, enc } from "./lib/fed.js";
import { acceptedTimeline, checkDeliveries, createRoom, expectedDeliveries, joinSinks, waitDelivered } from "./lib/scenario.js";
import { existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const SECONDS = Number(process.env.SOAK_SECONDS ?? "1800");
const SINKS = Number(process.env.SOAK_SINKS ?? "100");
const KNOCKERS = 4;
/** 0 = every knock by a new user (the room grows all along); N = users reused in turn, joins leave again. */
const USERS = Number(process.env.SOAK_USERS ?? "0");
const FAILING = Array.from({ length: Number(process.env.SOAK_FAILING ?? Math.round(SINKS * 0.05)) }, (_, i) => i);
const HANGING = Array.from({ length: Number(process.env.SOAK_HANGING ?? Math.round(SINKS * 0.05)) }, (_, i) => FAILING.length + i);
const SENDER_ENV = {
  GATEHOUSE_FEDERATION_TIMEOUT_MS: "5000",
  GATEHOUSE_SENDER_BACKOFF_INITIAL_MS: "500",
  GATEHOUSE_SENDER_BACKOFF_MAX_MS: "10000",
};

pinSelf();
const fmtMB = (b: number) => `${(b / 1048576).toFixed(1)} MB`;
console.log(
  `# soak: ${SECONDS} s, ${SINKS} servers in the room (${FAILING.length} failing, ${HANGING.length} hanging in cycles), ` +
    `${USERS > 0 ? `bounded room (${USERS} knocking users reused, joins leave again)` : "growing room (a new user per knock)"}, ${new Date().toISOString()}`,
);

// V8's heap cap as in deploy/ (the ConfigMap's NODE_OPTIONS): without one V8 grows the heap
// lazily towards its default limit and RSS says more about its GC heuristics than about leaks.
const HEAP_MB = process.env.SOAK_MAX_OLD_SPACE_MB ?? "256";
// The memory probe (bench/lib/mem-probe.mjs, preloaded into Gatehouse): one line per
// SOAK_MEM_INTERVAL_MS (default 60 s) with RSS, V8 heap committed/used, external, arrayBuffers and
// the native remainder, kept in SOAK_MEM_FILE (default: a file in the temp folder, printed).
const MEM_FILE = process.env.SOAK_MEM_FILE ?? join(tmpdir(), `gatehouse-soak-mem-${process.pid}.jsonl`);
const probe = fileURLToPath(new URL("./lib/mem-probe.mjs", import.meta.url));
const metricsPort = await freePort();
const redis = await RedisProc.start({ aof: false });
const gh = await GatehouseProc.start({
  redisUrl: redis.url,
  env: { ...SENDER_ENV, GATEHOUSE_METRICS_LISTEN: `127.0.0.1:${metricsPort}`, MEM_PROBE_FILE: MEM_FILE, MEM_PROBE_INTERVAL_MS: process.env.SOAK_MEM_INTERVAL_MS ?? "60000" },
  nodeArgs: [...(HEAP_MB ? [`--max-old-space-size=${HEAP_MB}`] : []), "--import", probe],
});
/**
 * Gatehouse's own view of its memory (prom-client's process metrics): V8 heap used and external,
 * and its caches bounded by GATEHOUSE_CACHE_MAX_BYTES (gatehouse_cache_bytes / _entries, by cache).
 */
async function processMemory(): Promise<{ heap: number; external: number; caches: Record<string, { bytes: number; entries: number }> }> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const value = (name: string) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text)?.[1] ?? NaN);
  const caches: Record<string, { bytes: number; entries: number }> = {};
  for (const m of text.matchAll(/^gatehouse_cache_(bytes|entries)\{cache="([^"]+)"\} (\S+)$/gm)) {
    const c = (caches[m[2]!] ??= { bytes: 0, entries: 0 });
    c[m[1] as "bytes" | "entries"] = Number(m[3]);
  }
  return { heap: value("gatehouse_nodejs_heap_size_used_bytes"), external: value("gatehouse_nodejs_external_memory_bytes"), caches };
}
const fmtCaches = (caches: Record<string, { bytes: number; entries: number }>) =>
  `caches ${fmtMB(Object.values(caches).reduce((a, c) => a + c.bytes, 0))} (${Object.entries(caches).map(([k, c]) => `${k} ${fmtMB(c.bytes)}/${c.entries}`).join(", ")})`;
const farm = await SinkFarm.start(SINKS + KNOCKERS);
const counts: Record<string, number> = {};
const unexpected: Record<string, number> = {};
const count = (k: string) => (counts[k] = (counts[k] ?? 0) + 1);
const problem = (k: string) => (unexpected[k] = (unexpected[k] ?? 0) + 1);
let stopping = false;

try {
  await farm.verifyAs({ serverName: gh.serverName, keyId: gh.keyId, publicKeyBase64: Buffer.from(gh.publicKey).toString("base64").replace(/=+$/, "") });
  const roomId = await createRoom(gh, { preset: "public_chat", name: "soak" });
  const sinkIdx = Array.from({ length: SINKS }, (_, i) => i);
  const joins = await joinSinks(gh, farm, roomId, sinkIdx);
  const jr = await gh.admin("PUT", `/rooms/${enc(roomId)}/state/m.room.join_rules`, { content: { join_rule: "knock" } });
  if (jr.status !== 200) throw new Error(`join rules: ${JSON.stringify(jr.body)}`);
  console.log(`# room ${roomId}: ${joins.size} servers joined; join rule knock`);

  // --- samplers ------------------------------------------------------------------------------------
  const samples: { t: number; rss: number; redis: number; heap: number; external: number; caches: Record<string, { bytes: number; entries: number }> }[] = [];
  const t0 = Date.now();
  const sampler = setInterval(() => {
    void Promise.all([redis.usedMemory(), processMemory()]).then(
      ([m, p]) => samples.push({ t: (Date.now() - t0) / 1000, rss: rssOf(gh.pid) ?? 0, redis: m, heap: p.heap, external: p.external, caches: p.caches }),
      () => undefined,
    );
  }, 5000);

  // --- misbehaving servers: 10 s of every 30 s -----------------------------------------------------------
  const faults = (async () => {
    while (!stopping) {
      await farm.mode(FAILING, "fail");
      await farm.mode(HANGING, "hang");
      await sleep(10_000);
      await farm.mode(FAILING, "ok");
      await farm.mode(HANGING, "ok", { release: "destroy" });
      for (let i = 0; i < 20 && !stopping; i++) await sleep(1000);
    }
    await farm.mode([...FAILING, ...HANGING], "ok", { release: "destroy" });
  })();

  // --- traffic -------------------------------------------------------------------------------------------
  const deadline = Date.now() + SECONDS * 1000;
  const messages = (async () => {
    let n = 0;
    while (Date.now() < deadline) {
      const r = await gh.admin("POST", `/rooms/${enc(roomId)}/send/m.room.message`, { content: { msgtype: "m.text", body: `soak ${n++}` } }).catch((e: Error) => ({ status: 0, body: e.message }));
      if (r.status === 200) count("message");
      else problem(`admin send: ${r.status} ${JSON.stringify(r.body).slice(0, 120)}`);
      await sleep(100);
    }
  })();
  let userSeq = 0;
  const knockFlow = async (w: number) => {
    const conn = new Conn("127.0.0.1", gh.federationPort);
    while (Date.now() < deadline) {
      const n = USERS > 0 ? userSeq++ % USERS : userSeq++;
      const server = farm.server(SINKS + (n % KNOCKERS));
      const user = `@u${n}:${server.serverName}`;
      try {
        await handshake(conn, server, gh.serverName, "knock", roomId, user, { reason: "soak" });
        count("knock");
        await sleep(Math.random() * 200);
        const r = Math.random();
        if (r < 0.35) {
          await handshake(conn, server, gh.serverName, "leave", roomId, user);
          count("rescind");
        } else if (r < 0.65) {
          const a = await gh.admin("POST", `/rooms/${enc(roomId)}/knocks/${enc(user)}/accept`, {});
          if (a.status !== 200) problem(`accept: ${a.status} ${JSON.stringify(a.body).slice(0, 120)}`);
          else {
            count("accept");
            await handshake(conn, server, gh.serverName, "join", roomId, user);
            count("join");
            if (USERS > 0) {
              await sleep(Math.random() * 200);
              await handshake(conn, server, gh.serverName, "leave", roomId, user);
              count("leave");
            }
          }
        } else if (r < 0.8) {
          const d = await gh.admin("POST", `/rooms/${enc(roomId)}/knocks/${enc(user)}/deny`, { reason: "soak" });
          if (d.status !== 200) problem(`deny: ${d.status} ${JSON.stringify(d.body).slice(0, 120)}`);
          else count("deny");
        } else count("pending");
      } catch (e) {
        problem(e instanceof HandshakeError ? `${e.step}: ${e.status} ${e.body.slice(0, 120)}` : `knock flow ${w}: ${(e as Error).message}`);
      }
      await sleep(150);
    }
    conn.close();
  };
  const progress = setInterval(() => {
    const s = samples[samples.length - 1];
    console.log(`  t=${Math.round((Date.now() - t0) / 1000)} s: ${JSON.stringify(counts)}${s ? `, RSS ${fmtMB(s.rss)}, heap ${fmtMB(s.heap)}, external ${fmtMB(s.external)}, Redis ${fmtMB(s.redis)}, ${fmtCaches(s.caches)}` : ""}`);
  }, Math.max(10_000, Math.min(60_000, SECONDS * 100)));
  await Promise.all([messages, knockFlow(0), knockFlow(1), knockFlow(2)]);
  stopping = true;
  await faults;
  clearInterval(progress);
  const trafficEnd = Date.now();

  // --- drain and check ----------------------------------------------------------------------------------
  const timeline = await acceptedTimeline(redis.url, roomId);
  const expected = expectedDeliveries(timeline, joins);
  const drainSeconds = await waitDelivered(farm, expected, 180_000);
  clearInterval(sampler);
  const report = await checkDeliveries(farm, expected);
  const stats = await farm.stats(true);
  const bad = stats.perDest.reduce((a, d) => a + d.badSignatures, 0);
  const lat = [...stats.latencies].sort((a, b) => a - b);
  const pct = (p: number) => lat[Math.min(lat.length - 1, Math.ceil((p / 100) * lat.length) - 1)] ?? NaN;

  // Gatehouse's own log: errors, and warnings other than the injected failures.
  const injected = /HTTP 500|timed out|timeout|socket hang up|ECONNRESET|aborted|closed/i;
  const logWarn: Record<string, number> = {};
  const logErr: Record<string, number> = {};
  let injectedWarnings = 0;
  for (const l of gh.logLines(40)) {
    const key = `${l.msg}${l.err ? `: ${String(l.err).slice(0, 100)}` : ""}${l.error ? `: ${String(l.error).slice(0, 100)}` : ""}`;
    if (l.level >= 50) logErr[key] = (logErr[key] ?? 0) + 1;
    else if (l.msg === "transaction failed; backing off" && injected.test(String(l.error)) && [...FAILING, ...HANGING].some((i) => l.destination === farm.servers[i])) injectedWarnings++;
    else if (!/self-signed TLS certificate/.test(l.msg)) logWarn[key] = (logWarn[key] ?? 0) + 1;
  }

  const rssStart = samples[0]?.rss ?? 0;
  const rssEnd = samples[samples.length - 1]?.rss ?? 0;
  const rssMax = Math.max(...samples.map((s) => s.rss));
  const n = samples.length;
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  /** Least-squares slope of `pick` over time, in MB/min, for all samples or the second half (after warm-up). */
  const slopeOf = (pick: (s: (typeof samples)[number]) => number, secondHalf: boolean): number => {
    const xs = secondHalf ? samples.slice(Math.floor(n / 2)) : samples;
    if (xs.length < 3) return 0;
    const tx = xs.map((s) => s.t);
    const ty = xs.map(pick);
    const slope = tx.reduce((a, t, i) => a + (t - mean(tx)) * (ty[i]! - mean(ty)), 0) / tx.reduce((a, t) => a + (t - mean(tx)) ** 2, 0);
    return (slope * 60) / 1048576;
  };
  const slope = slopeOf((s) => s.rss, false);
  const slope2 = slopeOf((s) => s.rss, true);

  console.log("\n## soak summary\n");
  console.log(`duration: ${SECONDS} s of traffic; drain after traffic: ${drainSeconds === null ? "DID NOT COMPLETE in 180 s" : `${drainSeconds.toFixed(1)} s`} (${((Date.now() - trafficEnd) / 1000).toFixed(1)} s incl. checks)`);
  console.log(`operations: ${JSON.stringify(counts)}`);
  console.log(`timeline: ${timeline.length} accepted events; expected deliveries ${report.expected} to ${report.destinations} servers`);
  console.log(`delivery: missing ${report.missing}, under a second txnId ${report.dupAcrossTxns}, unexpected extra ${report.extra}, bad signatures ${bad}`);
  for (const w of report.worst) console.log(`  ${w}`);
  console.log(`enqueue→delivered (all servers, misbehaving ones included): p50 ${pct(50)} ms, p90 ${pct(90)} ms, p99 ${pct(99)} ms, max ${lat[lat.length - 1]} ms; ${(stats.pdusPerTxn.reduce((a, b) => a + b, 0) / stats.pdusPerTxn.length).toFixed(2)} PDUs/txn`);
  console.log(`errors in our requests (not injected): ${Object.keys(unexpected).length ? JSON.stringify(unexpected) : "none"}`);
  console.log(`Gatehouse log: ${Object.values(logErr).reduce((a, b) => a + b, 0)} error lines, ${injectedWarnings} warnings for injected failures, other warnings: ${Object.keys(logWarn).length ? "" : "none"}`);
  for (const [k, v] of Object.entries(logErr)) console.log(`  ERROR ×${v}: ${k}`);
  for (const [k, v] of Object.entries(logWarn)) console.log(`  warn ×${v}: ${k}`);
  console.log(
    `RSS (V8 heap capped at ${HEAP_MB || "its default"} MB): first sample ${fmtMB(rssStart)}, last ${fmtMB(rssEnd)}, max ${fmtMB(rssMax)}; slope ${slope.toFixed(2)} MB/min overall, ${slope2.toFixed(2)} MB/min over the second half (${n} samples)`,
  );
  const heaps = samples.map((s) => s.heap);
  console.log(
    `V8 heap used: min ${fmtMB(Math.min(...heaps))}, max ${fmtMB(Math.max(...heaps))}, last ${fmtMB(heaps[n - 1] ?? 0)}; slope ${slopeOf((s) => s.heap, true).toFixed(2)} MB/min over the second half; ` +
      `external (Buffers): first ${fmtMB(samples[0]?.external ?? 0)}, last ${fmtMB(samples[n - 1]?.external ?? 0)}, slope ${slopeOf((s) => s.external, true).toFixed(2)} MB/min over the second half`,
  );
  console.log(`at the end: ${fmtCaches(samples[n - 1]?.caches ?? {})}`);
  printMemoryCurve(MEM_FILE);
  console.log(`Redis used_memory: first ${fmtMB(samples[0]?.redis ?? 0)}, last ${fmtMB(samples[n - 1]?.redis ?? 0)} (grows with the room: every event and member is kept)`);
  const ok = report.missing === 0 && report.dupAcrossTxns === 0 && bad === 0 && Object.keys(unexpected).length === 0 && Object.keys(logErr).length === 0 && drainSeconds !== null;
  console.log(`\nverdict: ${ok ? "PASS" : "FAIL"}`);
  process.exitCode = ok ? 0 : 1;
} finally {
  stopping = true;
  await farm.stop();
  await gh.stop();
  await redis.stop();
  if (!process.env.SOAK_KEEP) {
    gh.cleanup();
    redis.cleanup();
  } else console.log(`kept: ${gh.dataDir} ${redis.dir}`);
}

/** The probe's per-interval lines as a table (MB), with least-squares slopes over the second half. */
function printMemoryCurve(file: string): void {
  if (!existsSync(file)) return console.log(`memory probe: no samples in ${file}`);
  type P = { t: number; rss: number; heapTotal: number; heapUsed: number; external: number; arrayBuffers: number; v8Physical: number; rssAnon: number; rssFile: number; brkHeap: number; arena64: number; otherAnon: number; arenaCount: number; threads: number };
  const ps = readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as P);
  /** Native remainder: anonymous resident memory that is neither V8's heap nor ArrayBuffer contents. */
  const native = (p: P) => p.rssAnon - p.v8Physical - p.arrayBuffers;
  const mb = (b: number) => (b / 1048576).toFixed(1);
  console.log(`\nmemory curve (probe, ${file}): MB`);
  console.log("| t (min) | RSS | heap committed | heap used | external | arrayBuffers | native rest | brk heap | 64 MiB arenas (n) | threads |");
  console.log("|---|---|---|---|---|---|---|---|---|---|");
  for (const p of ps) console.log(`| ${(p.t / 60).toFixed(1)} | ${mb(p.rss)} | ${mb(p.heapTotal)} | ${mb(p.heapUsed)} | ${mb(p.external)} | ${mb(p.arrayBuffers)} | ${mb(native(p))} | ${mb(p.brkHeap)} | ${mb(p.arena64)} (${p.arenaCount}) | ${p.threads} |`);
  const half = ps.slice(Math.floor(ps.length / 2));
  const slope = (pick: (p: P) => number) => {
    if (half.length < 3) return NaN;
    const mx = half.reduce((a, p) => a + p.t, 0) / half.length;
    const my = half.reduce((a, p) => a + pick(p), 0) / half.length;
    return ((half.reduce((a, p) => a + (p.t - mx) * (pick(p) - my), 0) / half.reduce((a, p) => a + (p.t - mx) ** 2, 0)) * 60) / 1048576;
  };
  const f = (x: number) => x.toFixed(2);
  console.log(
    `slopes over the second half (MB/min): RSS ${f(slope((p) => p.rss))}, heap committed ${f(slope((p) => p.heapTotal))}, heap used ${f(slope((p) => p.heapUsed))}, ` +
      `external ${f(slope((p) => p.external))}, arrayBuffers ${f(slope((p) => p.arrayBuffers))}, native rest ${f(slope(native))}, brk heap ${f(slope((p) => p.brkHeap))}, 64 MiB arenas ${f(slope((p) => p.arena64))}`,
  );
}
