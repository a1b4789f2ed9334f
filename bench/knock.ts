/**
 * Knock benches against Gatehouse and (when available) Synapse, same run, same machine:
 *
 *  - make_knock replay: one signed request (X-Matrix has no nonce) replayed at 1, 10 and 50
 *    connections: req/s, p50, p99;
 *  - distinct knocks: make_knock + send_knock by new users of a fake remote server, 1 and 10
 *    concurrent clients: knocks/s, latency; afterwards the room state must hold every knock;
 *  - send_knock only, against the crypto-bound ceiling: knocks prepared with make_knock first,
 *    then only the send_knocks are timed; the same events are checked in-process (X-Matrix
 *    request verify + redact/verify/hash/event ID) for the ceiling;
 *  - memory per hosted member: Redis used_memory and Gatehouse RSS per knock.
 */
import { RemoteServer } from "../test/support/remote-server.js";
import { parseXMatrixHeaders, verifyRequest } from "../src/protocol/x-matrix.js";
import { checkEvent } from "../src/protocol/event-signing.js";
import { getRoomVersion } from "../src/protocol/room-versions.js";
import { defaultEd25519 } from "../src/protocol/ed25519.js";
import type { Pdu } from "../src/protocol/pdu.js";
import { cachedStateOf, type StateEntry } from "../src/store/state-cache.js";
import v8 from "node:v8";
import { runInNewContext } from "node:vm";
import { createHash } from "node:crypto";
import { closedLoop, Conn, type LoadResult } from "./lib/loadgen.js";
import { enc, handshake, HandshakeError, signedRequest, signEvent, type FakeServer } from "./lib/fed.js";
import { cpuSecondsOf, rssOf, sleep, type GatehouseProc, type RedisProc, type SynapseProc } from "./lib/procs.js";
import { Redis } from "ioredis";
import { roomCounters } from "./inbound.js";

export interface Target {
  name: "Gatehouse" | "Synapse";
  serverName: string;
  port: number;
  /** Creates a knock room; returns its ID. */
  createKnockRoom(): Promise<string>;
  /** User IDs with membership "knock" in the room (from the server's own API). */
  knockers(roomId: string): Promise<string[]>;
  /** Server-side processes (for CPU accounting): Gatehouse + its Redis, or Synapse. */
  pids: number[];
  pidNames: string[];
}

/** Runs `fn` and adds the CPU time the target's processes used meanwhile (ms per op). */
async function withCpu<T extends LoadResult>(target: Target, fn: () => Promise<T>): Promise<T & { cpuMsPerOp: number; cpuSplit: string }> {
  const before = target.pids.map((p) => cpuSecondsOf(p) ?? 0);
  const r = await fn();
  const after = target.pids.map((p) => cpuSecondsOf(p) ?? 0);
  const perOp = after.map((a, i) => ((a - before[i]!) * 1000) / Math.max(1, r.ops + r.errors));
  const cpuMsPerOp = perOp.reduce((a, b) => a + b, 0);
  // Gatehouse's own process and its redis-server separately (Synapse is one process).
  const cpuSplit = perOp.length > 1 ? ` (${target.pidNames.map((n, i) => `${n} ${fmt(perOp[i]!, 3)}`).join(" + ")})` : "";
  return { ...r, cpuMsPerOp, cpuSplit };
}

export function gatehouseTarget(gh: GatehouseProc, redis?: RedisProc): Target {
  return {
    pids: [gh.pid, ...(redis ? [redis.pid] : [])],
    pidNames: ["node", ...(redis ? ["redis"] : [])],
    name: "Gatehouse",
    serverName: gh.serverName,
    port: gh.federationPort,
    async createKnockRoom() {
      const r = await gh.admin("POST", "/rooms", { creator: `@admin:${gh.serverName}`, join_rule: "knock", room_version: ROOM_VERSION, name: "bench knocks" });
      if (r.status !== 200) throw new Error(`create room: ${JSON.stringify(r.body)}`);
      return r.body.room_id;
    },
    async knockers(roomId) {
      const r = await gh.admin("GET", `/rooms/${enc(roomId)}/knocks`);
      return (r.body.knocks as { user_id: string }[]).map((k) => k.user_id);
    },
  };
}

