/**
 * Fan-out: one room with `servers` remote servers (one sink-farm process, each listener its own
 * server name 127.0.0.1:<port> and key; joined over make_join / send_join), then
 *   - live: `rate` events/s for `seconds` (Gatehouse: admin API; Synapse: client API /send);
 *   - backlog: every sink hangs its in-flight transaction while `backlog` events are queued,
 *     then all are released at once: the drain.
 * Reported: deliveries/s, PDUs per transaction, enqueue→delivered p50/p99 (origin_server_ts to
 * the sink's first receipt, same clock), and for Gatehouse Redis used_memory and RSS per queued PDU.
 */
import { Conn, percentile } from "./lib/loadgen.js";
import { enc, handshake } from "./lib/fed.js";
import { SinkFarm, type FarmStats } from "./lib/sink-farm-client.js";
import { rssOf, sleep, waitUntil, type GatehouseProc, type RedisProc, type SynapseProc } from "./lib/procs.js";
import { ROOM_VERSION } from "./knock.js";

export interface FanoutTarget {
  name: "Gatehouse" | "Synapse";
  serverName: string;
  port: number;
  createPublicRoom(): Promise<string>;
  /** Sends one message event; returns when the server accepted it. */
  send(roomId: string, n: number): Promise<void>;
  identity: { serverName: string; keyId: string; publicKeyBase64: string } | null;
  pid: number;
}

export function gatehouseFanoutTarget(gh: GatehouseProc): FanoutTarget {
  return {
    name: "Gatehouse",
    serverName: gh.serverName,
    port: gh.federationPort,
    pid: gh.pid,
    identity: { serverName: gh.serverName, keyId: gh.keyId, publicKeyBase64: Buffer.from(gh.publicKey).toString("base64").replace(/=+$/, "") },
    async createPublicRoom() {
      const r = await gh.admin("POST", "/rooms", { creator: `@admin:${gh.serverName}`, preset: "public_chat", room_version: ROOM_VERSION, name: "bench fan-out" });
      if (r.status !== 200) throw new Error(`create room: ${JSON.stringify(r.body)}`);
      return r.body.room_id;
    },
    async send(roomId, n) {
      const r = await gh.admin("POST", `/rooms/${enc(roomId)}/send/m.room.message`, { content: { msgtype: "m.text", body: `bench ${n}` } });
      if (r.status !== 200) throw new Error(`admin send: ${r.status} ${JSON.stringify(r.body)}`);
    },
  };
}

