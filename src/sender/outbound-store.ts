/**
 * The outbound queue in Redis, per destination (keys in ../store/redis-keys.ts):
 *   out:{dest}:pdus    LIST of "roomId eventId", appended by the persist-event script
 *   out:{dest}:edus    LIST of EDU JSON, appended by enqueueEdu
 *   out:{dest}:txn     HASH, the transaction in flight: txn_id, pdu_count, edu_count,
 *                      created_ts, digest (of its body), attempts, ...
 *   out:{dest}:txn-body STRING, the exact body of a transaction stored by an older version (which
 *                      kept it there, or in the hash's `body` field; both are still read and
 *                      re-sent as they are). New transactions store no body: see below.
 *   out:{dest}:status  HASH, last_success_ts, last_error, last_error_ts, failures, backoff_until,
 *                      isolate_pdus / isolate_edus (entries of a rejected transaction still to be
 *                      sent apart, see ../store/lua/sender-reject-txn.lua), counters
 *   out:{dest}:dead    LIST of dead letters: JSON {ref, reason, status, ts, txn_id}, PDUs the
 *                      destination rejected when sent alone (replayed or dropped by an operator)
 *
 * The in-flight transaction always covers the first pdu_count / edu_count entries of the lists
 * (lists only grow at the tail; only a commit removes from the head, and only for the txn_id it
 * names), so a crash at any point re-sends the same txn_id, and a commit for a transaction that is
 * no longer current is a no-op.
 *
 * The body is not stored: it is a function of what is stored — the events those entries name (as
 * a rule stored once under their event ID: redactions are applied when events are served, see
 * ../rooms/redactions.ts), the EDU JSON in the entries, created_ts, and this server's name — so a
 * re-send rebuilds it (per-destination.ts) and compares it with the digest stored with the
 * transaction. Should it differ (an event's stored JSON rewritten meanwhile, as when an outlier
 * is stored again as a full event or an invite is queued again for application services; an
 * event deleted; an upgrade that encodes differently), the transaction is replaced by a new one
 * with a new txn_id covering the same entries (receivers de-duplicate PDUs by event ID): a
 * txn_id is never sent with two bodies.
 */
import { createHash } from "node:crypto";
import type { Redis } from "ioredis";
import type { RedisKeys } from "../store/redis-keys.js";
import { defineLuaCommands } from "../store/lua-scripts.js";

/** A stored transaction without its body (what the admin views need). */
export interface StoredTxnInfo {
  txnId: string;
  /**
   * The body is canonical JSON, so it is signed as it is (no re-encoding). Transactions stored
   * before bodies were built canonically lack the flag; they are re-sent byte for byte and
   * signed over the canonical form of the parsed body.
   */
  canonical: boolean;
  pduCount: number;
  eduCount: number;
  createdTs: number;
  /** Attempts made so far (incremented before each send). */
  attempts: number;
  /** Attempts answered with a 4xx other than 429. */
  rejections: number;
  lastAttemptTs: number | null;
  /** Digest of the body (bodyDigest), by which a rebuilt body is checked; null for an older version's transaction (which stores its body). */
  digest: string | null;
}

/** The digest stored with a transaction: SHA-256 of its body, base64url. */
export function bodyDigest(body: string | Buffer): string {
  return createHash("sha256").update(body).digest("base64url");
}

export interface StoredTxn extends StoredTxnInfo {
  /** The exact JSON body sent (and re-sent): as read from Redis, or its UTF-8 bytes as built. */
  body: string | Buffer;
}

export interface DestinationStatus {
  lastSuccessTs: number | null;
  lastError: string | null;
  lastErrorTs: number | null;
  failures: number;
  backoffUntil: number;
  txnsSent: number;
  pdusSent: number;
  edusSent: number;
  pduErrors: number;
  droppedBatches: number;
  droppedPdus: number;
  droppedEdus: number;
  /** PDUs ever moved to the dead-letter list. */
  deadLettered: number;
  /** PDUs of a rejected transaction still to be sent one per transaction. */
  isolatePdus: number;
}

