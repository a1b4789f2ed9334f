/**
 * Scale rows (issue #16): how Gatehouse's costs grow with the size of a room, each at three sizes
 * with the slope per unit of growth, and Synapse 1.160 beside it up to a size cap.
 *
 *  - scale-fanout: a room with N remote servers (sink-farm listeners on 127.0.0.1, each its own
 *    server name and key), joined over make_join/send_join; live p50/p99 (event accepted →
 *    delivered at each destination), backlog drain in deliveries/s (bench/fanout.ts), and Redis
 *    and live heap per destination (before the first join → after the joins' fan-out settled).
 *  - scale-room: a room of M members built through the real inbound write path: one remote
 *    server joins over make_join/send_join, then pushes M−1 join events of its users (chained,
 *    50 per PUT /send transaction, one in flight), and the build counts until the room's state
 *    holds every member. That server is their origin: it answers get_missing_events, /event,
 *    /state_ids, /state, /backfill and /event_auth about them (Synapse prunes its staging queue
 *    and fills the gap from the origin; sink-farm.ts). Then 3 new servers join: make_join and
 *    send_join latency and response size, then /state, /state_ids, /event_auth and
 *    /backfill (limit 100) at those joins, logged with their peak RSS; Redis and live heap per member (Synapse: SQLite
 *    pages in use and RSS); and cold start: the server stopped (Gatehouse: SIGTERM) and started
 *    again, time to its first answer (admin API; Synapse: client API) and to the first make_join
 *    served in the big room.
 *  - scale-knocks: a knock room with K pending knocks, made through make_knock/send_knock
 *    (8 connections, BENCH_SCALE_KNOCK_CONNS); then 50 more knocks one by one: make_knock and send_knock p50/p99; the knock
 *    list (admin GET /rooms/{id}/knocks; Synapse: client /members?membership=knock) latency and
 *    size; Redis bytes per pending knock.
 *
 * Gatehouse runs fresh (its own redis-server and `gatehouse serve`) for every size, with the
 * memory probe (bench/lib/mem-probe.mjs) preloaded: the live heap is V8's heapUsed after a full
 * GC the probe runs on SIGUSR2. The V8 heap is not capped here (a 100k-member room holds
 * ~120 MB of state cache). Synapse is one process for the whole row, a new room per size.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Conn, percentile } from "./lib/loadgen.js";
import { enc, handshake, HandshakeError, signedRequest, signEvent, type FakeServer } from "./lib/fed.js";
import { SinkFarm } from "./lib/sink-farm-client.js";
import { cpuSecondsOf, GatehouseProc, RedisProc, rssOf, sleep, waitUntil, type SynapseProc } from "./lib/procs.js";
import { fanoutBench, gatehouseFanoutTarget, synapseFanoutTarget, type FanoutFigures, type FanoutTarget } from "./fanout.js";
import { gatehouseTarget, ROOM_VERSION } from "./knock.js";
import { loadAverage, roomCounters } from "./inbound.js";
import { scaleSizes, slopes } from "./lib/slope.js";
import { describePdus } from "./lib/pdu-summary.js";
import { computeEventId } from "../src/protocol/event-hashing.js";
import { freePort } from "../src/embedded-redis.js";
import { getRoomVersion } from "../src/protocol/room-versions.js";
import type { Pdu } from "../src/protocol/pdu.js";
import { Redis } from "ioredis";

const fmt = (n: number | undefined, d = 0) => (n !== undefined && Number.isFinite(n) ? n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }) : "–");
const probe = fileURLToPath(new URL("./lib/mem-probe.mjs", import.meta.url));

/** A fresh Gatehouse (with its own redis-server) carrying the memory probe. */
class ProbedGatehouse {
  private constructor(
    readonly redis: RedisProc,
    readonly gh: GatehouseProc,
    private readonly memDir: string,
    /** Its /metrics (the knock row prints what the gatehouse_room_* counters moved by over the build). */
    readonly metricsUrl: string,
  ) {}

  static async start(): Promise<ProbedGatehouse> {
    const memDir = mkdtempSync(join(tmpdir(), "gatehouse-scale-mem-"));
    const redis = await RedisProc.start({ aof: false });
    const metricsPort = await freePort();
    const gh = await GatehouseProc.start({
      redisUrl: redis.url,
      logLevel: process.env.BENCH_LOG_LEVEL ?? "warn",
      env: { MEM_PROBE_FILE: join(memDir, "mem.jsonl"), MEM_PROBE_INTERVAL_MS: "3600000", MEM_PROBE_PEAK_MS: "10", GATEHOUSE_METRICS_LISTEN: `127.0.0.1:${metricsPort}` },
      // BENCH_GATEHOUSE_NODE_ARGS (e.g. --cpu-prof) still apply, after the probe.
      nodeArgs: ["--import", probe, ...(process.env.BENCH_GATEHOUSE_NODE_ARGS ? process.env.BENCH_GATEHOUSE_NODE_ARGS.split(" ") : [])],
    });
    return new ProbedGatehouse(redis, gh, memDir, `http://127.0.0.1:${metricsPort}/metrics`);
  }

  /** V8's heapUsed right after a full GC (the probe's SIGUSR2 sample). */
  async liveHeap(): Promise<number> {
    return (await this.gcSample()).heapUsed;
  }

  /** The probe's SIGUSR2 sample: the live heap after a full GC, and the peak heap since the last one. */
  async gcSample(): Promise<{ heapUsed: number; peakHeap: number }> {
    const file = join(this.memDir, "mem.jsonl");
    const count = () => readFileSync(file, "utf8").split("\n").filter((l) => l.includes('"gc":true')).length;
    let before = 0;
    try {
      before = count();
    } catch {
      /* no sample yet */
    }
    process.kill(this.gh.pid, "SIGUSR2");
    const line = await waitUntil(
      "the memory probe's GC sample",
      () => {
        try {
          const lines = readFileSync(file, "utf8").split("\n").filter((l) => l.includes('"gc":true'));
          return lines.length > before ? lines[lines.length - 1]! : null;
        } catch {
          return null;
        }
      },
      30_000,
      50,
    );
    const x = JSON.parse(line) as { heapUsed: number; peakHeap?: number };
    return { heapUsed: x.heapUsed, peakHeap: x.peakHeap ?? NaN };
  }

  /**
   * Where a room's Redis bytes go: `MEMORY USAGE` (exact, SAMPLES 0) of each of the room's keys
   * by family, and its state-groups hash split into whole groups and deltas (bytes of the JSON
   * values, count, entries).
   */
  async roomBytes(roomId: string): Promise<string> {
    const c = new Redis(this.redis.url, { maxRetriesPerRequest: 1 });
    try {
      const fam = new Map<string, number>();
      let cursor = "0";
      let sgKey: string | undefined;
      const glob = `*{${roomId.replace(/[*?[\]\\]/g, "\\$&")}}*`;
      do {
        const [next, keys] = await c.scan(cursor, "MATCH", glob, "COUNT", 1000);
        cursor = next;
        for (const k of keys) {
          const f = (k.slice(k.indexOf("}") + 1) || k).replace(/:(event|pdu):\$.*/, ":$1:<id>").replace(/^(:[a-z-]+:).*!.*$/, "$1<…>");
          if (f === ":state-groups") sgKey = k;
          fam.set(f, (fam.get(f) ?? 0) + Number(await c.call("MEMORY", "USAGE", k, "SAMPLES", "0")));
        }
      } while (cursor !== "0");
      const sg = { whole: { n: 0, bytes: 0, entries: 0 }, delta: { n: 0, bytes: 0, entries: 0 } };
      if (sgKey) {
        const key = sgKey;
        let hc = "0";
        do {
          const [next, kv] = await c.hscan(key, hc, "COUNT", 1000);
          hc = next;
          for (let i = 1; i < kv.length; i += 2) {
            const g = JSON.parse(kv[i]!) as { p?: string | null; d: Record<string, unknown> };
            const b = typeof g.p === "string" ? sg.delta : sg.whole;
            b.n++;
            b.bytes += kv[i]!.length;
            b.entries += Object.keys(g.d).length;
          }
        } while (hc !== "0");
      }
      const total = [...fam.values()].reduce((a, b) => a + b, 0);
      const parts = [...fam.entries()].sort((a, b) => b[1] - a[1]).map(([f, b]) => `${f} ${fmt(b / 1048576, 2)} MB`);
      return (
        `room keys ${fmt(total / 1048576, 1)} MB: ${parts.join(", ")}; state groups: ${fmt(sg.whole.n)} whole (${fmt(sg.whole.entries)} entries, ${fmt(sg.whole.bytes / 1048576, 2)} MB of JSON), ` +
        `${fmt(sg.delta.n)} deltas (${fmt(sg.delta.entries)} entries, ${fmt(sg.delta.bytes / 1048576, 2)} MB of JSON)`
      );
    } finally {
      c.disconnect();
    }
  }

