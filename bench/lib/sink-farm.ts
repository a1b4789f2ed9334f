/**
 * A farm of fake remote homeservers in ONE child process (forked by SinkFarm in
 * sink-farm-client.ts): `count` HTTPS listeners on 127.0.0.1, each its own server name
 * (`127.0.0.1:<port>`) and ed25519 key (seed derived from a base, so the parent can sign as
 * them). Each serves its key document, countersigns /v2/invite, and receives
 * PUT /_matrix/federation/v1/send/{txnId}: checks the X-Matrix signature when it knows the
 * sender's key (Gatehouse), records every PDU by event ID with the txnIds it arrived in and the
 * time of first receipt. Per listener mode: ok, fail (500), hang (never answers), down (listener
 * closed, connections refused), slow (answers after delayMs).
 *
 * As the ORIGIN of events the parent built and signed as one of the sinks (the scale row's bulk
 * joins), the farm also answers what a receiving server asks that origin about them, from the
 * events the parent handed over (`originRoom`, `originEvents`): POST get_missing_events, GET
 * event, state_ids, state, backfill and event_auth. The room's state at an origin event is the
 * state the origin was sent when it joined (send_join's `state`) with its own later state events
 * applied in the order it built them (the bench's chains are linear). Synapse prunes its inbound
 * staging queue above 100 events of a room down to the queue's forward extremities and then fills
 * the gap from the origin with these requests.
 */
import https from "node:https";
import type http from "node:http";
import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { OwnKeys } from "../../src/keys/own-keys.js";
import { authenticateRequest } from "../../src/protocol/x-matrix.js";
import { defaultEd25519 } from "../../src/protocol/ed25519.js";
import { decodeBase64 } from "../../src/protocol/base64.js";
import { computeEventId } from "../../src/protocol/event-hashing.js";
import { addEventSignature } from "../../src/protocol/event-signing.js";
import { getRoomVersion } from "../../src/protocol/room-versions.js";
import { sinkKey } from "./fed.js";

export type SinkMode = "ok" | "fail" | "hang" | "down" | "slow";

interface Received {
  firstAt: number;
  ts: number;
  txns: string[];
  count: number;
}

interface Sink {
  index: number;
  port: number;
  serverName: string;
  server: https.Server;
  keys: OwnKeys;
  key: ReturnType<typeof sinkKey>;
  mode: SinkMode;
  delayMs: number;
  hung: Set<http.ServerResponse>;
  events: Map<string, Received>;
  txnIds: Set<string>;
  attempts: number;
  pdusPerTxn: number[];
  badSignatures: number;
  sockets: Set<import("node:stream").Duplex>;
}

const sinks: Sink[] = [];
let verifyKey: { serverName: string; keyId: string; verifier: ReturnType<typeof defaultEd25519.verifier> } | null = null;
let defaultVersion = getRoomVersion("12")!;
const roomVersions = new Map<string, string>();
/**
 * Event ID by room version and exact PDU JSON. All sinks live in this one process and a fan-out
 * sends every event to all of them, so the same PDU (same text) arrives once per sink; its event
 * ID (redaction + canonical JSON + sha256, a pure function of the PDU) is computed once instead
 * of once per sink. Every PDU is still parsed and recorded under its real event ID, and every
 * /send signature is still verified: this only keeps the farm (core 1) from being the bottleneck
 * of the fan-out drain it is meant to measure.
 */
const eventIds = new Map<string, string>();
const MAX_MEMO_EVENT_IDS = 200_000;
let tlsCert: { cert: string; key: string };

type PduJson = Record<string, unknown>;
/** A room as the origin of events in it sees it (see the header). */
interface OriginRoom {
  events: Map<string, PduJson>;
  /** The origin's own events, in the order it built them, and each one's position. */
  own: string[];
  position: Map<string, number>;
  /** The state it was sent when it joined: "type\0state_key" → event ID; and that state's auth chain. */
  base: Map<string, string>;
  baseAuthChain: string[];
}
const originRooms = new Map<string, OriginRoom>();
/** What receivers asked the origin: per endpoint, requests and events answered (404s apart). */
const served: Record<string, { requests: number; events: number; notFound: number }> = {};