export async function synapseTarget(hs: SynapseProc): Promise<Target> {
  const admin = await hs.user("benchadmin");
  return {
    pids: [hs.pid],
    pidNames: ["synapse"],
    name: "Synapse",
    serverName: hs.serverName,
    port: hs.federationPort,
    async createKnockRoom() {
      const r = await hs.client(admin.token, "POST", "/_matrix/client/v3/createRoom", {
        room_version: ROOM_VERSION,
        preset: "private_chat",
        name: "bench knocks",
        initial_state: [{ type: "m.room.join_rules", state_key: "", content: { join_rule: "knock" } }],
      });
      if (r.status !== 200) throw new Error(`synapse createRoom: ${JSON.stringify(r.body)}`);
      return r.body.room_id;
    },
    async knockers(roomId) {
      const r = await hs.client(admin.token, "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/members?membership=knock`);
      if (r.status !== 200) throw new Error(`synapse members: ${JSON.stringify(r.body)}`);
      return (r.body.chunk as { state_key: string; content: { membership: string } }[]).filter((e) => e.content.membership === "knock").map((e) => e.state_key);
    },
  };
}

export const ROOM_VERSION = "12";

export interface KnockFigures {
  target: string;
  makeKnock: Record<number, LoadResult & { cpuMsPerOp: number }>;
  distinct: Record<number, LoadResult & { verified: string; cpuMsPerOp: number }>;
  sendOnly?: LoadResult & { prepared: number; cpuMsPerOp: number };
  heapPerMember?: { members: number; bytesPerMember: number };
  ceiling?: { eventOnlyPerSec: number; fullPerSec: number; knocks: number };
  /** Gatehouse: Redis commands per send_knock (MONITOR over knocks sent one by one), top level (round trips) and run inside scripts. */
  redisPerSendKnock?: { knocks: number; topLevel: number; inScripts: number; byCommand: Record<string, number> };
  memory?: { knocks: number; redisBytesPerMember: number; rssBytesPerMember: number };
}

let runTag = `${Date.now().toString(36)}`;

function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }) : "–";
}

/**
 * Redis commands per send_knock, counted with MONITOR (Redis CPU figures of the rows above are
 * taken without it): knocks are prepared with make_knock, then sent one by one while a MONITOR
 * client records every command naming the room (its keys carry the room ID; the sender's periodic
 * work does not); commands a script runs are reported by MONITOR with source "lua".
 */
async function redisPerSendKnock(target: Target, fake: FakeServer, redisProc: RedisProc, ver: string): Promise<NonNullable<KnockFigures["redisPerSendKnock"]>> {
  const knocks = 20;
  const roomId = await target.createKnockRoom();
  const conn = new Conn("127.0.0.1", target.port);
  const client = new Redis(`redis://127.0.0.1:${redisProc.port}`);
  const monitor = await client.monitor();
  let topLevel = 0;
  let inScripts = 0;
  const byCommand: Record<string, number> = {};
  let counting = false;
  monitor.on("monitor", (_time: string, args: string[], source: string) => {
    // Only the room's commands (its keys carry the room ID): not the sender's periodic work.
    if (!counting || !args.some((a) => String(a).includes(roomId))) return;
    if (source === "lua") inScripts++;
    else {
      topLevel++;
      const c = String(args[0]).toLowerCase();
      byCommand[c] = (byCommand[c] ?? 0) + 1;
    }
  });
  // Knock n + 1 is made after knock n is in (as knocks one at a time are): no fork. Only the
  // send_knocks are counted (the first one, which fetches the fake server's key, is not).
  for (let n = 0; n <= knocks; n++) {
    const user = `@rt${runTag}-${n}:${fake.serverName}`;
    const made = await conn.request(signedRequest(fake, target.serverName, "GET", `/_matrix/federation/v1/make_knock/${enc(roomId)}/${enc(user)}?${ver}`));
    if (made.status !== 200) throw new Error(`make_knock: ${made.status} ${made.body}`);
    const m = JSON.parse(made.body.toString()) as { room_version: string; event: Record<string, unknown> };
    const { pdu, eventId } = signEvent(fake, m.event, m.room_version);
    const req = signedRequest(fake, target.serverName, "PUT", `/_matrix/federation/v1/send_knock/${enc(roomId)}/${enc(eventId)}`, pdu);
    await sleep(50);
    counting = n > 0;
    const res = await conn.request(req);
    if (res.status !== 200) throw new Error(`send_knock: ${res.status} ${res.body}`);
    await sleep(50);
    counting = false;
  }
  monitor.disconnect();
  client.disconnect();
  conn.close();
  for (const c of Object.keys(byCommand)) byCommand[c]! /= knocks;
  return { knocks, topLevel: topLevel / knocks, inScripts: inScripts / knocks, byCommand };
}