  /** The scale-room row's view of this server (see ServerProbe). */
  probe(): ServerProbe {
    return {
      storeBytes: () => this.redis.usedMemory(),
      memoryBytes: () => this.liveHeap(),
      rss: () => rssOf(this.gh.pid) ?? NaN,
      pid: () => this.gh.pid,
      heapPeak: async () => {
        const x = await this.gcSample();
        return { live: x.heapUsed, peak: x.peakHeap };
      },
      restartFrom: async (root) => {
        await this.gh.stopServe("SIGTERM");
        const was = process.env.BENCH_GATEHOUSE_ROOT;
        process.env.BENCH_GATEHOUSE_ROOT = root;
        try {
          await this.gh.launch();
        } finally {
          if (was === undefined) delete process.env.BENCH_GATEHOUSE_ROOT;
          else process.env.BENCH_GATEHOUSE_ROOT = was;
        }
      },
      breakdown: (roomId) => this.roomBytes(roomId),
      stop: () => this.gh.stopServe("SIGTERM"),
      start: () => this.gh.launch(),
    };
  }

  async stop(): Promise<void> {
    await this.gh.stop();
    await this.redis.stop();
    this.gh.cleanup();
    this.redis.cleanup();
    rmSync(this.memDir, { recursive: true, force: true });
  }
}

export interface ScaleTable {
  title: string;
  unit: string;
  /** Slope printed per `per` units of size. */
  per: number;
  sizes: number[];
  rows: { metric: string; digits: number; gatehouse: (number | undefined)[]; synapse?: (number | undefined)[] }[];
}

/** A table: one column per size for each server, then the slope per `per` units. */
export function printScaleTable(t: ScaleTable): void {
  console.log(`\n### ${t.title} (load average ${loadAverage()})\n`);
  const head = ["metric", ...t.sizes.map((s) => `${fmt(s)} ${t.unit}`), `slope per ${fmt(t.per)} ${t.unit} (fit; steps)`];
  console.log(`| ${head.join(" | ")} |`);
  console.log(`|${head.map(() => "---").join("|")}|`);
  const line = (name: string, ys: (number | undefined)[], digits: number) => {
    const vals = ys.map((y) => (y === undefined ? NaN : y));
    const s = slopes(t.sizes, vals);
    const slope = Number.isFinite(s.fit) ? `${fmt(s.fit * t.per, digits + 1)} (${s.steps.map((x) => fmt(x * t.per, digits + 1)).join("; ")})` : "–";
    console.log(`| ${[name, ...vals.map((v) => fmt(v, digits)), slope].join(" | ")} |`);
  };
  for (const r of t.rows) {
    line(`${r.metric} — Gatehouse`, r.gatehouse, r.digits);
    if (r.synapse) line(`${r.metric} — Synapse`, r.synapse, r.digits);
  }
}

// ---------------------------------------------------------------------------------------------
// Fan-out to N destinations
// ---------------------------------------------------------------------------------------------