function count(endpoint: string, events: number): void {
  const c = (served[endpoint] ??= { requests: 0, events: 0, notFound: 0 });
  c.requests++;
  if (events < 0) c.notFound++;
  else c.events += events;
}

const stateKeyOf = (pdu: PduJson): string | null => (typeof pdu.state_key === "string" ? `${String(pdu.type)}\0${pdu.state_key}` : null);

/** State before `eventId` (one of the origin's own events): the joined state, then its own state events before it. */
function stateBefore(room: OriginRoom, eventId: string): Map<string, string> | null {
  const at = room.position.get(eventId);
  if (at === undefined) return null;
  const state = new Map(room.base);
  for (let i = 0; i < at; i++) {
    const id = room.own[i]!;
    const k = stateKeyOf(room.events.get(id)!);
    if (k !== null) state.set(k, id);
  }
  return state;
}

/** The auth chain of `ids` among the events the origin knows (IDs it does not know are left out). */
function authChain(room: OriginRoom, ids: Iterable<string>): string[] {
  const seen = new Set<string>();
  const todo = [...ids];
  while (todo.length) {
    const pdu = room.events.get(todo.pop()!);
    for (const a of (pdu?.auth_events as string[] | undefined) ?? []) {
      if (!seen.has(a) && room.events.has(a)) {
        seen.add(a);
        todo.push(a);
      }
    }
  }
  for (const a of room.baseAuthChain) seen.add(a);
  return [...seen];
}

/** Walks prev_events back from `from` (not included), breadth first, up to `limit` events. */
function walkBack(room: OriginRoom, from: string[], stopAt: Set<string>, limit: number, minDepth: number): PduJson[] {
  const out: PduJson[] = [];
  const seen = new Set<string>(from);
  let frontier = from.flatMap((id) => (room.events.get(id)?.prev_events as string[] | undefined) ?? []);
  while (frontier.length && out.length < limit) {
    const next: string[] = [];
    for (const id of frontier) {
      if (seen.has(id) || stopAt.has(id) || out.length >= limit) continue;
      seen.add(id);
      const pdu = room.events.get(id);
      if (!pdu || Number(pdu.depth) < minDepth) continue;
      out.push(pdu);
      next.push(...((pdu.prev_events as string[] | undefined) ?? []));
    }
    frontier = next;
  }
  return out;
}