/** Every bench in this file against one target. */
export async function knockBench(
  target: Target,
  remote: RemoteServer,
  opts: { seconds: number; quick: boolean; gatehouse?: GatehouseProc; redis?: RedisProc; metricsUrl?: string },
): Promise<KnockFigures> {
  const fake: FakeServer = { serverName: remote.serverName, key: remote.key };
  const out: KnockFigures = { target: target.name, makeKnock: {}, distinct: {} };
  const log = (s: string) => console.log(`  [${target.name}] ${s}`);

  // BENCH_KNOCK_ROWS=replay,distinct,sendonly (default all): e.g. `distinct` alone for a CPU profile of that row.
  const rows = new Set((process.env.BENCH_KNOCK_ROWS ?? "replay,distinct,sendonly").split(",").map((s) => s.trim()));
  const ver = ["12", "11", "10"].map((v) => `ver=${v}`).join("&");

  // --- make_knock replay ------------------------------------------------------------------------
  if (rows.has("replay")) {
  const replayRoom = await target.createKnockRoom();
  const replayUser = `@replay-${runTag}:${fake.serverName}`;
  const replay = signedRequest(fake, target.serverName, "GET", `/_matrix/federation/v1/make_knock/${enc(replayRoom)}/${enc(replayUser)}?${ver}`);
  // First request fetches the fake server's key; not timed.
  const first = await new Conn("127.0.0.1", target.port).request(replay);
  if (first.status !== 200) throw new Error(`${target.name} make_knock: ${first.status} ${first.body}`);
  for (const connections of [1, 10, 50]) {
    const r = await withCpu(target, () => closedLoop({
      host: "127.0.0.1",
      port: target.port,
      connections,
      seconds: opts.seconds,
      warmupSeconds: opts.quick ? 0.2 : 1,
      op: async (conn) => {
        const res = await conn.request(replay);
        return res.status === 200 ? true : `HTTP ${res.status}`;
      },
    }));
    out.makeKnock[connections] = r;
    log(`make_knock replay, ${connections} conn: ${fmt(r.opsPerSec)} req/s, p50 ${fmt(r.p50Ms, 2)} ms, p99 ${fmt(r.p99Ms, 2)} ms, server CPU ${fmt(r.cpuMsPerOp, 3)} ms/req${r.cpuSplit}, errors ${r.errors}${r.firstError ? ` (${r.firstError})` : ""}`);
  }
  }

  // --- distinct knocks ----------------------------------------------------------------------------
  let memBefore: { redis: number; rss: number } | null = null;
  if (opts.redis && opts.gatehouse) memBefore = { redis: await opts.redis.usedMemory(), rss: rssOf(opts.gatehouse.pid) ?? 0 };
  let totalKnocks = 0;
  // BENCH_KNOCK_CLIENTS=1 (default 1,10): the distinct-knock rows' client counts.
  const clientCounts = (process.env.BENCH_KNOCK_CLIENTS ?? "1,10").split(",").map(Number);
  for (const clients of rows.has("distinct") ? clientCounts : []) {
    const roomId = await target.createKnockRoom();
    const knocked: string[] = [];
    const counters0 = opts.metricsUrl ? (await roomCounters([opts.metricsUrl]))[0]! : undefined;
    const r = await withCpu(target, () => closedLoop({
      host: "127.0.0.1",
      port: target.port,
      connections: clients,
      seconds: opts.seconds,
      op: async (conn, w, n) => {
        const user = `@k${runTag}-${clients}-${n}:${fake.serverName}`;
        try {
          await handshake(conn, fake, target.serverName, "knock", roomId, user, { reason: "bench" });
          knocked.push(user);
          return true;
        } catch (e) {
          if (e instanceof HandshakeError) return `${e.step} ${e.status}`;
          throw e;
        }
      },
    }));
    // Let in-flight knocks land, then compare with the room state.
    await sleep(300);
    const inState = new Set(await target.knockers(roomId));
    const missing = knocked.filter((u) => !inState.has(u));
    const verified = missing.length === 0 ? `all ${knocked.length} knocks in room state` : `${missing.length} of ${knocked.length} knocks MISSING from room state`;
    totalKnocks += knocked.length;
    out.distinct[clients] = { ...r, verified };
    log(`distinct knocks, ${clients} client(s): ${fmt(r.opsPerSec, 1)} knocks/s, p50 ${fmt(r.p50Ms, 1)} ms, p99 ${fmt(r.p99Ms, 1)} ms, server CPU ${fmt(r.cpuMsPerOp, 2)} ms/knock${r.cpuSplit}, errors ${r.errors}${r.firstError ? ` (${r.firstError})` : ""}; ${verified}`);
    if (counters0 && opts.metricsUrl) {
      // What the row's knocks cost in room reads and write conflicts (forks show as delta reads
      // and conflicts when concurrent knocks race for the room).
      const counters1 = (await roomCounters([opts.metricsUrl]))[0]!;
      const moved = [...counters1].map(([k, v]) => [k, v - (counters0.get(k) ?? 0)] as const).filter(([k, d]) => d !== 0 && k.startsWith("gatehouse_room_"));
      log(`  per knock: ${moved.map(([k, d]) => `${k.replace("gatehouse_room_", "")} ${fmt(d / Math.max(1, knocked.length), 2)}`).join(", ") || "no room counter moved"}`);
    }
  }
  if (memBefore && opts.redis && opts.gatehouse && totalKnocks > 0) {
    await sleep(500);
    const redisAfter = await opts.redis.usedMemory();
    const rssAfter = rssOf(opts.gatehouse.pid) ?? 0;
    out.memory = { knocks: totalKnocks, redisBytesPerMember: (redisAfter - memBefore.redis) / totalKnocks, rssBytesPerMember: (rssAfter - memBefore.rss) / totalKnocks };
    log(`memory: ${totalKnocks} knocks: Redis +${fmt(out.memory.redisBytesPerMember)} B/member, RSS +${fmt(out.memory.rssBytesPerMember)} B/member`);
  }

  if (!rows.has("sendonly")) return out;
  // --- send_knock only, and the crypto ceiling for the same events ------------------------------------
  // Knocks prepared together share prev_events (each one forks the room graph), so the room's
  // forward extremities grow with the batch: keep it at 300 for both servers.
  const prepared = 300;
  const roomId = await target.createKnockRoom();
  const prepConn = Array.from({ length: 10 }, () => new Conn("127.0.0.1", target.port));
  const reqs: { buf: Buffer; pdu: Pdu; path: string; auth: string }[] = [];
  let next = 0;
  await Promise.all(
    prepConn.map(async (conn) => {
      while (next < prepared) {
        const n = next++;
        const user = `@s${runTag}-${n}:${fake.serverName}`;
        const path = `/_matrix/federation/v1/make_knock/${enc(roomId)}/${enc(user)}?${ver}`;
        const made = await conn.request(signedRequest(fake, target.serverName, "GET", path));
        if (made.status !== 200) throw new Error(`make_knock: ${made.status} ${made.body}`);
        const m = JSON.parse(made.body.toString()) as { room_version: string; event: Record<string, unknown> };
        const { pdu, eventId } = signEvent(fake, { ...m.event, content: { ...(m.event.content as object), reason: "bench" } }, m.room_version);
        const sendPath = `/_matrix/federation/v1/send_knock/${enc(roomId)}/${enc(eventId)}`;
        const buf = signedRequest(fake, target.serverName, "PUT", sendPath, pdu);
        const auth = /Authorization: (.*)\r\n/.exec(buf.toString("latin1"))![1]!;
        reqs.push({ buf, pdu, path: sendPath, auth });
      }
    }),
  );
  for (const c of prepConn) c.close();
  const sendOnly = await withCpu(target, () => closedLoop({
    host: "127.0.0.1",
    port: target.port,
    connections: 10,
    seconds: 600,
    maxOps: reqs.length,
    op: async (conn, _w, n) => {
      const res = await conn.request(reqs[n]!.buf);
      return res.status === 200 ? true : `HTTP ${res.status} ${res.body.toString().slice(0, 80)}`;
    },
  }));
  out.sendOnly = { ...sendOnly, prepared: reqs.length };
  log(`send_knock only (10 conn, ${reqs.length} prepared knocks): ${fmt(sendOnly.opsPerSec)} knocks/s, p50 ${fmt(sendOnly.p50Ms, 1)} ms, p99 ${fmt(sendOnly.p99Ms, 1)} ms, server CPU ${fmt(sendOnly.cpuMsPerOp, 2)} ms/knock${sendOnly.cpuSplit}, errors ${sendOnly.errors}${sendOnly.firstError ? ` (${sendOnly.firstError})` : ""}`);

  if (target.name === "Gatehouse" && opts.redis) {
    out.redisPerSendKnock = await redisPerSendKnock(target, fake, opts.redis, ver);
    const r = out.redisPerSendKnock;
    log(
      `Redis per send_knock (MONITOR, ${r.knocks} knocks one by one in the same room): ${fmt(r.topLevel, 2)} top-level commands (round trips), ${fmt(r.inScripts, 1)} run inside scripts; top level: ` +
        Object.entries(r.byCommand).sort((a, b) => b[1] - a[1]).map(([c, n]) => `${c} ${fmt(n, 2)}`).join(", "),
    );
  }

  if (target.name === "Gatehouse") {
    out.heapPerMember = stateCacheHeapPerMember(reqs.map((r) => r.pdu));
    log(`state cache heap per hosted member (in-process, ${fmt(out.heapPerMember.members)} knock events, node's heapUsed after GC): ${fmt(out.heapPerMember.bytesPerMember)} B`);
    out.ceiling = cryptoCeiling(reqs, fake, target.serverName);
    log(
      `crypto ceiling for the same ${out.ceiling.knocks} knocks (one core, in-process): event check only ${fmt(out.ceiling.eventOnlyPerSec)}/s, ` +
        `X-Matrix verify + event check ${fmt(out.ceiling.fullPerSec)}/s → send_knock route at ${fmt((100 * sendOnly.opsPerSec) / out.ceiling.fullPerSec)} % of the full ceiling`,
    );
  }
  return out;
}

