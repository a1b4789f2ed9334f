/**
 * Inbound: what a busy room mostly costs its resident server, events arriving from the other
 * servers in it. `origins` fake servers (sink-farm listeners, each its own name and key) join a
 * public v12 room over make_join / send_join; then each pushes `events` m.room.message events
 * through PUT /_matrix/federation/v1/send/{txnId}, `perTxn` PDUs per transaction, one
 * transaction in flight per origin. Every origin is also a destination: each accepted event is
 * forwarded to the other origins (the farm records them), as in a real room.
 *
 * Events are built and signed before the clock starts (on the bench's core). Each origin chains
 * its own events (prev_events = its previous event, from its join on), so the room has one forward
 * extremity per origin, as when several servers talk at once.
 *
 * Reported: accepted PDUs/s (first request sent → last transaction answered), transaction p50/p99,
 * and the server's CPU per accepted PDU from /proc (node and redis-server apart for Gatehouse) over
 * the whole run including the forwarding to the other origins (the run ends when every
 * destination has every event).
 */
import { readFileSync } from "node:fs";
import { Redis } from "ioredis";
import { Conn, percentile } from "./lib/loadgen.js";
import { handshake, signedRequest, signEvent, enc, type FakeServer } from "./lib/fed.js";
import { SinkFarm } from "./lib/sink-farm-client.js";
import { cpuSecondsOf, waitUntil, sleep } from "./lib/procs.js";
import { computeEventId } from "../src/protocol/event-hashing.js";
import { getRoomVersion } from "../src/protocol/room-versions.js";
import type { Pdu } from "../src/protocol/pdu.js";
import { ROOM_VERSION } from "./knock.js";
import type { FanoutTarget } from "./fanout.js";

export interface InboundFigures {
  target: string;
  origins: number;
  events: number;
  perTxn: number;
  accepted: number;
  refused: number;
  seconds: number;
  pdusPerSec: number;
  txnP50Ms: number;
  txnP99Ms: number;
  /** Server CPU per accepted PDU over the run and its forwarding, per process and in total. */
  cpuMsPerPdu: number;
  cpuSplit: { name: string; msPerPdu: number }[];
  forwardedSeconds: number | null;
  /** Deliveries of the pushed events to the other origins (origins − 1 per event when all forwarded). */
  forwarded: number;
  /** Gatehouse: Redis commands and bytes per accepted PDU (INFO stats / commandstats over the run). */
  redisTraffic?: { commandsPerPdu: number; bytesInPerPdu: number; bytesOutPerPdu: number; byCommand: { command: string; callsPerPdu: number; usecPerPdu: number }[] };
  loadAverage: string;
}

const fmt = (n: number, d = 0) => (Number.isFinite(n) ? n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }) : "–");

export function loadAverage(): string {
  try {
    return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  } catch {
    return "?";
  }
}

/** The gatehouse_room_* counters of each process (series → value). */
export async function roomCounters(urls: readonly string[] = []): Promise<Map<string, number>[]> {
  return Promise.all(
    urls.map(async (url) => {
      const text = await (await fetch(url)).text();
      const out = new Map<string, number>();
      for (const m of text.matchAll(/^(gatehouse_(?:room_[a-z_]+_total|outbound_transactions_total|outbound_pdus_per_transaction_(?:sum|count))(?:\{[^}]*\})?) (\S+)$/gm)) out.set(m[1]!, Number(m[2]));
      return out;
    }),
  );
}