/** Answers the origin requests (see the header); false when `path` is not one of them. */
function onOriginRequest(sink: Sink, method: string, path: string, query: URLSearchParams, raw: string, res: http.ServerResponse): boolean {
  const notFound = (endpoint: string, what: string) => (count(endpoint, -1), answer(res, 404, { errcode: "M_NOT_FOUND", error: `origin: ${what}` }));
  const room = (id: string) => originRooms.get(decodeURIComponent(id));
  let m: RegExpExecArray | null;
  if (method === "POST" && (m = /^\/_matrix\/federation\/v1\/get_missing_events\/([^/]+)$/.exec(path))) {
    const r = room(m[1]!);
    if (!r) return notFound("get_missing_events", "unknown room"), true;
    let body: { earliest_events?: string[]; latest_events?: string[]; limit?: number; min_depth?: number };
    try {
      body = JSON.parse(raw);
    } catch {
      return answer(res, 400, { errcode: "M_NOT_JSON", error: "not JSON" }), true;
    }
    if (!Array.isArray(body.latest_events) || !Array.isArray(body.earliest_events)) return answer(res, 400, { errcode: "M_BAD_JSON", error: "earliest_events and latest_events are required" }), true;
    const events = walkBack(r, body.latest_events, new Set(body.earliest_events), Math.min(Number(body.limit ?? 10), 100), Number(body.min_depth ?? 0));
    events.sort((a, b) => Number(a.depth) - Number(b.depth));
    count("get_missing_events", events.length);
    return answer(res, 200, { events }), true;
  }
  if (method !== "GET") return false;
  if ((m = /^\/_matrix\/federation\/v1\/event\/([^/]+)$/.exec(path))) {
    const id = decodeURIComponent(m[1]!);
    for (const r of originRooms.values()) {
      const pdu = r.events.get(id);
      if (pdu) return count("event", 1), answer(res, 200, { origin: sink.serverName, origin_server_ts: Date.now(), pdus: [pdu] }), true;
    }
    return notFound("event", "unknown event"), true;
  }
  if ((m = /^\/_matrix\/federation\/v1\/(state_ids|state)\/([^/]+)$/.exec(path))) {
    const endpoint = m[1]!;
    const r = room(m[2]!);
    const eventId = query.get("event_id") ?? "";
    const state = r && stateBefore(r, eventId);
    if (!r || !state) return notFound(endpoint, "no state known at that event"), true;
    const ids = [...state.values()];
    const chain = authChain(r, ids);
    count(endpoint, ids.length);
    if (endpoint === "state_ids") return answer(res, 200, { pdu_ids: ids, auth_chain_ids: chain }), true;
    return answer(res, 200, { pdus: ids.map((id) => r.events.get(id)!), auth_chain: chain.map((id) => r.events.get(id)!) }), true;
  }
  if ((m = /^\/_matrix\/federation\/v1\/backfill\/([^/]+)$/.exec(path))) {
    const r = room(m[1]!);
    const from = query.getAll("v");
    if (!r || !from.length) return notFound("backfill", "unknown room or no v"), true;
    const limit = Math.min(Number(query.get("limit") ?? 10), 100);
    // backfill includes the `v` events themselves.
    const events = [...from.map((id) => r.events.get(id)).filter((e): e is PduJson => !!e), ...walkBack(r, from, new Set(), limit, 0)].slice(0, limit);
    count("backfill", events.length);
    return answer(res, 200, { origin: sink.serverName, origin_server_ts: Date.now(), pdus: events }), true;
  }
  if ((m = /^\/_matrix\/federation\/v1\/event_auth\/([^/]+)\/([^/]+)$/.exec(path))) {
    const r = room(m[1]!);
    const id = decodeURIComponent(m[2]!);
    if (!r || !r.events.has(id)) return notFound("event_auth", "unknown event"), true;
    const chain = authChain(r, [id]);
    count("event_auth", chain.length);
    return answer(res, 200, { auth_chain: chain.map((a) => r.events.get(a)!) }), true;
  }
  return false;
}

function send(msg: unknown): void {
  process.send!(msg);
}

function answer(res: http.ServerResponse, status: number, body: unknown): void {
  if (res.destroyed || res.writableEnded) return;
  const out = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(out) });
  res.end(out);
}