/**
 * What Gatehouse's process holds per member of a hosted room: the state cache keeps every current
 * state event parsed (shared with the parsed-event cache) plus its ID. Measured in this process
 * with knock events of the size the bench sends (the server's RSS moves by GC, not by members),
 * as V8's heapUsed after a full GC before and after building the cache entry.
 */
function stateCacheHeapPerMember(samples: Pdu[], members = 20_000): { members: number; bytesPerMember: number } {
  v8.setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  const build = () => {
    const entries: StateEntry[] = [];
    for (let i = 0; i < members; i++) {
      // A distinct parsed event per member, as JSON.parse of the stored event gives.
      const pdu = JSON.parse(JSON.stringify(samples[i % samples.length])) as Pdu;
      const userId = `@member${i}:${String(pdu.sender).split(":").slice(1).join(":")}`;
      pdu.sender = userId;
      pdu.state_key = userId;
      entries.push({ field: JSON.stringify(["m.room.member", userId]), eventId: `$${createHash("sha256").update(userId).digest("base64url")}`, pdu });
    }
    return cachedStateOf(members, "$last", entries);
  };
  gc();
  const before = process.memoryUsage().heapUsed;
  const held = build();
  gc();
  const after = process.memoryUsage().heapUsed;
  if (held.state.size !== members) throw new Error("state cache size");
  return { members, bytesPerMember: (after - before) / members };
}