export async function synapseFanoutTarget(hs: SynapseProc): Promise<FanoutTarget> {
  const admin = await hs.user("benchfanout");
  let txn = 0;
  return {
    name: "Synapse",
    serverName: hs.serverName,
    port: hs.federationPort,
    pid: hs.pid,
    identity: null,
    async createPublicRoom() {
      const r = await hs.client(admin.token, "POST", "/_matrix/client/v3/createRoom", { room_version: ROOM_VERSION, preset: "public_chat", name: "bench fan-out" });
      if (r.status !== 200) throw new Error(`synapse createRoom: ${JSON.stringify(r.body)}`);
      return r.body.room_id;
    },
    async send(roomId, n) {
      const r = await hs.client(admin.token, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/b${Date.now()}-${txn++}`, { msgtype: "m.text", body: `bench ${n}` });
      if (r.status !== 200) throw new Error(`synapse send: ${r.status} ${JSON.stringify(r.body)}`);
    },
  };
}

export interface FanoutFigures {
  target: string;
  servers: number;
  joinSeconds: number;
  live: { events: number; seconds: number; deliveries: number; deliveriesPerSec: number; pdusPerTxn: number; p50Ms: number; p99Ms: number; complete: boolean };
  backlog: { events: number; enqueueSeconds: number; deliveries: number; drainSeconds: number; deliveriesPerSec: number; pdusPerTxn: number; complete: boolean };
  memory?: { queuedEntries: number; redisBytesPerQueuedPdu: number; rssBytesPerQueuedPdu: number };
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const fmt = (n: number, d = 0) => (Number.isFinite(n) ? n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }) : "–");

async function delivered(farm: SinkFarm): Promise<number> {
  return sum((await farm.stats()).perDest.map((d) => d.uniqueEvents));
}

export async function fanoutBench(
  target: FanoutTarget,
  opts: { servers: number; rate: number; seconds: number; backlog: number; redis?: RedisProc; gatehouse?: GatehouseProc; onJoined?: () => Promise<void> },
): Promise<FanoutFigures> {
  const log = (s: string) => console.log(`  [${target.name}] ${s}`);
  const farm = await SinkFarm.start(opts.servers, ROOM_VERSION);
  try {
    await farm.verifyAs(target.identity);
    const roomId = await target.createPublicRoom();

    // --- joins ---------------------------------------------------------------------------------
    const t0 = performance.now();
    const conns = Array.from({ length: 4 }, () => new Conn("127.0.0.1", target.port));
    let next = 0;
    await Promise.all(
      conns.map(async (conn) => {
        while (next < opts.servers) {
          const i = next++;
          const s = farm.server(i);
          await handshake(conn, s, target.serverName, "join", roomId, `@bench:${s.serverName}`);
        }
      }),
    );
    for (const c of conns) c.close();
    const joinSeconds = (performance.now() - t0) / 1000;
    log(`${opts.servers} servers joined in ${fmt(joinSeconds, 1)} s`);
    // Joins fan out to the servers already in the room; let that settle (n(n-1)/2 deliveries).
    const joinDeliveries = (opts.servers * (opts.servers - 1)) / 2;
    await waitUntil("join fan-out to settle", async () => (await delivered(farm)) >= joinDeliveries, 120_000, 250).catch((e) => log(`warning: ${(e as Error).message}`));
    await sleep(500);
    // The scale row measures memory per destination here (every server joined, fan-out settled).
    await opts.onJoined?.();
    await farm.reset();

    // --- live stream -------------------------------------------------------------------------------
    const events = Math.round(opts.rate * opts.seconds);
    const liveStart = Date.now();
    const interval = 1000 / opts.rate;
    const sends: Promise<void>[] = [];
    for (let n = 0; n < events; n++) {
      const due = liveStart + n * interval;
      const wait = due - Date.now();
      if (wait > 0) await sleep(wait);
      sends.push(target.send(roomId, n));
    }
    await Promise.all(sends);
    const expected = events * opts.servers;
    const complete = await waitUntil("live events delivered", async () => (await delivered(farm)) >= expected, 60_000, 100).then(() => true, () => false);
    const live = await farm.stats(true);
    const liveSeconds = (live.lastAt - liveStart) / 1000;
    const lat = [...live.latencies].sort((a, b) => a - b);
    const liveFig = {
      events,
      seconds: liveSeconds,
      deliveries: sum(live.perDest.map((d) => d.uniqueEvents)),
      deliveriesPerSec: sum(live.perDest.map((d) => d.uniqueEvents)) / liveSeconds,
      pdusPerTxn: sum(live.pdusPerTxn) / live.pdusPerTxn.length,
      p50Ms: percentile(lat, 50),
      p99Ms: percentile(lat, 99),
      complete,
    };
    log(
      `live ${opts.rate} ev/s × ${opts.seconds} s to ${opts.servers} servers: ${fmt(liveFig.deliveries)} deliveries${complete ? "" : " (INCOMPLETE)"}, ` +
        `${fmt(liveFig.pdusPerTxn, 2)} PDUs/txn, enqueue→delivered p50 ${fmt(liveFig.p50Ms)} ms, p99 ${fmt(liveFig.p99Ms)} ms`,
    );
    await farm.reset();

    // --- backlog drain -------------------------------------------------------------------------------
    const all = Array.from({ length: opts.servers }, (_, i) => i);
    await farm.mode(all, "hang");
    const memBefore = opts.redis && opts.gatehouse ? { redis: await opts.redis.usedMemory(), rss: rssOf(opts.gatehouse.pid) ?? 0 } : null;
    const e0 = performance.now();
    let sent = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (sent < opts.backlog) {
          const n = sent++;
          await target.send(roomId, 100_000 + n);
        }
      }),
    );
    const enqueueSeconds = (performance.now() - e0) / 1000;
    await sleep(300);
    let memory: FanoutFigures["memory"];
    if (memBefore && opts.redis && opts.gatehouse) {
      // /queue is paginated (next_token): read every page, or a room of more servers than one
      // page holds counts only the first page's queues.
      let queued = 0;
      for (let from: string | undefined = "0"; from !== undefined; ) {
        const q = await opts.gatehouse.admin("GET", `/queue?from=${from}`);
        queued += sum(((q.body?.destinations ?? []) as { pending_pdus: number }[]).map((d) => d.pending_pdus));
        from = q.body?.next_token as string | undefined;
      }
      const redisAfter = await opts.redis.usedMemory();
      const rssAfter = rssOf(opts.gatehouse.pid) ?? 0;
      memory = { queuedEntries: queued, redisBytesPerQueuedPdu: (redisAfter - memBefore.redis) / queued, rssBytesPerQueuedPdu: (rssAfter - memBefore.rss) / queued };
      log(`memory: ${fmt(queued)} queued PDU entries: Redis +${fmt(memory.redisBytesPerQueuedPdu)} B per queued PDU, RSS +${fmt(memory.rssBytesPerQueuedPdu)} B`);
    }
    const before = await farm.stats();
    const alreadyIn = sum(before.perDest.map((d) => d.uniqueEvents));
    const d0 = Date.now();
    await farm.mode(all, "ok", { release: "answer" });
    const bExpected = opts.backlog * opts.servers;
    const bComplete = await waitUntil("backlog delivered", async () => (await delivered(farm)) >= bExpected, 120_000, 50).then(() => true, () => false);
    const after = await farm.stats(true);
    const drainSeconds = (after.lastAt - d0) / 1000;
    const drained = sum(after.perDest.map((d) => d.uniqueEvents)) - alreadyIn;
    const txnsAfterRelease = after.pdusPerTxn.slice(0); // includes the hung first transactions
    const backlogFig = {
      events: opts.backlog,
      enqueueSeconds,
      deliveries: drained,
      drainSeconds,
      deliveriesPerSec: drained / drainSeconds,
      pdusPerTxn: sum(txnsAfterRelease) / txnsAfterRelease.length,
      complete: bComplete,
    };
    log(
      `backlog ${opts.backlog} events (queued in ${fmt(enqueueSeconds, 1)} s) × ${opts.servers} servers: drained ${fmt(drained)} deliveries in ${fmt(drainSeconds, 2)} s = ` +
        `${fmt(backlogFig.deliveriesPerSec)} deliveries/s, ${fmt(backlogFig.pdusPerTxn, 1)} PDUs/txn${bComplete ? "" : " (INCOMPLETE)"}`,
    );
    const bad = sum(after.perDest.map((d) => d.badSignatures));
    if (bad) log(`WARNING: ${bad} transactions with bad X-Matrix signatures`);
    return { target: target.name, servers: opts.servers, joinSeconds, live: liveFig, backlog: backlogFig, ...(memory ? { memory } : {}) };
  } finally {
    await farm.stop();
  }
}

export type { FarmStats };