/** A PDU the destination rejected when sent alone. */
export interface DeadLetter {
  roomId: string;
  eventId: string;
  reason: string;
  status: number;
  ts: number;
  txnId: string;
}

// Scripts: ../store/lua/sender-*.lua.

type ScriptedRedis = Redis & {
  gatehouseCreateTxn(numKeys: number, ...args: string[]): Promise<[string, string]>;
  gatehouseBegin(numKeys: number, ...args: string[]): Promise<[string, string[], string[], string[], string]>;
  gatehouseMarkAttempt(numKeys: number, ...args: string[]): Promise<number>;
  gatehouseCommitTxn(numKeys: number, ...args: string[]): Promise<[number, number, number, string[], string[]]>;
  gatehouseRejectTxn(numKeys: number, ...args: string[]): Promise<[string, number, number]>;
  gatehouseDeadLetters(numKeys: number, ...args: string[]): Promise<number>;
};

const num = (v: string | undefined | null, fallback = 0): number => (v === undefined || v === null || v === "" ? fallback : Number(v));
const numOrNull = (v: string | undefined | null): number | null => (v === undefined || v === null || v === "" || v === "0" ? null : Number(v));

/** The transaction hash without its body; null when no transaction is stored. */
export function parseTxnInfo(h: Record<string, string>): StoredTxnInfo | null {
  if (!h.txn_id) return null;
  return {
    txnId: h.txn_id,
    canonical: h.canonical === "1",
    pduCount: num(h.pdu_count),
    eduCount: num(h.edu_count),
    createdTs: num(h.created_ts),
    attempts: num(h.attempts),
    rejections: num(h.rejections),
    lastAttemptTs: numOrNull(h.last_attempt_ts),
    digest: h.digest || null,
  };
}

/**
 * The stored transaction from its hash and its body key's value (`bodyKeyValue`: null or ""
 * when that key is absent); the body of a transaction stored by an older version is the hash's
 * `body` field. Null when no transaction (or, which cannot happen, one without a body) is stored.
 */
export function parseTxn(h: Record<string, string>, bodyKeyValue: string | null): StoredTxn | null {
  const info = parseTxnInfo(h);
  const body = bodyKeyValue || h.body;
  if (!info || body === undefined) return null;
  return { ...info, body };
}

export function parseStatus(h: Record<string, string>): DestinationStatus {
  return {
    lastSuccessTs: numOrNull(h.last_success_ts),
    lastError: h.last_error ?? null,
    lastErrorTs: numOrNull(h.last_error_ts),
    failures: num(h.failures),
    backoffUntil: num(h.backoff_until),
    txnsSent: num(h.txns_sent),
    pdusSent: num(h.pdus_sent),
    edusSent: num(h.edus_sent),
    pduErrors: num(h.pdu_errors),
    droppedBatches: num(h.dropped_batches),
    droppedPdus: num(h.dropped_pdus),
    droppedEdus: num(h.dropped_edus),
    deadLettered: num(h.dead_lettered),
    isolatePdus: num(h.isolate_pdus),
  };
}

export interface DestinationSnapshot {
  destination: string;
  pendingPdus: number;
  pendingEdus: number;
  deadLetters: number;
  txn: StoredTxnInfo | null;
  status: DestinationStatus;
}

/** A stored transaction whose body is to be rebuilt from the entries it covers. */
export interface UnbuiltTxn extends StoredTxnInfo {
  pdus: string[];
  edus: string[];
}

/** A destination's backoff, stored transaction and queue heads, as a send starts from them. */
export interface SendStart {
  backoffUntil: number;
  /** A stored transaction with its stored body (an older version's). */
  txn: StoredTxn | null;
  /** A stored transaction without a body (rebuilt from its entries and checked against its digest). */
  unbuilt?: UnbuiltTxn | null;
  /** The heads of the queues (empty when a transaction is stored). */
  head: { pdus: string[]; edus: string[] };
}