export async function scaleFanoutRow(opts: { sizes: number[]; synapse: SynapseProc | null; synapseMax: number; rate: number; seconds: number; backlog: number }): Promise<ScaleTable> {
  const g: { fig: FanoutFigures; redisPerDest: number; heapPerDest: number }[] = [];
  const s: (FanoutFigures | undefined)[] = [];
  for (const n of opts.sizes) {
    console.log(`\n## scale: fan-out to ${fmt(n)} destinations\n`);
    const p = await ProbedGatehouse.start();
    try {
      const redis0 = await p.redis.usedMemory();
      const heap0 = await p.liveHeap();
      let joined = { redis: NaN, heap: NaN };
      const fig = await fanoutBench(gatehouseFanoutTarget(p.gh), {
        servers: n,
        rate: opts.rate,
        seconds: opts.seconds,
        backlog: opts.backlog,
        redis: p.redis,
        gatehouse: p.gh,
        onJoined: async () => {
          joined = { redis: await p.redis.usedMemory(), heap: await p.liveHeap() };
        },
      });
      const per = { redisPerDest: (joined.redis - redis0) / n, heapPerDest: (joined.heap - heap0) / n };
      console.log(`  [Gatehouse] per destination (room with ${fmt(n)} servers joined, fan-out settled): Redis +${fmt(per.redisPerDest)} B, live heap +${fmt(per.heapPerDest)} B`);
      g.push({ fig, ...per });
    } finally {
      await p.stop();
    }
    s.push(opts.synapse && n <= opts.synapseMax ? await fanoutBench(await synapseFanoutTarget(opts.synapse), { servers: n, rate: opts.rate, seconds: opts.seconds, backlog: opts.backlog }) : undefined);
  }
  const syn = s.some(Boolean);
  return {
    title: `fan-out: live ${opts.rate} ev/s × ${opts.seconds} s, backlog ${opts.backlog} events`,
    unit: "destinations",
    per: 100,
    sizes: opts.sizes,
    rows: [
      { metric: "join all servers (s)", digits: 1, gatehouse: g.map((x) => x.fig.joinSeconds), ...(syn ? { synapse: s.map((x) => x?.joinSeconds) } : {}) },
      { metric: "live p50 (ms)", digits: 0, gatehouse: g.map((x) => x.fig.live.p50Ms), ...(syn ? { synapse: s.map((x) => x?.live.p50Ms) } : {}) },
      { metric: "live p99 (ms)", digits: 0, gatehouse: g.map((x) => x.fig.live.p99Ms), ...(syn ? { synapse: s.map((x) => x?.live.p99Ms) } : {}) },
      { metric: "drain (deliveries/s)", digits: 0, gatehouse: g.map((x) => x.fig.backlog.deliveriesPerSec), ...(syn ? { synapse: s.map((x) => x?.backlog.deliveriesPerSec) } : {}) },
      { metric: "Redis per destination (B)", digits: 0, gatehouse: g.map((x) => x.redisPerDest) },
      { metric: "live heap per destination (B)", digits: 0, gatehouse: g.map((x) => x.heapPerDest) },
      { metric: "Redis per queued PDU entry (B)", digits: 0, gatehouse: g.map((x) => x.fig.memory?.redisBytesPerQueuedPdu) },
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// A room of M members
// ---------------------------------------------------------------------------------------------

interface Timed {
  ms: number;
  bytes: number;
}

/** make_{kind} then send_{kind}, each timed, with its response size. */
async function timedHandshake(
  conn: Conn,
  from: FakeServer,
  destination: string,
  kind: "join" | "knock",
  roomId: string,
  userId: string,
  sendQuery = "",
): Promise<{ make: Timed; send: Timed; answer: Buffer }> {
  const ver = ["12", "11", "10"].map((v) => `ver=${v}`).join("&");
  const makePath = `/_matrix/federation/v1/make_${kind}/${enc(roomId)}/${enc(userId)}?${ver}`;
  const m0 = performance.now();
  const made = await conn.request(signedRequest(from, destination, "GET", makePath));
  const make = { ms: performance.now() - m0, bytes: made.body.length };
  if (made.status !== 200) throw new HandshakeError(`make_${kind}`, made.status, made.body.toString());
  const m = JSON.parse(made.body.toString()) as { room_version: string; event: Record<string, unknown> };
  const { pdu, eventId } = signEvent(from, m.event, m.room_version);
  const sendPath = kind === "knock" ? `/_matrix/federation/v1/send_knock/${enc(roomId)}/${enc(eventId)}` : `/_matrix/federation/v2/send_join/${enc(roomId)}/${enc(eventId)}${sendQuery}`;
  const req = signedRequest(from, destination, "PUT", sendPath, pdu);
  const s0 = performance.now();
  const sent = await conn.request(req);
  const send = { ms: performance.now() - s0, bytes: sent.body.length };
  if (sent.status !== 200) throw new HandshakeError(`send_${kind}`, sent.status, sent.body.toString().slice(0, 300));
  return { make, send, answer: sent.body };
}

interface RoomFigures {
  members: number;
  buildSeconds: number;
  buildPdusPerSec: number;
  makeJoinMs: number;
  sendJoinMs: number;
  sendJoinBytes: number;
  /** send_join?omit_members=true (a partial-state join, spec v1.6+). */
  sendJoinOmitMs: number;
  sendJoinOmitBytes: number;
  redisPerMember?: number;
  heapPerMember?: number;
  rssAfter?: number;
  /** Memory a full send_join answer costs (median of the joins): peak RSS and peak heap + external above what it was before the request. */
  sendJoinRssRise?: number;
  sendJoinHeapRise?: number;
  /** GET /state at the first joiner's join (the whole room's state): latency, size and memory. */
  stateMs?: number;
  stateBytes?: number;
  stateRssRise?: number;
  stateHeapRise?: number;
  /** The warm reads (the 2nd request, or the median of BENCH_SCALE_READ_REPEAT): /state_ids at the first join, /backfill limit=100 from the last. */
  stateIdsMs?: number;
  backfillMs?: number;
  /** The same send_join and /state figures (and the warm reads) with the code of BENCH_SCALE_ROOM_AB_ROOT, on the same room after a restart. */
  ab?: { sendJoinMs: number; sendJoinBytes: number; sendJoinRssRise: number; sendJoinHeapRise: number; stateMs: number; stateBytes: number; stateRssRise: number; stateHeapRise: number; stateIdsMs: number; backfillMs: number };
  coldStartMs?: number;
  coldFirstMakeJoinMs?: number;
}

/** Builds a room of `members` members on `target` through /send; measures 3 new servers joining. */
/** The server's own memory and cold start, measured around the build (Gatehouse and Synapse differ). */
interface ServerProbe {
  /** Before the bulk and after the build: bytes of the server's store (Redis used_memory; SQLite file). */
  storeBytes(): Promise<number>;
  /** Where the store's bytes for the room go (Gatehouse). */
  breakdown?(roomId: string): Promise<string>;
  /** Live heap (Gatehouse, after a full GC) or RSS (Synapse) of the server process. */
  memoryBytes(): Promise<number>;
  rss(): number;
  /** The server's process ID (its RSS is polled while a big answer is served). */
  pid?(): number;
  /** Gatehouse: a full GC, then the live heap and the peak heap (heapUsed + external) since the previous call. */
  heapPeak?(): Promise<{ live: number; peak: number }>;
  /** Gatehouse: stops the server and starts another checkout's code on the same Redis (BENCH_SCALE_ROOM_AB_ROOT). */
  restartFrom?(root: string): Promise<void>;
  /** Stops the server (its data kept). */
  stop(): Promise<void>;
  /** Starts it again; resolves when it answers (Gatehouse: admin API; Synapse: client API, polled every 0.5 s). */
  start(): Promise<void>;
}

async function bigRoom(target: FanoutTarget, members: number, joinedCount: (roomId: string) => Promise<number>, perTxn: number, probed?: ServerProbe): Promise<RoomFigures> {
  const log = (s: string) => console.log(`  [${target.name}] ${s}`);
  const version = getRoomVersion(ROOM_VERSION)!;
  const JOINERS = 3;
  // The bulk server, JOINERS full joins, JOINERS partial-state joins, one cold-start joiner.
  // (and JOINERS more for BENCH_SCALE_ROOM_AB_ROOT's full joins).
  const farm = await SinkFarm.start(1 + 3 * JOINERS + 1, ROOM_VERSION);
  try {
    await farm.verifyAs(target.identity);
    const roomId = await target.createPublicRoom();
    let conn = new Conn("127.0.0.1", target.port);
    const bulk = farm.server(0);
    const { eventId: firstJoin, pdu: joinPdu, response } = await handshake(conn, bulk, target.serverName, "join", roomId, `@m0:${bulk.serverName}`);
    const state = (response as { state: Pdu[] }).state;
    const idOf = (type: string) => {
      const e = state.find((x) => x.type === type && x.state_key === "");
      if (!e) throw new Error(`${target.name}: send_join state has no ${type}`);
      return computeEventId(e, version);
    };
    const authEvents = [idOf("m.room.power_levels"), idOf("m.room.join_rules")];
    // The bulk server is the origin of every join it pushes: it answers get_missing_events,
    // /event, /state_ids, /state, /backfill about them (Synapse asks; see sink-farm.ts).
    await farm.originRoom(roomId, ROOM_VERSION, state, (response as { auth_chain: Pdu[] }).auth_chain);
    await farm.originEvents(roomId, [[firstJoin, joinPdu]]);
    const redis0 = probed ? await probed.storeBytes() : 0;
    const heap0 = probed ? await probed.memoryBytes() : 0;

    // --- the bulk: members−1 joins pushed through /send, 50 per transaction, one in flight --------
    let prev = firstJoin;
    let depth = joinPdu.depth as number;
    const t0 = Date.now();
    const txnOf = (start: number): { req: Buffer; built: [string, Pdu][] } => {
      const pdus: Pdu[] = [];
      const built: [string, Pdu][] = [];
      for (let i = start; i < Math.min(members, start + perTxn); i++) {
        const user = `@m${i}:${bulk.serverName}`;
        const { pdu, eventId } = signEvent(
          bulk,
          { type: "m.room.member", state_key: user, room_id: roomId, sender: user, content: { membership: "join" }, prev_events: [prev], auth_events: authEvents, depth: ++depth, origin_server_ts: t0 + i },
          ROOM_VERSION,
        );
        prev = eventId;
        pdus.push(pdu);
        built.push([eventId, pdu]);
      }
      return { built, req: signedRequest(bulk, target.serverName, "PUT", `/_matrix/federation/v1/send/${enc(`bulk${t0.toString(36)}-${start}`)}`, { origin: bulk.serverName, origin_server_ts: Date.now(), pdus }) };
    };
    let refused = 0;
    let firstError: string | undefined;
    const b0 = performance.now();
    let next = txnOf(1);
    for (let start = 1; start < members; start += perTxn) {
      await farm.originEvents(roomId, next.built);
      const pending = conn.request(next.req);
      // Sign the next transaction while this one is in flight.
      if (start + perTxn < members) next = txnOf(start + perTxn);
      const res = await pending;
      if (res.status !== 200) throw new Error(`${target.name} /send: HTTP ${res.status} ${res.body.toString().slice(0, 300)}`);
      for (const r of Object.values((JSON.parse(res.body.toString()) as { pdus: Record<string, { error?: string }> }).pdus)) {
        if (r.error) {
          refused++;
          firstError ??= r.error;
        }
      }
      if ((start - 1) % 10_000 === 0 && start > 1) log(`  … ${fmt(start)} members pushed (${fmt(start / ((performance.now() - b0) / 1000))} joins/s)`);
    }
    if (refused) throw new Error(`${target.name}: ${refused} bulk joins refused (first: ${firstError})`);
    // A server may answer /send before it processed the PDUs (Synapse stages them): wait until the
    // room's state holds every member (or stops growing for 30 s: then the figures are not valid).
    // The room's creator plus the `members` users of the bulk server.
    const expected = members + 1;
    let joined = 0;
    let lastGrowth = performance.now();
    for (;;) {
      const n = await joinedCount(roomId);
      if (n > joined) lastGrowth = performance.now();
      joined = n;
      if (joined >= expected || performance.now() - lastGrowth > 30_000) break;
      await sleep(500);
    }
    const buildSeconds = (performance.now() - b0) / 1000;
    if (joined < expected) throw new Error(`${target.name}: only ${fmt(joined)} of ${fmt(expected)} members (the creator and ${fmt(members)} pushed) in the room's state after the /send pushes`);
    log(`room of ${fmt(members)} members built through /send in ${fmt(buildSeconds, 1)} s (${fmt((members - 1) / buildSeconds)} joins/s); ${fmt(joined)} joined members in the room's state`);

    const asked = Object.entries(await farm.served()).map(([k, v]) => `${k} ${fmt(v.requests)} (${fmt(v.events)} events${v.notFound ? `, ${fmt(v.notFound)} × 404` : ""})`);
    log(`asked the origin during the build: ${asked.length ? asked.join(", ") : "nothing"}`);

    const fig: RoomFigures = { members, buildSeconds, buildPdusPerSec: (members - 1) / buildSeconds, makeJoinMs: NaN, sendJoinMs: NaN, sendJoinBytes: NaN, sendJoinOmitMs: NaN, sendJoinOmitBytes: NaN };
    if (probed) {
      fig.redisPerMember = ((await probed.storeBytes()) - redis0) / (members - 1);
      fig.heapPerMember = ((await probed.memoryBytes()) - heap0) / (members - 1);
      if (probed.breakdown) log(await probed.breakdown(roomId));
      log(`per member: ${target.name === "Synapse" ? "SQLite (pages in use)" : "Redis"} +${fmt(fig.redisPerMember)} B, ${target.name === "Synapse" ? "RSS" : "live heap"} +${fmt(fig.heapPerMember)} B`);
    }

    // --- 3 new servers join: make_join / send_join ----------------------------------------------------
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    /**
     * What a big answer costs the server's memory: its RSS polled every 10 ms from here, and
     * (Gatehouse) the probe's peak heap + external, both above what they were just before the
     * request (a full GC first, through the probe).
     */
    const memoryOf = async <T>(fn: () => Promise<T>): Promise<{ out: T; rssRise: number; heapRise: number }> => {
      const h0 = probed?.heapPeak ? await probed.heapPeak() : undefined;
      const pid = probed?.pid?.();
      const rss0 = pid ? (rssOf(pid) ?? NaN) : NaN;
      let peak = rss0;
      const poll = setInterval(() => {
        if (pid) peak = Math.max(peak, rssOf(pid) ?? NaN);
      }, 10);
      let out: T;
      try {
        out = await fn();
      } finally {
        clearInterval(poll);
      }
      const h1 = probed?.heapPeak ? await probed.heapPeak() : undefined;
      return { out, rssRise: peak - rss0, heapRise: h0 && h1 ? h1.peak - h0.live : NaN };
    };
    /** JOINERS full send_joins (servers first, first + 1, …), then GET /state at the first one's join. */
    const fullJoins = async (first: number, tag: string) => {
      const joins: { make: Timed; send: Timed; rssRise: number; heapRise: number; eventId: string }[] = [];
      for (let k = first; k < first + JOINERS; k++) {
        const s = farm.server(k);
        const m = await memoryOf(() => timedHandshake(conn, s, target.serverName, "join", roomId, `@${tag}:${s.serverName}`));
        const event = (JSON.parse(m.out.answer.toString()) as { event: Pdu }).event;
        joins.push({ ...m.out, rssRise: m.rssRise, heapRise: m.heapRise, eventId: computeEventId(event, version) });
      }
      // /state before the first joiner's join: the whole room's state and its auth chain.
      const s = farm.server(first);
      const st = await memoryOf(async () => {
        const t0s = performance.now();
        const r = await conn.request(signedRequest(s, target.serverName, "GET", `/_matrix/federation/v1/state/${enc(roomId)}?event_id=${enc(joins[0]!.eventId)}`));
        if (r.status !== 200) throw new Error(`${target.name} /state: HTTP ${r.status} ${r.body.toString().slice(0, 300)}`);
        const pdus = (JSON.parse(r.body.toString()) as { pdus: unknown[] }).pdus.length;
        return { ms: performance.now() - t0s, bytes: r.body.length, pdus };
      });
      // The other reads a peer makes about the big room, each twice (the second with the
      // server's caches warm from the first: a restarted "after" server starts cold): /state_ids
      // at the first join (the whole state's IDs), /event_auth of the last join, /backfill of
      // 100 events from it. The figures kept are the second's.
      // BENCH_SCALE_READ_REPEAT=N (default 1): the warm request asked N times, the median kept
      // (single requests on a loaded 2-core machine vary several-fold).
      const repeat = Math.max(1, Number(process.env.BENCH_SCALE_READ_REPEAT ?? "1") || 1);
      const get = async (what: string, uri: string) => {
        await getOnce(`${what} (1st)`, uri);
        if (repeat === 1) return getOnce(`${what} (2nd)`, uri);
        const runs: Awaited<ReturnType<typeof getOnce>>[] = [];
        for (let i = 0; i < repeat; i++) runs.push(await getOnce(`${what} (warm ${i + 1} of ${repeat})`, uri, i === 0));
        runs.sort((x, y) => x.out.ms - y.out.ms);
        const m = runs[Math.floor(runs.length / 2)]!;
        log(`  ${what} (warm, median of ${repeat}): ${fmt(m.out.ms, 1)} ms (min ${fmt(runs[0]!.out.ms, 1)}, max ${fmt(runs[runs.length - 1]!.out.ms, 1)}), peak RSS +${fmt(m.rssRise / 1048576, 1)} MB, peak heap+external +${fmt(m.heapRise / 1048576, 1)} MB`);
        return m;
      };
      const getOnce = async (what: string, uri: string, verbose = true) => {
        const m = await memoryOf(async () => {
          const t0s = performance.now();
          const r = await conn.request(signedRequest(s, target.serverName, "GET", uri));
          if (r.status !== 200) throw new Error(`${target.name} ${what}: HTTP ${r.status} ${r.body.toString().slice(0, 300)}`);
          const body = JSON.parse(r.body.toString()) as { pdus?: unknown };
          return { ms: performance.now() - t0s, bytes: r.body.length, pdus: Array.isArray(body.pdus) ? (body.pdus as Pdu[]) : undefined };
        });
        if (verbose) log(`  ${what}: ${fmt(m.out.ms)} ms, ${fmt(m.out.bytes / 1024)} kB, peak RSS +${fmt(m.rssRise / 1048576, 1)} MB, peak heap+external +${fmt(m.heapRise / 1048576, 1)} MB`);
        if (m.out.pdus && verbose) {
          log(`    ${describePdus(m.out.pdus, (p) => computeEventId(p, version))}`);
          // BENCH_SCALE_DUMP_DIR: the answer kept, to diff two servers' events (bench/README.md).
          const dump = process.env.BENCH_SCALE_DUMP_DIR;
          if (dump) writeFileSync(join(dump, `${target.name}-${members}-${what.replace(/[^a-z0-9]+/gi, "_")}.json`), JSON.stringify(m.out.pdus));
        }
        return m;
      };
      const last = joins[joins.length - 1]!.eventId;
      const ids = await get("/state_ids", `/_matrix/federation/v1/state_ids/${enc(roomId)}?event_id=${enc(joins[0]!.eventId)}`);
      const auth = await get("/event_auth", `/_matrix/federation/v1/event_auth/${enc(roomId)}/${enc(last)}`);
      const back = await get("/backfill limit=100", `/_matrix/federation/v1/backfill/${enc(roomId)}?v=${enc(last)}&limit=100`);
      const f = {
        stateIdsMs: ids.out.ms,
        stateIdsBytes: ids.out.bytes,
        stateIdsRssRise: ids.rssRise,
        stateIdsHeapRise: ids.heapRise,
        eventAuthMs: auth.out.ms,
        eventAuthBytes: auth.out.bytes,
        backfillMs: back.out.ms,
        backfillBytes: back.out.bytes,
        backfillRssRise: back.rssRise,
        makeJoinMs: med(joins.map((j) => j.make.ms)),
        makeJoinBytes: med(joins.map((j) => j.make.bytes)),
        sendJoinMs: med(joins.map((j) => j.send.ms)),
        sendJoinBytes: med(joins.map((j) => j.send.bytes)),
        sendJoinRssRise: med(joins.map((j) => j.rssRise)),
        sendJoinHeapRise: med(joins.map((j) => j.heapRise)),
        stateMs: st.out.ms,
        stateBytes: st.out.bytes,
        stateRssRise: st.rssRise,
        stateHeapRise: st.heapRise,
      };
      log(
        `new servers joining (median of ${JOINERS}): make_join ${fmt(f.makeJoinMs, 1)} ms (${fmt(f.makeJoinBytes)} B), send_join ${fmt(f.sendJoinMs)} ms, response ${fmt(f.sendJoinBytes / 1048576, 1)} MB, ` +
          `peak RSS +${fmt(f.sendJoinRssRise / 1048576, 1)} MB, peak heap+external +${fmt(f.sendJoinHeapRise / 1048576, 1)} MB; ` +
          `/state (${fmt(st.out.pdus)} state events) ${fmt(f.stateMs)} ms, ${fmt(f.stateBytes / 1048576, 1)} MB, peak RSS +${fmt(f.stateRssRise / 1048576, 1)} MB, peak heap+external +${fmt(f.stateHeapRise / 1048576, 1)} MB`,
      );
      return f;
    };
    const full = await fullJoins(1, "new");
    Object.assign(fig, full);
    const partial: { make: Timed; send: Timed }[] = [];
    let omitted = 0;
    for (let k = JOINERS + 1; k <= 2 * JOINERS; k++) {
      const s = farm.server(k);
      const j = await timedHandshake(conn, s, target.serverName, "join", roomId, `@partial:${s.serverName}`, "?omit_members=true");
      if ((JSON.parse(j.answer.toString()) as { members_omitted?: unknown }).members_omitted === true) omitted++;
      partial.push(j);
    }
    fig.sendJoinOmitMs = med(partial.map((j) => j.send.ms));
    fig.sendJoinOmitBytes = med(partial.map((j) => j.send.bytes));
    log(`with omit_members=true (median of ${JOINERS}): send_join ${fmt(fig.sendJoinOmitMs)} ms, response ${fmt(fig.sendJoinOmitBytes / 1024)} kB; members_omitted in ${omitted} of ${JOINERS} answers`);
    conn.close();

    // --- before/after on the same room: another checkout's code, restarted on the same Redis ----------
    const abRoot = process.env.BENCH_SCALE_ROOM_AB_ROOT;
    if (abRoot && probed?.restartFrom) {
      log(`restarting with the code at ${abRoot} (BENCH_SCALE_ROOM_AB_ROOT) on the same Redis`);
      await probed.restartFrom(abRoot);
      const c2 = new Conn("127.0.0.1", target.port);
      const conn0 = conn;
      conn = c2;
      try {
        fig.ab = await fullJoins(2 * JOINERS + 2, "ab");
      } finally {
        conn = conn0;
        c2.close();
      }
    }

    // --- cold start ------------------------------------------------------------------------------------
    if (probed) {
      fig.rssAfter = probed.rss();
      await probed.stop();
      const c0 = performance.now();
      await probed.start();
      fig.coldStartMs = performance.now() - c0;
      const s = farm.server(2 * JOINERS + 1);
      const c = new Conn("127.0.0.1", target.port);
      const ver = ["12", "11", "10"].map((v) => `ver=${v}`).join("&");
      const made = await c.request(signedRequest(s, target.serverName, "GET", `/_matrix/federation/v1/make_join/${enc(roomId)}/${enc(`@cold:${s.serverName}`)}?${ver}`));
      fig.coldFirstMakeJoinMs = performance.now() - c0;
      c.close();
      if (made.status !== 200) throw new Error(`make_join after restart: ${made.status} ${made.body.toString().slice(0, 200)}`);
      log(`cold start (stop, start again): ${target.name === "Synapse" ? "started (client API ready)" : "admin API answers"} after ${fmt(fig.coldStartMs)} ms, first make_join in the big room served after ${fmt(fig.coldFirstMakeJoinMs)} ms; RSS before restart ${fmt(fig.rssAfter / 1048576, 1)} MB`);
    }
    return fig;
  } finally {
    await farm.stop();
  }
}

export async function scaleRoomRow(opts: { sizes: number[]; synapse: SynapseProc | null; synapseMax: number }): Promise<ScaleTable> {
  const g: RoomFigures[] = [];
  const s: (RoomFigures | undefined)[] = [];
  for (const n of opts.sizes) {
    console.log(`\n## scale: a room of ${fmt(n)} members\n`);
    const p = await ProbedGatehouse.start();
    try {
      const joinedCount = async (roomId: string) => {
        const r = await p.gh.admin("GET", `/rooms/${enc(roomId)}/members`);
        return Object.values(r.body.members as Record<string, string>).filter((m) => m === "join").length;
      };
      g.push(await bigRoom(gatehouseFanoutTarget(p.gh), n, joinedCount, 50, p.probe()));
    } finally {
      await p.stop();
    }
    if (opts.synapse && n <= opts.synapseMax) {
      const hs = opts.synapse;
      const user = await hs.user("benchfanout"); // synapseFanoutTarget's room creator
      const joinedCount = async (roomId: string) => {
        const r = await hs.client(user.token, "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/joined_members`);
        return Object.keys((r.body?.joined ?? {}) as object).length;
      };
      // Synapse's memory: its RSS (python has no comparable "live heap") and its SQLite files.
      const probe: ServerProbe = {
        storeBytes: async () => hs.databaseBytes(),
        memoryBytes: async () => rssOf(hs.pid) ?? NaN,
        rss: () => rssOf(hs.pid) ?? NaN,
        stop: async () => hs.stopKeepingData(),
        start: async () => hs.startAgain(),
      };
      // 50 PDUs per transaction, as to Gatehouse. Synapse answers /send once they are staged and
      // prunes its staging queue above 100 events of a room; it then asks the origin (the sink farm)
      // for what it dropped: get_missing_events, state_ids, event (see sink-farm.ts).
      s.push(await bigRoom(await synapseFanoutTarget(hs), n, joinedCount, 50, probe).catch((e: Error) => (console.log(`  [Synapse] NOT MEASURED: ${e.message}`), undefined)));
    } else s.push(undefined);
  }
  const syn = s.some(Boolean);
  return {
    title: "a room of M members",
    unit: "members",
    per: 1000,
    sizes: opts.sizes,
    rows: [
      { metric: "build through /send (joins/s)", digits: 0, gatehouse: g.map((x) => x.buildPdusPerSec), ...(syn ? { synapse: s.map((x) => x?.buildPdusPerSec) } : {}) },
      { metric: "make_join (ms)", digits: 1, gatehouse: g.map((x) => x.makeJoinMs), ...(syn ? { synapse: s.map((x) => x?.makeJoinMs) } : {}) },
      { metric: "send_join (ms)", digits: 0, gatehouse: g.map((x) => x.sendJoinMs), ...(syn ? { synapse: s.map((x) => x?.sendJoinMs) } : {}) },
      { metric: "send_join response (kB)", digits: 0, gatehouse: g.map((x) => x.sendJoinBytes / 1024), ...(syn ? { synapse: s.map((x) => (x ? x.sendJoinBytes / 1024 : undefined)) } : {}) },
      { metric: "send_join peak RSS rise (MB)", digits: 1, gatehouse: g.map((x) => (x.sendJoinRssRise ?? NaN) / 1048576) },
      { metric: "send_join peak heap+external rise (MB)", digits: 1, gatehouse: g.map((x) => (x.sendJoinHeapRise ?? NaN) / 1048576) },
      { metric: "/state (ms)", digits: 0, gatehouse: g.map((x) => x.stateMs ?? NaN) },
      { metric: "/state response (kB)", digits: 0, gatehouse: g.map((x) => (x.stateBytes ?? NaN) / 1024) },
      { metric: "/state peak RSS rise (MB)", digits: 1, gatehouse: g.map((x) => (x.stateRssRise ?? NaN) / 1048576) },
      { metric: "/state peak heap+external rise (MB)", digits: 1, gatehouse: g.map((x) => (x.stateHeapRise ?? NaN) / 1048576) },
      { metric: "/state_ids, warm (ms)", digits: 1, gatehouse: g.map((x) => x.stateIdsMs ?? NaN), ...(syn ? { synapse: s.map((x) => x?.stateIdsMs) } : {}) },
      { metric: "/backfill limit=100, warm (ms)", digits: 1, gatehouse: g.map((x) => x.backfillMs ?? NaN), ...(syn ? { synapse: s.map((x) => x?.backfillMs) } : {}) },
      ...(g.some((x) => x.ab)
        ? [
            { metric: "B: send_join (ms)", digits: 0, gatehouse: g.map((x) => x.ab?.sendJoinMs) },
            { metric: "B: send_join response (kB)", digits: 0, gatehouse: g.map((x) => (x.ab ? x.ab.sendJoinBytes / 1024 : undefined)) },
            { metric: "B: send_join peak RSS rise (MB)", digits: 1, gatehouse: g.map((x) => (x.ab ? x.ab.sendJoinRssRise / 1048576 : undefined)) },
            { metric: "B: send_join peak heap+external rise (MB)", digits: 1, gatehouse: g.map((x) => (x.ab ? x.ab.sendJoinHeapRise / 1048576 : undefined)) },
            { metric: "B: /state (ms)", digits: 0, gatehouse: g.map((x) => x.ab?.stateMs) },
            { metric: "B: /state response (kB)", digits: 0, gatehouse: g.map((x) => (x.ab ? x.ab.stateBytes / 1024 : undefined)) },
            { metric: "B: /state peak RSS rise (MB)", digits: 1, gatehouse: g.map((x) => (x.ab ? x.ab.stateRssRise / 1048576 : undefined)) },
            { metric: "B: /state peak heap+external rise (MB)", digits: 1, gatehouse: g.map((x) => (x.ab ? x.ab.stateHeapRise / 1048576 : undefined)) },
            { metric: "B: /state_ids, warm (ms)", digits: 1, gatehouse: g.map((x) => x.ab?.stateIdsMs) },
            { metric: "B: /backfill limit=100, warm (ms)", digits: 1, gatehouse: g.map((x) => x.ab?.backfillMs) },
          ]
        : []),
      { metric: "send_join omit_members (ms)", digits: 0, gatehouse: g.map((x) => x.sendJoinOmitMs), ...(syn ? { synapse: s.map((x) => x?.sendJoinOmitMs) } : {}) },
      { metric: "send_join omit_members response (kB)", digits: 1, gatehouse: g.map((x) => x.sendJoinOmitBytes / 1024), ...(syn ? { synapse: s.map((x) => (x ? x.sendJoinOmitBytes / 1024 : undefined)) } : {}) },
      { metric: "store per member (B; Gatehouse: Redis used_memory, Synapse: SQLite pages in use)", digits: 0, gatehouse: g.map((x) => x.redisPerMember), ...(syn ? { synapse: s.map((x) => x?.redisPerMember) } : {}) },
      { metric: "memory per member (B; Gatehouse: live heap after GC, Synapse: RSS)", digits: 0, gatehouse: g.map((x) => x.heapPerMember), ...(syn ? { synapse: s.map((x) => x?.heapPerMember) } : {}) },
      { metric: "RSS before restart (MB)", digits: 1, gatehouse: g.map((x) => (x.rssAfter ?? NaN) / 1048576), ...(syn ? { synapse: s.map((x) => (x?.rssAfter ?? NaN) / 1048576) } : {}) },
      { metric: "cold start: started (ms; Gatehouse: admin API answers, Synapse: client API ready)", digits: 0, gatehouse: g.map((x) => x.coldStartMs), ...(syn ? { synapse: s.map((x) => x?.coldStartMs) } : {}) },
      { metric: "cold start: first make_join served (ms)", digits: 0, gatehouse: g.map((x) => x.coldFirstMakeJoinMs), ...(syn ? { synapse: s.map((x) => x?.coldFirstMakeJoinMs) } : {}) },
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// A room with K pending knocks
// ---------------------------------------------------------------------------------------------

interface KnockListFigures {
  knocks: number;
  buildPerSec: number;
  makeKnockP50: number;
  makeKnockP99: number;
  sendKnockP50: number;
  sendKnockP99: number;
  listMs: number;
  listBytes: number;
  listed: number;
  redisPerKnock?: number;
  heapPerKnock?: number;
  /** Server CPU (ms) per knock over the whole concurrent build, node and Redis apart (Gatehouse). */
  buildCpu?: { node: number; redis: number };
  /** The same over the build's last quarter: the cost of a concurrent knock at about K pending. */
  lastQuarterCpu?: { node: number; redis: number };
  /** The same over the 50 one-by-one knocks (no forks). */
  measuredCpu?: { node: number; redis: number };
}

/** Concurrent connections building the pending knocks (BENCH_SCALE_KNOCK_CONNS, default 8). */
const knockConns = (): number => {
  const n = Number(process.env.BENCH_SCALE_KNOCK_CONNS ?? "8");
  if (!Number.isInteger(n) || n < 1) throw new Error(`BENCH_SCALE_KNOCK_CONNS: a positive integer, not ${process.env.BENCH_SCALE_KNOCK_CONNS}`);
  return n;
};

/** CPU seconds of the server's node and redis-server processes so far. */
function serverCpu(p: ProbedGatehouse): { node: number; redis: number } {
  return { node: cpuSecondsOf(p.gh.pid) ?? NaN, redis: cpuSecondsOf(p.redis.pid) ?? NaN };
}
const perOp = (a: { node: number; redis: number }, b: { node: number; redis: number }, n: number) => ({ node: ((b.node - a.node) * 1000) / n, redis: ((b.redis - a.redis) * 1000) / n });
const fmtCpu = (c: { node: number; redis: number } | undefined) => (c ? `${fmt(c.node + c.redis, 2)} ms (node ${fmt(c.node, 2)} + Redis ${fmt(c.redis, 2)})` : "–");

async function knockRoom(
  t: { name: string; serverName: string; port: number; createKnockRoom(): Promise<string>; list(roomId: string): Promise<{ bytes: number; count: number }> },
  identity: FanoutTarget["identity"],
  knocks: number,
  probed?: ProbedGatehouse,
): Promise<KnockListFigures> {
  const log = (s: string) => console.log(`  [${t.name}] ${s}`);
  const MEASURED = 50;
  const farm = await SinkFarm.start(1, ROOM_VERSION);
  try {
    await farm.verifyAs(identity);
    const fake = farm.server(0);
    const roomId = await t.createKnockRoom();
    // The first knock fetches the fake server's key: not counted.
    const warm = new Conn("127.0.0.1", t.port);
    await handshake(warm, fake, t.serverName, "knock", roomId, `@warm:${fake.serverName}`, { reason: "bench" });
    warm.close();
    const redis0 = probed ? await probed.redis.usedMemory() : 0;
    const heap0 = probed ? await probed.liveHeap() : 0;
    const pending = knocks - MEASURED - 1;
    const conns = knockConns();
    const quarter = Math.floor((pending * 3) / 4);
    let next = 0;
    let done = 0;
    let cpuAtQuarter: { node: number; redis: number } | undefined;
    const counters0 = probed ? (await roomCounters([probed.metricsUrl]))[0]! : undefined;
    const cpu0 = probed ? serverCpu(probed) : undefined;
    const b0 = performance.now();
    await Promise.all(
      Array.from({ length: conns }, async () => {
        const c = new Conn("127.0.0.1", t.port);
        while (next < pending) {
          const n = next++;
          // From here on, every connection's knock is one of the last quarter's.
          if (n === quarter && probed) cpuAtQuarter = serverCpu(probed);
          await handshake(c, fake, t.serverName, "knock", roomId, `@k${n}:${fake.serverName}`, { reason: "bench" });
          done++;
          if (n > 0 && n % 2000 === 0) log(`  … ${fmt(n)} knocks (${fmt(n / ((performance.now() - b0) / 1000))}/s)`);
        }
        c.close();
      }),
    );
    const buildPerSec = pending / ((performance.now() - b0) / 1000);
    const cpuBuilt = probed ? serverCpu(probed) : undefined;
    if (probed && counters0) {
      const counters1 = (await roomCounters([probed.metricsUrl]))[0]!;
      const moved = [...counters1].map(([k, v]) => [k, v - (counters0.get(k) ?? 0)] as const).filter(([k, d]) => d !== 0 && k.startsWith("gatehouse_room_"));
      log(`  per knock of the build: ${moved.map(([k, d]) => `${k.replace("gatehouse_room_", "")} ${fmt(d / Math.max(1, done), 2)}`).join(", ") || "no room counter moved"}`);
    }
    const c = new Conn("127.0.0.1", t.port);
    const timings: { make: Timed; send: Timed }[] = [];
    for (let i = 0; i < MEASURED; i++) timings.push(await timedHandshake(c, fake, t.serverName, "knock", roomId, `@measured${i}:${fake.serverName}`));
    c.close();
    const cpuMeasured = probed ? serverCpu(probed) : undefined;
    await sleep(300);
    const fig: Partial<KnockListFigures> = { knocks, buildPerSec };
    if (cpu0 && cpuBuilt && cpuMeasured) {
      fig.buildCpu = perOp(cpu0, cpuBuilt, done);
      if (cpuAtQuarter) fig.lastQuarterCpu = perOp(cpuAtQuarter, cpuBuilt, pending - quarter);
      fig.measuredCpu = perOp(cpuBuilt, cpuMeasured, MEASURED);
    }
    if (probed) {
      fig.redisPerKnock = ((await probed.redis.usedMemory()) - redis0) / (knocks - 1);
      fig.heapPerKnock = ((await probed.liveHeap()) - heap0) / (knocks - 1);
    }
    const mk = timings.map((x) => x.make.ms).sort((a, b) => a - b);
    const sk = timings.map((x) => x.send.ms).sort((a, b) => a - b);
    // The knock list, 5 times (median).
    const lists: { ms: number; bytes: number; count: number }[] = [];
    for (let i = 0; i < 5; i++) {
      const l0 = performance.now();
      const r = await t.list(roomId);
      lists.push({ ms: performance.now() - l0, ...r });
    }
    lists.sort((a, b) => a.ms - b.ms);
    const l = lists[2]!;
    const out: KnockListFigures = {
      knocks,
      buildPerSec,
      makeKnockP50: percentile(mk, 50),
      makeKnockP99: percentile(mk, 99),
      sendKnockP50: percentile(sk, 50),
      sendKnockP99: percentile(sk, 99),
      listMs: l.ms,
      listBytes: l.bytes,
      listed: l.count,
      ...(fig.redisPerKnock !== undefined ? { redisPerKnock: fig.redisPerKnock, heapPerKnock: fig.heapPerKnock! } : {}),
      ...(fig.buildCpu ? { buildCpu: fig.buildCpu, measuredCpu: fig.measuredCpu! } : {}),
      ...(fig.lastQuarterCpu ? { lastQuarterCpu: fig.lastQuarterCpu } : {}),
    };
    log(
      `${fmt(knocks)} pending knocks (built at ${fmt(buildPerSec)}/s, ${conns} connections); the next ${MEASURED}, one by one: make_knock p50 ${fmt(out.makeKnockP50, 1)} / p99 ${fmt(out.makeKnockP99, 1)} ms, ` +
        `send_knock p50 ${fmt(out.sendKnockP50, 1)} / p99 ${fmt(out.sendKnockP99, 1)} ms; knock list: ${fmt(l.count)} knocks, ${fmt(l.bytes / 1024)} kB in ${fmt(l.ms)} ms` +
        (out.redisPerKnock !== undefined ? `; Redis +${fmt(out.redisPerKnock)} B, live heap +${fmt(out.heapPerKnock)} B per pending knock` : ""),
    );
    if (out.buildCpu)
      log(`server CPU per knock: build (${conns} conn) ${fmtCpu(out.buildCpu)}; its last quarter ${fmtCpu(out.lastQuarterCpu)}; the ${MEASURED} one by one ${fmtCpu(out.measuredCpu)}`);
    if (l.count !== knocks) log(`WARNING: the knock list holds ${l.count} knocks, ${knocks} were answered 200`);
    return out;
  } finally {
    await farm.stop();
  }
}

export async function scaleKnocksRow(opts: { sizes: number[]; synapse: SynapseProc | null; synapseMax: number }): Promise<ScaleTable> {
  const g: KnockListFigures[] = [];
  const s: (KnockListFigures | undefined)[] = [];
  const synAdmin = opts.synapse ? await opts.synapse.user("benchscaleknocks") : null;
  for (const n of opts.sizes) {
    console.log(`\n## scale: a room with ${fmt(n)} pending knocks\n`);
    const p = await ProbedGatehouse.start();
    try {
      const base = gatehouseTarget(p.gh);
      const f = gatehouseFanoutTarget(p.gh);
      g.push(
        await knockRoom(
          {
            ...base,
            async list(roomId) {
              const res = await fetch(`http://127.0.0.1:${p.gh.adminPort}/_gatehouse/admin/v1/rooms/${enc(roomId)}/knocks`, { headers: { Authorization: `Bearer ${p.gh.adminToken}` } });
              const text = await res.text();
              return { bytes: Buffer.byteLength(text), count: (JSON.parse(text) as { knocks: unknown[] }).knocks.length };
            },
          },
          f.identity,
          n,
          p,
        ),
      );
    } finally {
      await p.stop();
    }
    if (opts.synapse && synAdmin && n <= opts.synapseMax) {
      const hs = opts.synapse;
      // The knock room is created by a Synapse user, who then reads the list (client API).
      s.push(
        await knockRoom(
          {
            name: "Synapse",
            serverName: hs.serverName,
            port: hs.federationPort,
            async createKnockRoom() {
              const r = await hs.client(synAdmin.token, "POST", "/_matrix/client/v3/createRoom", {
                room_version: ROOM_VERSION,
                preset: "private_chat",
                name: "bench scale knocks",
                initial_state: [{ type: "m.room.join_rules", state_key: "", content: { join_rule: "knock" } }],
              });
              if (r.status !== 200) throw new Error(`synapse createRoom: ${JSON.stringify(r.body)}`);
              return r.body.room_id as string;
            },
            async list(roomId) {
              const res = await fetch(`${hs.clientUrl}/_matrix/client/v3/rooms/${enc(roomId)}/members?membership=knock`, { headers: { Authorization: `Bearer ${synAdmin.token}` } });
              const text = await res.text();
              if (res.status !== 200) throw new Error(`synapse members: ${res.status} ${text.slice(0, 200)}`);
              return { bytes: Buffer.byteLength(text), count: (JSON.parse(text) as { chunk: unknown[] }).chunk.length };
            },
          },
          null,
          n,
        ),
      );
    } else s.push(undefined);
  }
  const syn = s.some(Boolean);
  return {
    title: `a room with K pending knocks (built over ${knockConns()} connections)`,
    unit: "knocks",
    per: 1000,
    sizes: opts.sizes,
    rows: [
      { metric: `building: knocks/s (${knockConns()} conn)`, digits: 0, gatehouse: g.map((x) => x.buildPerSec), ...(syn ? { synapse: s.map((x) => x?.buildPerSec) } : {}) },
      { metric: "server CPU per knock, build (ms)", digits: 2, gatehouse: g.map((x) => (x.buildCpu ? x.buildCpu.node + x.buildCpu.redis : undefined)) },
      { metric: "server CPU per knock, build's last quarter (ms)", digits: 2, gatehouse: g.map((x) => (x.lastQuarterCpu ? x.lastQuarterCpu.node + x.lastQuarterCpu.redis : undefined)) },
      { metric: "  of which Redis (ms)", digits: 2, gatehouse: g.map((x) => x.lastQuarterCpu?.redis) },
      { metric: "server CPU per knock, 50 one by one (ms)", digits: 2, gatehouse: g.map((x) => (x.measuredCpu ? x.measuredCpu.node + x.measuredCpu.redis : undefined)) },
      { metric: "make_knock p50 (ms)", digits: 1, gatehouse: g.map((x) => x.makeKnockP50), ...(syn ? { synapse: s.map((x) => x?.makeKnockP50) } : {}) },
      { metric: "make_knock p99 (ms)", digits: 1, gatehouse: g.map((x) => x.makeKnockP99), ...(syn ? { synapse: s.map((x) => x?.makeKnockP99) } : {}) },
      { metric: "send_knock p50 (ms)", digits: 1, gatehouse: g.map((x) => x.sendKnockP50), ...(syn ? { synapse: s.map((x) => x?.sendKnockP50) } : {}) },
      { metric: "send_knock p99 (ms)", digits: 1, gatehouse: g.map((x) => x.sendKnockP99), ...(syn ? { synapse: s.map((x) => x?.sendKnockP99) } : {}) },
      { metric: "knock list (ms)", digits: 1, gatehouse: g.map((x) => x.listMs), ...(syn ? { synapse: s.map((x) => x?.listMs) } : {}) },
      { metric: "knock list (kB)", digits: 0, gatehouse: g.map((x) => x.listBytes / 1024), ...(syn ? { synapse: s.map((x) => (x ? x.listBytes / 1024 : undefined)) } : {}) },
      { metric: "Redis per pending knock (B)", digits: 0, gatehouse: g.map((x) => x.redisPerKnock) },
      { metric: "live heap per pending knock (B)", digits: 0, gatehouse: g.map((x) => x.heapPerKnock) },
    ],
  };
}

/**
 * The scale rows `only` selects (scale-fanout, scale-room, scale-knocks), at the sizes the
 * environment gives (see bench/README.md), with one Synapse for all of them when available.
 */
export async function runScaleRows(only: Set<string>, quick: boolean, synapseWhy: string | null, startSynapse: () => SynapseProc): Promise<void> {
  const rows = ["scale-fanout", "scale-room", "scale-knocks"].filter((r) => only.has(r));
  if (!rows.length) return;
  const fanoutSizes = scaleSizes("BENCH_SCALE_FANOUT", quick ? "5,10,20" : "20,50,100");
  const memberSizes = scaleSizes("BENCH_SCALE_MEMBERS", quick ? "100,200,400" : "1000,3000,10000");
  const knockSizes = scaleSizes("BENCH_SCALE_KNOCKS", quick ? "60,100,200" : "100,300,1000");
  const cap = (name: string, sizes: number[]) => Number(process.env[name] ?? sizes[sizes.length - 1]);
  // Synapse builds a room of pushed joins at ~5 joins/s at 1,000 members and slower as it grows
  // (bench/README.md, "A room of M members"): by default it runs the room row up to 1,000 members.
  const synMax = {
    fanout: cap("BENCH_SCALE_SYNAPSE_MAX_FANOUT", fanoutSizes),
    members: Number(process.env.BENCH_SCALE_SYNAPSE_MAX_MEMBERS ?? (quick ? "400" : "1000")),
    knocks: cap("BENCH_SCALE_SYNAPSE_MAX_KNOCKS", knockSizes),
  };
  let hs: SynapseProc | null = null;
  if (synapseWhy) console.log(`\n# scale rows: Synapse skipped: ${synapseWhy}`);
  else {
    hs = startSynapse();
    console.log(`# scale rows: Synapse ${hs.serverName} (pid ${hs.pid}); sizes up to ${fmt(synMax.fanout)} destinations, ${fmt(synMax.members)} members, ${fmt(synMax.knocks)} knocks`);
  }
  const tables: ScaleTable[] = [];
  try {
    if (only.has("scale-fanout"))
      tables.push(
        await scaleFanoutRow({
          sizes: fanoutSizes,
          synapse: hs,
          synapseMax: synMax.fanout,
          rate: Number(process.env.BENCH_SCALE_FANOUT_RATE ?? "10"),
          seconds: Number(process.env.BENCH_SCALE_FANOUT_SECONDS ?? (quick ? "2" : "10")),
          backlog: Number(process.env.BENCH_SCALE_BACKLOG ?? (quick ? "20" : "50")),
        }),
      );
    if (only.has("scale-room")) tables.push(await scaleRoomRow({ sizes: memberSizes, synapse: hs, synapseMax: synMax.members }));
    if (only.has("scale-knocks")) tables.push(await scaleKnocksRow({ sizes: knockSizes, synapse: hs, synapseMax: synMax.knocks }));
  } finally {
    hs?.stop();
  }
  console.log("\n## scale summary");
  for (const t of tables) printScaleTable(t);
}