function handle(sink: Sink, req: http.IncomingMessage, res: http.ServerResponse): void {
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    const raw = Buffer.concat(chunks).toString("utf8");
    const url = req.url ?? "/";
    const path = url.split("?")[0]!;
    if (req.method === "GET" && (path === "/_matrix/key/v2/server" || path.startsWith("/_matrix/key/v2/server/"))) {
      const doc = sink.keys.keyDocument(Date.now());
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(doc.body);
      return;
    }
    if (req.method === "PUT" && path.startsWith("/_matrix/federation/v2/invite/")) {
      try {
        const b = JSON.parse(raw) as { room_version: string; event: Record<string, unknown> };
        const v = getRoomVersion(b.room_version)!;
        return answer(res, 200, { event: addEventSignature(b.event, sink.serverName, sink.key, v) });
      } catch (e) {
        return answer(res, 400, { errcode: "M_BAD_JSON", error: (e as Error).message });
      }
    }
    if (path.startsWith("/_matrix/federation/") && !path.startsWith("/_matrix/federation/v1/send/")) {
      // Requests to the origin: signed like /send when the farm knows the caller's key.
      if (verifyKey) {
        const v = verifyKey;
        const content = req.method === "POST" ? JSON.parse(raw || "null") : undefined;
        const auth = authenticateRequest(req.headers.authorization, { method: req.method ?? "GET", uri: url, content }, (entity, keyId) => (entity === v.serverName && keyId === v.keyId ? v.verifier : undefined), sink.serverName);
        if (!auth.ok) {
          sink.badSignatures++;
          return answer(res, 401, { errcode: "M_UNAUTHORIZED", error: "bad signature" });
        }
      }
      if (onOriginRequest(sink, req.method ?? "GET", path, new URLSearchParams(url.split("?")[1] ?? ""), raw, res)) return;
    }
    const m = /^\/_matrix\/federation\/v1\/send\/([^/?]+)$/.exec(path);
    if (req.method !== "PUT" || !m) return answer(res, 404, { errcode: "M_UNRECOGNIZED", error: "sink: unknown endpoint" });
    onSend(sink, decodeURIComponent(m[1]!), url, raw, req, res);
  });
}

function onSend(sink: Sink, txnId: string, uri: string, raw: string, req: http.IncomingMessage, res: http.ServerResponse): void {
  sink.attempts++;
  let body: { origin: string; pdus: Record<string, unknown>[] };
  try {
    body = JSON.parse(raw);
  } catch {
    return answer(res, 400, { errcode: "M_NOT_JSON", error: "not JSON" });
  }
  if (verifyKey) {
    const v = verifyKey;
    const auth = authenticateRequest(req.headers.authorization, { method: "PUT", uri, content: body }, (entity, keyId) => (entity === v.serverName && keyId === v.keyId ? v.verifier : undefined), sink.serverName);
    if (!auth.ok) {
      sink.badSignatures++;
      return answer(res, 401, { errcode: "M_UNAUTHORIZED", error: "bad signature" });
    }
  }
  if (sink.mode === "fail") return answer(res, 500, { errcode: "M_UNKNOWN", error: "sink: injected failure" });
  // Processed on receipt, once per txnId (like Synapse), whatever the answer does next.
  const now = Date.now();
  const results: Record<string, unknown> = {};
  if (!sink.txnIds.has(txnId)) {
    sink.txnIds.add(txnId);
    sink.pdusPerTxn.push(body.pdus.length);
    for (const pdu of body.pdus) {
      const roomId = String(pdu.room_id);
      const version = getRoomVersion(roomVersions.get(roomId) ?? "") ?? defaultVersion;
      const memoKey = `${version.id} ${JSON.stringify(pdu)}`;
      let id = eventIds.get(memoKey);
      if (id === undefined) {
        try {
          id = computeEventId(pdu, version);
        } catch {
          id = `?${JSON.stringify(pdu).length}`;
        }
        if (eventIds.size >= MAX_MEMO_EVENT_IDS) eventIds.clear();
        eventIds.set(memoKey, id);
      }
      results[id] = {};
      const r = sink.events.get(id);
      if (r) {
        r.count++;
        r.txns.push(txnId);
      } else sink.events.set(id, { firstAt: now, ts: Number(pdu.origin_server_ts), txns: [txnId], count: 1 });
    }
  }
  if (sink.mode === "hang") {
    sink.hung.add(res);
    res.on("close", () => sink.hung.delete(res));
    return;
  }
  if (sink.mode === "slow") {
    setTimeout(() => answer(res, 200, { pdus: results }), sink.delayMs);
    return;
  }
  answer(res, 200, { pdus: results });
}

async function listen(sink: Sink, port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    sink.server.once("error", reject);
    sink.server.listen(port, "127.0.0.1", () => {
      sink.server.off("error", reject);
      resolve();
    });
  });
}

