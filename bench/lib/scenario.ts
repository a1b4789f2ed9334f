/**
 * Shared set-up for soak and fault runs against a Gatehouse child process: a room with the sink
 * farm's servers joined, the room timeline as Redis holds it, and the exactly-once check (every
 * accepted event after a server joined, delivered to it, never under two txnIds).
 */
import { Redis } from "ioredis";
import { RedisKeys } from "../../src/store/redis-keys.js";
import { Conn } from "./loadgen.js";
import { enc, handshake } from "./fed.js";
import type { SinkFarm } from "./sink-farm-client.js";
import type { GatehouseProc } from "./procs.js";

export async function createRoom(gh: GatehouseProc, body: Record<string, unknown>): Promise<string> {
  const r = await gh.admin("POST", "/rooms", { creator: `@admin:${gh.serverName}`, room_version: "12", ...body });
  if (r.status !== 200) throw new Error(`create room: ${JSON.stringify(r.body)}`);
  return r.body.room_id as string;
}

/** Joins sink servers `indices` to a public room (make_join/send_join); returns their join event IDs. */
export async function joinSinks(gh: GatehouseProc, farm: SinkFarm, roomId: string, indices: number[]): Promise<Map<string, string>> {
  const joins = new Map<string, string>();
  const conns = Array.from({ length: 4 }, () => new Conn("127.0.0.1", gh.federationPort));
  let next = 0;
  await Promise.all(
    conns.map(async (conn) => {
      while (next < indices.length) {
        const i = indices[next++]!;
        const s = farm.server(i);
        const { eventId } = await handshake(conn, s, gh.serverName, "join", roomId, `@sink:${s.serverName}`);
        joins.set(s.serverName, eventId);
      }
      conn.close();
    }),
  );
  return joins;
}

/** Accepted events (no status) of a room in timeline order, with stream positions. */
export async function acceptedTimeline(redisUrl: string, roomId: string, prefix = "gh"): Promise<{ eventId: string; stream: number }[]> {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 3 });
  try {
    const k = new RedisKeys(prefix);
    const flat = await redis.zrange(k.timeline(roomId), 0, -1, "WITHSCORES");
    const statuses = await redis.hgetall(k.eventStatus(roomId));
    const out: { eventId: string; stream: number }[] = [];
    for (let i = 0; i < flat.length; i += 2) if (!statuses[flat[i]!]) out.push({ eventId: flat[i]!, stream: Number(flat[i + 1]) });
    return out;
  } finally {
    redis.disconnect();
  }
}

/** What each sink must have received: accepted events after its join (it is never their origin). */
export function expectedDeliveries(timeline: { eventId: string; stream: number }[], joins: Map<string, string>): Record<string, string[]> {
  const streamOf = new Map(timeline.map((t) => [t.eventId, t.stream]));
  const out: Record<string, string[]> = {};
  for (const [server, joinId] of joins) {
    const from = streamOf.get(joinId);
    if (from === undefined) throw new Error(`join of ${server} is not in the timeline`);
    out[server] = timeline.filter((t) => t.stream > from).map((t) => t.eventId);
  }
  return out;
}

export interface DeliveryReport {
  destinations: number;
  expected: number;
  missing: number;
  dupAcrossTxns: number;
  extra: number;
  worst: string[];
}

export async function checkDeliveries(farm: SinkFarm, expected: Record<string, string[]>): Promise<DeliveryReport> {
  const report = await farm.check(expected);
  let missing = 0;
  let dup = 0;
  let extra = 0;
  const worst: string[] = [];
  for (const [server, r] of Object.entries(report)) {
    missing += r.missing.length;
    dup += r.dupAcrossTxns;
    extra += r.extra;
    if (r.missing.length || r.dupAcrossTxns) worst.push(`${server}: ${r.missing.length} missing, ${r.dupAcrossTxns} under a second txnId`);
  }
  return { destinations: Object.keys(report).length, expected: Object.values(expected).reduce((a, b) => a + b.length, 0), missing, dupAcrossTxns: dup, extra, worst: worst.slice(0, 10) };
}

/** Polls until every sink in `expected` has all its events, or the timeout. Returns seconds taken or null. */
export async function waitDelivered(farm: SinkFarm, expected: Record<string, string[]>, timeoutMs: number): Promise<number | null> {
  const t0 = Date.now();
  for (;;) {
    const stats = await farm.stats();
    const counts = new Map(stats.perDest.map((d) => [d.serverName, d.uniqueEvents]));
    if (Object.entries(expected).every(([server, ids]) => (counts.get(server) ?? 0) >= ids.length)) {
      const r = await farm.check(expected);
      if (Object.values(r).every((x) => x.missing.length === 0)) return (Date.now() - t0) / 1000;
    }
    if (Date.now() - t0 > timeoutMs) return null;
    await new Promise((res) => setTimeout(res, 250));
  }
}

/** Time until sinks `indices` all hold every one of `ids` (a recovered destination catching up). */
export async function catchUpSeconds(farm: SinkFarm, indices: number[], ids: string[], timeoutMs: number): Promise<number | null> {
  const t0 = Date.now();
  for (;;) {
    const counts = await farm.has(indices, ids);
    if (counts.every((c) => c === ids.length)) return (Date.now() - t0) / 1000;
    if (Date.now() - t0 > timeoutMs) return null;
    await new Promise((res) => setTimeout(res, 50));
  }
}

export { enc };