/**
 * The pure CPU cost per send_knock, for the same requests: (a) the event check (redact,
 * canonical JSON, signature verify, content hash, event ID), (b) plus the X-Matrix request
 * verification (canonical JSON of the request object + signature verify). Best of 3 passes.
 */
function cryptoCeiling(reqs: { pdu: Pdu; path: string; auth: string }[], fake: FakeServer, destination: string) {
  const version = getRoomVersion(ROOM_VERSION)!;
  const verifier = defaultEd25519.verifier(fake.key.publicKey);
  const lookup = (entity: string, keyId: string) => (entity === fake.serverName && keyId === fake.key.keyId ? verifier : undefined);
  const eventOnly = () => {
    for (const r of reqs) if (!checkEvent(r.pdu, version, lookup).signaturesOk) throw new Error("ceiling: event check failed");
  };
  const full = () => {
    for (const r of reqs) {
      const parsed = parseXMatrixHeaders([r.auth]);
      const auths = parsed.map((p) => (p.ok ? p.auth : null)).filter((a) => a !== null);
      if (!verifyRequest(auths, { method: "PUT", uri: r.path, content: r.pdu }, lookup, destination).ok) throw new Error("ceiling: request verify failed");
      if (!checkEvent(r.pdu, version, lookup).signaturesOk) throw new Error("ceiling: event check failed");
    }
  };
  const best = (fn: () => void) => {
    let b = Infinity;
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      fn();
      b = Math.min(b, performance.now() - t0);
    }
    return (reqs.length * 1000) / b;
  };
  return { eventOnlyPerSec: best(eventOnly), fullPerSec: best(full), knocks: reqs.length };
}

export function setRunTag(tag: string): void {
  runTag = tag;
}