async function startSink(index: number, base: string): Promise<Sink> {
  const server = https.createServer({ cert: tlsCert.cert, key: tlsCert.key, keepAliveTimeout: 60_000 });
  const sink: Sink = {
    index,
    port: 0,
    serverName: "",
    server,
    keys: null as unknown as OwnKeys,
    key: null as unknown as ReturnType<typeof sinkKey>,
    mode: "ok",
    delayMs: 0,
    hung: new Set(),
    events: new Map(),
    txnIds: new Set(),
    attempts: 0,
    pdusPerTxn: [],
    badSignatures: 0,
    sockets: new Set(),
  };
  server.on("connection", (s) => {
    sink.sockets.add(s);
    s.on("close", () => sink.sockets.delete(s));
  });
  server.on("request", (req, res) => handle(sink, req, res));
  await listen(sink, 0);
  sink.port = (server.address() as AddressInfo).port;
  sink.serverName = `127.0.0.1:${sink.port}`;
  sink.key = sinkKey(base, index);
  sink.keys = new OwnKeys(sink.serverName, [sink.key], [], 86_400_000);
  return sink;
}

async function setMode(sink: Sink, mode: SinkMode, delayMs = 0, release: "answer" | "destroy" = "answer"): Promise<void> {
  const was = sink.mode;
  sink.mode = mode;
  sink.delayMs = delayMs;
  if (was === "hang" && mode !== "hang") {
    for (const res of sink.hung) {
      if (release === "answer") answer(res, 200, { pdus: {} });
      else res.socket?.destroy();
    }
    sink.hung.clear();
  }
  if (mode === "down" && was !== "down") {
    await new Promise<void>((resolve) => {
      sink.server.close(() => resolve());
      for (const s of sink.sockets) s.destroy();
    });
  }
  if (was === "down" && mode !== "down") await listen(sink, sink.port);
}

function stats(withLatencies: boolean) {
  const perDest = sinks.map((s) => {
    let dups = 0;
    let received = 0;
    for (const r of s.events.values()) {
      received += r.count;
      // Polled every 50 ms while a drain runs: no Set for the usual single-txn entry.
      if (r.txns.length > 1 && new Set(r.txns).size > 1) dups++;
    }
    return { serverName: s.serverName, attempts: s.attempts, txns: s.txnIds.size, uniqueEvents: s.events.size, received, dupAcrossTxns: dups, badSignatures: s.badSignatures, mode: s.mode };
  });
  const latencies: number[] = [];
  const pdusPerTxn: number[] = [];
  if (withLatencies) {
    for (const s of sinks) {
      for (const r of s.events.values()) latencies.push(r.firstAt - r.ts);
      pdusPerTxn.push(...s.pdusPerTxn);
    }
  }
  let firstAt = Infinity;
  let lastAt = 0;
  for (const s of sinks) {
    for (const r of s.events.values()) {
      if (r.firstAt < firstAt) firstAt = r.firstAt;
      if (r.firstAt > lastAt) lastAt = r.firstAt;
    }
  }
  return { perDest, latencies, pdusPerTxn, firstAt, lastAt };
}