export class OutboundStore {
  private readonly redis: ScriptedRedis;

  constructor(
    redis: Redis,
    readonly keys: RedisKeys,
  ) {
    this.redis = redis as ScriptedRedis;
    defineLuaCommands(redis, {
      gatehouseCreateTxn: "sender-create-txn",
      gatehouseBegin: "sender-begin",
      gatehouseMarkAttempt: "sender-mark-attempt",
      gatehouseCommitTxn: "sender-commit-txn",
      gatehouseRejectTxn: "sender-reject-txn",
      gatehouseDeadLetters: "sender-dead-letters",
    });
  }

  /**
   * What one sender run needs to start, in one round trip: the destination's backoff, the stored
   * transaction, and (when there is none) the heads of the queues. A script rather than MULTI:
   * this runs once per transaction, and an ioredis pipeline object costs more to build than the
   * commands cost Redis.
   */
  async begin(destination: string, maxPdus: number, maxEdus: number): Promise<SendStart> {
    const k = this.keys;
    const [backoff, txnFlat, pdus, edus, body] = await this.redis.gatehouseBegin(
      5,
      k.destinationStatus(destination),
      k.outboundTxn(destination),
      k.outboundPdus(destination),
      k.outboundEdus(destination),
      k.outboundTxnBody(destination),
      String(maxPdus),
      String(maxEdus),
    );
    const h: Record<string, string> = {};
    for (let i = 0; i + 1 < txnFlat.length; i += 2) h[txnFlat[i]!] = txnFlat[i + 1]!;
    const txn = parseTxn(h, body);
    if (txn) return { backoffUntil: num(backoff), txn, head: { pdus: [], edus: [] } };
    const info = parseTxnInfo(h);
    if (info) return { backoffUntil: num(backoff), txn: null, unbuilt: { ...info, pdus, edus }, head: { pdus: [], edus: [] } };
    return { backoffUntil: num(backoff), txn: null, head: { pdus, edus } };
  }

  /** The head of the queues: up to `maxPdus` PDU references and `maxEdus` EDU JSON strings. */
  async head(destination: string, maxPdus: number, maxEdus: number): Promise<{ pdus: string[]; edus: string[] }> {
    const k = this.keys;
    const res = (await this.redis
      .multi()
      .lrange(k.outboundPdus(destination), 0, maxPdus - 1)
      .lrange(k.outboundEdus(destination), 0, maxEdus - 1)
      .exec()) as [Error | null, string[]][];
    return { pdus: res[0]![1], edus: res[1]![1] };
  }

  /**
   * Stores a new transaction covering exactly `pduRefs` / `edus` (which must still be the heads
   * of the lists), with the digest of its body (bodyDigest; the body itself is not stored, see
   * above). Returns the txn ID; "exists" when a transaction is already stored (the caller
   * sends that one), "stale" when the heads changed under it (the caller rebuilds).
   * `attempted`: the caller sends it at once; it is stored with its first attempt counted (as
   * markAttempt would). `replaces`: the txn_id of the stored transaction (covering the same
   * entries) this one replaces, because that one's body could not be rebuilt.
   */
  async createTxn(
    destination: string,
    txnIdPrefix: string,
    digest: string,
    createdTs: number,
    pduRefs: readonly string[],
    edus: readonly string[],
    opts: { attempted?: boolean; replaces?: string } = {},
  ): Promise<{ result: "created" | "exists" | "stale"; txnId: string }> {
    const k = this.keys;
    const [result, txnId] = await this.redis.gatehouseCreateTxn(
      5,
      k.outboundTxn(destination),
      k.outboundPdus(destination),
      k.outboundEdus(destination),
      k.txnCounter(destination),
      k.outboundTxnBody(destination),
      txnIdPrefix,
      String(createdTs),
      String(pduRefs.length),
      String(edus.length),
      digest,
      opts.attempted ? "1" : "0",
      opts.replaces ?? "",
      ...pduRefs,
      ...edus,
    );
    return { result: result as "created" | "exists" | "stale", txnId };
  }