export async function inboundBench(
  // ports: several gateway processes of one server (bench/cluster.ts): origin i sends to ports[i % n].
  // metricsUrls: Gatehouse's /metrics per process; the row prints what its gatehouse_room_* counters moved by.
  target: FanoutTarget & { pids: number[]; pidNames: string[]; redisUrl?: string; ports?: number[]; metricsUrls?: string[] },
  opts: { origins: number; events: number; perTxn: number },
): Promise<InboundFigures> {
  const log = (s: string) => console.log(`  [${target.name}] ${s}`);
  const version = getRoomVersion(ROOM_VERSION)!;
  const farm = await SinkFarm.start(opts.origins, ROOM_VERSION);
  try {
    await farm.verifyAs(target.identity);
    const roomId = await target.createPublicRoom();

    // --- joins (one at a time: each origin then knows the room's power levels event) ------------
    const conn = new Conn("127.0.0.1", target.port);
    const origins: { server: FakeServer; prev: string; depth: number; authEvents: string[] }[] = [];
    for (let i = 0; i < opts.origins; i++) {
      const server = farm.server(i);
      const userId = `@bench:${server.serverName}`;
      const { eventId, pdu, response } = await handshake(conn, server, target.serverName, "join", roomId, userId);
      const state = (response as { state: Pdu[] }).state;
      const pl = state.find((e) => e.type === "m.room.power_levels" && e.state_key === "");
      if (!pl) throw new Error(`${target.name}: send_join state has no power levels`);
      origins.push({ server, prev: eventId, depth: pdu.depth as number, authEvents: [computeEventId(pl, version), eventId] });
    }
    conn.close();
    // Joins fan out to the origins already in the room; let that settle, then count from zero.
    const joinDeliveries = (opts.origins * (opts.origins - 1)) / 2;
    await waitUntil("join fan-out", async () => (await farm.stats()).perDest.reduce((a, d) => a + d.uniqueEvents, 0) >= joinDeliveries, 60_000, 100).catch((e) => log(`warning: ${(e as Error).message}`));
    await sleep(300);
    await farm.reset();

    // --- build every transaction (signed events, signed requests) before the clock starts --------
    const txns: Buffer[][] = origins.map(() => []);
    const t0 = Date.now();
    origins.forEach((o, i) => {
      for (let start = 0; start < opts.events; start += opts.perTxn) {
        const pdus: Pdu[] = [];
        for (let n = start; n < Math.min(opts.events, start + opts.perTxn); n++) {
          const { pdu, eventId } = signEvent(
            o.server,
            {
              type: "m.room.message",
              room_id: roomId,
              sender: `@bench:${o.server.serverName}`,
              content: { msgtype: "m.text", body: `inbound ${i}/${n}` },
              prev_events: [o.prev],
              auth_events: o.authEvents,
              depth: ++o.depth,
              origin_server_ts: t0 + n,
            },
            ROOM_VERSION,
          );
          o.prev = eventId;
          pdus.push(pdu);
        }
        const txnId = `in${t0.toString(36)}-${i}-${start}`;
        const body = { origin: o.server.serverName, origin_server_ts: t0, pdus };
        txns[i]!.push(signedRequest(o.server, target.serverName, "PUT", `/_matrix/federation/v1/send/${enc(txnId)}`, body));
      }
    });
    log(`${opts.origins} origins × ${opts.events} events prepared (${txns[0]!.length} transactions each, ${opts.perTxn} PDUs per transaction)`);

    // --- push ------------------------------------------------------------------------------------
    const latencies: number[] = [];
    let accepted = 0;
    let refused = 0;
    let firstError: string | undefined;
    const redis = target.redisUrl ? new Redis(target.redisUrl, { maxRetriesPerRequest: 1 }) : null;
    // BullMQ counts every job added to a queue in its `…:id` key: the sender's jobs over the run.
    const bullJobs = async (): Promise<number> => {
      if (!redis) return 0;
      let total = 0;
      let cursor = "0";
      do {
        const [next, keys] = await redis.scan(cursor, "MATCH", "*:bull:*:id", "COUNT", 1000);
        cursor = next;
        for (const v of keys.length ? await redis.mget(...keys) : []) total += Number(v ?? 0);
      } while (cursor !== "0");
      return total;
    };
    const jobs0 = await bullJobs();
    await redis?.call("CONFIG", "RESETSTAT");
    const counters0 = await roomCounters(target.metricsUrls);
    const cpu0 = target.pids.map((p) => cpuSecondsOf(p) ?? 0);
    const start = performance.now();
    await Promise.all(
      txns.map(async (list, i) => {
        const c = new Conn("127.0.0.1", target.ports ? target.ports[i % target.ports.length]! : target.port);
        for (const req of list) {
          const a = performance.now();
          const res = await c.request(req);
          latencies.push(performance.now() - a);
          if (res.status !== 200) {
            refused += opts.perTxn;
            firstError ??= `HTTP ${res.status} ${res.body.toString().slice(0, 200)}`;
            continue;
          }
          const results = (JSON.parse(res.body.toString()) as { pdus: Record<string, { error?: string }> }).pdus;
          for (const r of Object.values(results)) {
            if (r.error) {
              refused++;
              firstError ??= r.error;
            } else accepted++;
          }
        }
        c.close();
      }),
    );
    const seconds = (performance.now() - start) / 1000;
    // Gatehouse forwards every accepted event to the other origins (it hosts the room); the run,
    // and the CPU count, end when they all have them, or when nothing more arrived for 2 s
    // (Synapse does not forward events another server sent: federation is full mesh).
    const expected = accepted * (opts.origins - 1);
    let forwarded = 0;
    let outboundTxns = 0;
    let lastChange = performance.now();
    let forwardedSeconds: number | null = null;
    for (;;) {
      const perDest = (await farm.stats()).perDest;
      const n = perDest.reduce((a, d) => a + d.uniqueEvents, 0);
      outboundTxns = perDest.reduce((a, d) => a + d.txns, 0);
      if (n !== forwarded) {
        forwarded = n;
        lastChange = performance.now();
      }
      if (n >= expected) {
        forwardedSeconds = (performance.now() - start) / 1000;
        break;
      }
      if (performance.now() - lastChange > 2000) break;
      await sleep(50);
    }
    const cpu1 = target.pids.map((p) => cpuSecondsOf(p) ?? 0);
    const counters1 = await roomCounters(target.metricsUrls);
    const split = target.pidNames.map((name, i) => ({ name, msPerPdu: ((cpu1[i]! - cpu0[i]!) * 1000) / Math.max(1, accepted) }));
    latencies.sort((a, b) => a - b);
    let redisTraffic: InboundFigures["redisTraffic"];
    const jobs = (await bullJobs()) - jobs0;
    if (redis) {
      // What each PDU costs in Redis round trips and bytes (the sender's too), by command.
      const stats = await redis.info("stats");
      const cmds = await redis.info("commandstats");
      redis.disconnect();
      const num = (re: RegExp) => Number(re.exec(stats)?.[1] ?? NaN);
      const per = Math.max(1, accepted);
      const byCommand = [...cmds.matchAll(/cmdstat_([a-z|_]+):calls=(\d+),usec=(\d+)/g)]
        .map((m) => ({ command: m[1]!, callsPerPdu: Number(m[2]) / per, usecPerPdu: Number(m[3]) / per }))
        .filter((c) => c.command !== "config" && c.command !== "info")
        .sort((a, b) => b.usecPerPdu - a.usecPerPdu);
      redisTraffic = {
        commandsPerPdu: byCommand.reduce((a, c) => a + c.callsPerPdu, 0),
        bytesInPerPdu: num(/total_net_input_bytes:(\d+)/) / per,
        bytesOutPerPdu: num(/total_net_output_bytes:(\d+)/) / per,
        byCommand,
      };
    }
    const fig: InboundFigures = {
      target: target.name,
      origins: opts.origins,
      events: opts.events,
      perTxn: opts.perTxn,
      accepted,
      refused,
      seconds,
      pdusPerSec: accepted / seconds,
      txnP50Ms: percentile(latencies, 50),
      txnP99Ms: percentile(latencies, 99),
      cpuMsPerPdu: split.reduce((a, s) => a + s.msPerPdu, 0),
      cpuSplit: split,
      forwardedSeconds,
      forwarded,
      ...(redisTraffic ? { redisTraffic } : {}),
      loadAverage: loadAverage(),
    };
    log(
      `${fmt(accepted)} of ${fmt(opts.origins * opts.events)} PDUs accepted in ${fmt(seconds, 2)} s = ${fmt(fig.pdusPerSec)} PDUs/s; txn p50 ${fmt(fig.txnP50Ms)} ms, p99 ${fmt(fig.txnP99Ms)} ms; ` +
        `server CPU ${fmt(fig.cpuMsPerPdu, 3)} ms/PDU${split.length > 1 ? ` (${split.map((s) => `${s.name} ${fmt(s.msPerPdu, 3)}`).join(" + ")})` : ""}; ` +
        `forwarded to the other ${opts.origins - 1} origins: ${fmt(forwarded)} of ${fmt(expected)} deliveries in ${fmt(outboundTxns)} transactions${forwardedSeconds === null ? "" : ` (all after ${fmt(forwardedSeconds, 2)} s)`}; load average ${fig.loadAverage}` +
        (firstError ? `; first refusal: ${firstError}` : ""),
    );
    if (fig.redisTraffic) {
      const t = fig.redisTraffic;
      log(
        `Redis per PDU: ${fmt(t.commandsPerPdu, 1)} commands, ${fmt(t.bytesInPerPdu)} B in, ${fmt(t.bytesOutPerPdu)} B out; by command (calls, µs per PDU): ` +
          t.byCommand.slice(0, 14).map((c) => `${c.command} ${fmt(c.callsPerPdu, 2)} ${fmt(c.usecPerPdu, 1)}`).join(", "),
      );
      // Per outbound transaction, every command (most of the sender's and BullMQ's are per transaction or per job).
      if (outboundTxns > 0)
        log(
          `Redis commands per outbound transaction (${fmt(outboundTxns)}): ${fmt((t.commandsPerPdu * accepted) / outboundTxns, 1)} in all; ` +
            [...t.byCommand].sort((a, b) => b.callsPerPdu - a.callsPerPdu).map((c) => `${c.command} ${fmt((c.callsPerPdu * accepted) / outboundTxns, 2)}`).join(", "),
        );
      if (outboundTxns > 0) log(`BullMQ jobs added over the run (the sender's job cycle): ${fmt(jobs)}, ${fmt(jobs / outboundTxns, 2)} per outbound transaction`);
    }
    if (counters1.length > 0) {
      const moved = counters1.map((c, p) => [...c].filter(([k, v]) => v !== (counters0[p]?.get(k) ?? 0)).map(([k, v]) => `${k} ${v - (counters0[p]!.get(k) ?? 0)}`).join(", "));
      log(`room counters over the run: ${moved.map((m, p) => `${target.pidNames[p]}: ${m || "none"}`).join("; ")}`);
    }
    return fig;
  } finally {
    await farm.stop();
  }
}