process.on("message", async (msg: any) => {
  try {
    switch (msg.cmd) {
      case "start": {
        tlsCert = { cert: readFileSync(msg.certFile, "utf8"), key: readFileSync(msg.keyFile, "utf8") };
        if (msg.roomVersion) defaultVersion = getRoomVersion(msg.roomVersion)!;
        for (let i = 0; i < msg.count; i++) sinks.push(await startSink(i, msg.base));
        send({ id: msg.id, ok: true, servers: sinks.map((s) => s.serverName) });
        break;
      }
      case "verify": {
        verifyKey = msg.serverName ? { serverName: msg.serverName, keyId: msg.keyId, verifier: defaultEd25519.verifier(decodeBase64(msg.publicKey)!) } : null;
        send({ id: msg.id, ok: true });
        break;
      }
      case "originRoom": {
        // The state the origin was sent when it joined (send_join's state and auth_chain).
        const v = getRoomVersion(msg.version)!;
        const room: OriginRoom = { events: new Map(), own: [], position: new Map(), base: new Map(), baseAuthChain: [] };
        for (const pdu of msg.state as PduJson[]) {
          const id = computeEventId(pdu, v);
          room.events.set(id, pdu);
          room.base.set(stateKeyOf(pdu)!, id);
        }
        for (const pdu of msg.authChain as PduJson[]) {
          const id = computeEventId(pdu, v);
          room.events.set(id, pdu);
          room.baseAuthChain.push(id);
        }
        originRooms.set(msg.roomId, room);
        send({ id: msg.id, ok: true });
        break;
      }
      case "originEvents": {
        // Events the origin built, in order: [eventId, pdu] pairs.
        const room = originRooms.get(msg.roomId)!;
        for (const [id, pdu] of msg.events as [string, PduJson][]) {
          room.position.set(id, room.own.length);
          room.own.push(id);
          room.events.set(id, pdu);
        }
        send({ id: msg.id, ok: true });
        break;
      }
      case "served":
        send({ id: msg.id, ok: true, served });
        break;
      case "roomVersion":
        roomVersions.set(msg.roomId, msg.version);
        send({ id: msg.id, ok: true });
        break;
      case "mode":
        for (const i of msg.indices as number[]) await setMode(sinks[i]!, msg.mode, msg.delayMs, msg.release);
        send({ id: msg.id, ok: true });
        break;
      case "reset":
        for (const s of sinks) {
          s.events.clear();
          s.txnIds.clear();
          s.pdusPerTxn = [];
          s.attempts = 0;
        }
        send({ id: msg.id, ok: true });
        break;
      case "stats":
        send({ id: msg.id, ok: true, stats: stats(!!msg.latencies) });
        break;
      case "has": {
        // For each sink index: how many of `ids` it has received.
        const out = (msg.indices as number[]).map((i) => (msg.ids as string[]).filter((id) => sinks[i]!.events.has(id)).length);
        send({ id: msg.id, ok: true, counts: out });
        break;
      }
      case "receipts": {
        // For each of `ids`: when the last sink got it (max first receipt over every sink), or
        // null while a sink lacks it; and the first receipt of anything after `after` (ms).
        const ids = msg.ids as string[];
        const lastReceipt = ids.map((id) => {
          let max = 0;
          for (const s of sinks) {
            const r = s.events.get(id);
            if (!r) return null;
            if (r.firstAt > max) max = r.firstAt;
          }
          return max;
        });
        let firstAfter: number | null = null;
        const after = Number(msg.after ?? Infinity);
        for (const s of sinks) for (const r of s.events.values()) if (r.firstAt > after && (firstAfter === null || r.firstAt < firstAfter)) firstAfter = r.firstAt;
        send({ id: msg.id, ok: true, lastReceipt, firstAfter });
        break;
      }
      case "check": {
        // expected[i] = event IDs sink i must have received exactly once per txn.
        const report = (msg.expected as Record<string, string[]>);
        const out: Record<string, { missing: string[]; extra: number; dupAcrossTxns: number }> = {};
        for (const s of sinks) {
          const exp = report[s.serverName];
          if (!exp) continue;
          const set = new Set(exp);
          const missing = exp.filter((id) => !s.events.has(id));
          let extra = 0;
          let dup = 0;
          for (const [id, r] of s.events) {
            if (!set.has(id)) extra++;
            if (new Set(r.txns).size > 1) dup++;
          }
          out[s.serverName] = { missing, extra, dupAcrossTxns: dup };
        }
        send({ id: msg.id, ok: true, report: out });
        break;
      }
      case "stop":
        for (const s of sinks) {
          for (const res of s.hung) res.destroy();
          for (const so of s.sockets) so.destroy();
          s.server.close();
        }
        send({ id: msg.id, ok: true });
        setTimeout(() => process.exit(0), 50);
        break;
    }
  } catch (e) {
    send({ id: msg.id, ok: false, error: (e as Error).stack });
  }
});