  /** Counts an attempt of `txnId`; -1 when that transaction is no longer the stored one. */
  async markAttempt(destination: string, txnId: string, now: number): Promise<number> {
    return this.redis.gatehouseMarkAttempt(1, this.keys.outboundTxn(destination), txnId, String(now));
  }

  /** Counts a 4xx rejection of the stored transaction; returns the new count. */
  async markRejected(destination: string, txnId: string): Promise<number> {
    const key = this.keys.outboundTxn(destination);
    if ((await this.redis.hget(key, "txn_id")) !== txnId) return -1;
    return this.redis.hincrby(key, "rejections", 1);
  }

  /**
   * After a 200 ("sent") or when giving up on a rejected batch ("dropped"): removes the
   * transaction's entries and clears it, atomically. Returns the remaining queue lengths, or
   * null when `txnId` was not the stored transaction (nothing changed).
   */
  async commitTxn(
    destination: string,
    txnId: string,
    now: number,
    mode: "sent" | "dropped",
    pduErrors = 0,
    nextHead?: { maxPdus: number; maxEdus: number },
  ): Promise<{ pendingPdus: number; pendingEdus: number; removedPdus: number; head: { pdus: string[]; edus: string[] } } | null> {
    const k = this.keys;
    const [p, e, removed, pdus, edus] = await this.redis.gatehouseCommitTxn(
      5,
      k.outboundTxn(destination),
      k.outboundPdus(destination),
      k.outboundEdus(destination),
      k.destinationStatus(destination),
      k.outboundTxnBody(destination),
      txnId,
      String(now),
      mode,
      String(pduErrors),
      String(nextHead?.maxPdus ?? 0),
      String(nextHead?.maxEdus ?? 0),
    );
    if (p < 0) return null;
    return { pendingPdus: p, pendingEdus: e, removedPdus: removed, head: { pdus, edus } };
  }

  /**
   * The destination rejected the stored transaction for good (see sender-reject-txn.lua): split
   * it, dead-letter its single PDU, or drop its EDUs. "gone": `txnId` was no longer stored.
   */
  async rejectTxn(destination: string, txnId: string, now: number, reason: string, status: number): Promise<{ result: "gone" | "split" | "dead" | "dropped"; pendingPdus: number; pendingEdus: number }> {
    const k = this.keys;
    const [result, pendingPdus, pendingEdus] = await this.redis.gatehouseRejectTxn(
      6,
      k.outboundTxn(destination),
      k.outboundPdus(destination),
      k.outboundEdus(destination),
      k.destinationStatus(destination),
      k.outboundTxnBody(destination),
      k.outboundDead(destination),
      txnId,
      String(now),
      reason.slice(0, 500),
      String(status),
    );
    return { result: result as "gone" | "split" | "dead" | "dropped", pendingPdus, pendingEdus };
  }

  /** The destination's dead letters from position `from` (oldest first), at most `limit`, and how many there are. */
  async deadLetters(destination: string, from: number, limit: number): Promise<{ total: number; entries: DeadLetter[] }> {
    const key = this.keys.outboundDead(destination);
    const res = (await this.redis.multi().llen(key).lrange(key, from, from + limit - 1).exec()) as [Error | null, unknown][];
    for (const [err] of res) if (err) throw err;
    const entries = (res[1]![1] as string[]).map((text): DeadLetter => {
      const e = JSON.parse(text) as { ref?: string; reason?: string; status?: number; ts?: number; txn_id?: string };
      const ref = String(e.ref ?? "");
      const space = ref.indexOf(" ");
      return { roomId: ref.slice(0, space), eventId: ref.slice(space + 1), reason: String(e.reason ?? ""), status: Number(e.status ?? 0), ts: Number(e.ts ?? 0), txnId: String(e.txn_id ?? "") };
    });
    return { total: res[0]![1] as number, entries };
  }

  /**
   * Replays (appends to the tail of the queue again) or drops every dead letter of
   * `destination`, atomically. Returns how many there were.
   */
  async resolveDeadLetters(destination: string, action: "replay" | "drop"): Promise<number> {
    const k = this.keys;
    // The destinations set is global (another slot): recorded first, idempotently.
    if (action === "replay") await this.redis.sadd(k.destinations(), destination);
    return this.redis.gatehouseDeadLetters(3, k.outboundDead(destination), k.outboundPdus(destination), k.destinationStatus(destination), action);
  }

  /**
   * Records a failed attempt; returns the consecutive failure count and since when the destination
   * has been failing (the first failure after the last success), for the backoff.
   */
  async recordFailure(destination: string, now: number, error: string): Promise<{ failures: number; failingSince: number }> {
    const key = this.keys.destinationStatus(destination);
    const res = (await this.redis
      .multi()
      .hincrby(key, "failures", 1)
      .hset(key, "last_error", error.slice(0, 500), "last_error_ts", String(now))
      .hsetnx(key, "failing_since", String(now))
      .hget(key, "failing_since")
      .exec()) as [Error | null, unknown][];
    const failures = res[0]![1] as number;
    const since = Number(res[3]![1]);
    return { failures, failingSince: Number.isFinite(since) && since > 0 ? since : now };
  }

  async setBackoffUntil(destination: string, ts: number): Promise<void> {
    await this.redis.hset(this.keys.destinationStatus(destination), "backoff_until", String(ts));
  }

  /** Clears the backoff (operator "retry now"); the failure count is kept for the next delay. */
  async clearBackoff(destination: string): Promise<void> {
    await this.redis.hset(this.keys.destinationStatus(destination), "backoff_until", "0");
  }

  async getStatus(destination: string): Promise<DestinationStatus> {
    return parseStatus(await this.redis.hgetall(this.keys.destinationStatus(destination)));
  }

  async enqueueEdu(destination: string, eduJson: string): Promise<void> {
    // Two slots (the destination's, the global set): recorded in the set first, so a queued EDU is never unlisted.
    await this.redis.sadd(this.keys.destinations(), destination);
    await this.redis.rpush(this.keys.outboundEdus(destination), eduJson);
  }

  async destinations(): Promise<string[]> {
    return (await this.redis.smembers(this.keys.destinations())).sort();
  }

  async isKnownDestination(destination: string): Promise<boolean> {
    return (await this.redis.sismember(this.keys.destinations(), destination)) === 1;
  }

  /** Queue lengths, stored transaction and status of many destinations (one MULTI each, sent together). */
  async snapshots(destinations: readonly string[]): Promise<DestinationSnapshot[]> {
    if (destinations.length === 0) return [];
    const k = this.keys;
    // One MULTI per destination: each touches one slot (a Redis Cluster refuses a cross-slot one).
    const per = await Promise.all(
      destinations.map((d) => this.redis.multi().llen(k.outboundPdus(d)).llen(k.outboundEdus(d)).hgetall(k.outboundTxn(d)).hgetall(k.destinationStatus(d)).llen(k.outboundDead(d)).exec()),
    );
    const res = per.flatMap((r) => r ?? []) as [Error | null, unknown][];
    for (const [err] of res) if (err) throw err;
    return destinations.map((destination, i) => ({
      destination,
      pendingPdus: res[5 * i]![1] as number,
      pendingEdus: res[5 * i + 1]![1] as number,
      txn: parseTxnInfo(res[5 * i + 2]![1] as Record<string, string>),
      status: parseStatus(res[5 * i + 3]![1] as Record<string, string>),
      deadLetters: res[5 * i + 4]![1] as number,
    }));
  }
}
