/**
 * The outbound queue in Redis, per destination (keys in ../store/redis-keys.ts):
 *   out:{dest}:pdus    LIST of "roomId eventId", appended by the persist-event script
 *   out:{dest}:edus    LIST of EDU JSON, appended by enqueueEdu
 *   out:{dest}:txn     HASH, the transaction in flight: txn_id, body, pdu_count, edu_count, ...
 *   out:{dest}:status  HASH, last_success_ts, last_error, last_error_ts, failures, backoff_until, counters
 *
 * The in-flight transaction always covers the first pdu_count / edu_count entries of the lists
 * (lists only grow at the tail; only a commit removes from the head, and only for the txn_id it
 * names), so a crash at any point re-sends the same txn_id with the same body, and a commit for
 * a transaction that is no longer current is a no-op.
 */
import type { Redis } from "ioredis";
import type { RedisKeys } from "../store/redis-keys.js";

export interface StoredTxn {
  txnId: string;
  /** The exact JSON body sent (and re-sent). */
  body: string;
  pduCount: number;
  eduCount: number;
  createdTs: number;
  /** Attempts made so far (incremented before each send). */
  attempts: number;
  /** Attempts answered with a 4xx other than 429. */
  rejections: number;
  lastAttemptTs: number | null;
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
}

const CREATE_TXN_LUA = `
-- KEYS: 1 txn, 2 pdus, 3 edus, 4 txn counter
-- ARGV: 1 txn id prefix, 2 body, 3 created_ts, 4 pdu count, 5 edu count, 6.. pdu refs then EDU JSON
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', redis.call('HGET', KEYS[1], 'txn_id')} end
local np = tonumber(ARGV[4])
local ne = tonumber(ARGV[5])
if np > 0 then
  local head = redis.call('LRANGE', KEYS[2], 0, np - 1)
  if #head ~= np then return {'stale', ''} end
  for i = 1, np do if head[i] ~= ARGV[5 + i] then return {'stale', ''} end end
end
if ne > 0 then
  local head = redis.call('LRANGE', KEYS[3], 0, ne - 1)
  if #head ~= ne then return {'stale', ''} end
  for i = 1, ne do if head[i] ~= ARGV[5 + np + i] then return {'stale', ''} end end
end
local txnId = ARGV[1] .. '_' .. redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], 'txn_id', txnId, 'body', ARGV[2], 'pdu_count', ARGV[4], 'edu_count', ARGV[5],
  'created_ts', ARGV[3], 'attempts', '0', 'rejections', '0')
return {'created', txnId}
`;

const MARK_ATTEMPT_LUA = `
-- KEYS: 1 txn; ARGV: 1 txn_id, 2 now
if redis.call('HGET', KEYS[1], 'txn_id') ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], 'last_attempt_ts', ARGV[2])
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
`;

const COMMIT_TXN_LUA = `
-- Removes the transaction's entries from the head of the lists and clears it.
-- KEYS: 1 txn, 2 pdus, 3 edus, 4 status
-- ARGV: 1 txn_id, 2 now, 3 mode ("sent" | "dropped"), 4 per-PDU errors in the response
if redis.call('HGET', KEYS[1], 'txn_id') ~= ARGV[1] then return {-1, -1, -1} end
local np = tonumber(redis.call('HGET', KEYS[1], 'pdu_count') or '0')
local ne = tonumber(redis.call('HGET', KEYS[1], 'edu_count') or '0')
if np > 0 then redis.call('LTRIM', KEYS[2], np, -1) end
if ne > 0 then redis.call('LTRIM', KEYS[3], ne, -1) end
redis.call('DEL', KEYS[1])
if ARGV[3] == 'sent' then
  redis.call('HSET', KEYS[4], 'last_success_ts', ARGV[2], 'failures', '0', 'backoff_until', '0', 'last_txn_id', ARGV[1])
  redis.call('HDEL', KEYS[4], 'failing_since')
  redis.call('HINCRBY', KEYS[4], 'txns_sent', 1)
  redis.call('HINCRBY', KEYS[4], 'pdus_sent', np)
  redis.call('HINCRBY', KEYS[4], 'edus_sent', ne)
  redis.call('HINCRBY', KEYS[4], 'pdu_errors', tonumber(ARGV[4]))
else
  redis.call('HINCRBY', KEYS[4], 'dropped_batches', 1)
  redis.call('HINCRBY', KEYS[4], 'dropped_pdus', np)
  redis.call('HINCRBY', KEYS[4], 'dropped_edus', ne)
end
return {redis.call('LLEN', KEYS[2]), redis.call('LLEN', KEYS[3]), np}
`;

type ScriptedRedis = Redis & {
  gatehouseCreateTxn(numKeys: number, ...args: string[]): Promise<[string, string]>;
  gatehouseMarkAttempt(numKeys: number, ...args: string[]): Promise<number>;
  gatehouseCommitTxn(numKeys: number, ...args: string[]): Promise<[number, number, number]>;
};

const num = (v: string | undefined | null, fallback = 0): number => (v === undefined || v === null || v === "" ? fallback : Number(v));
const numOrNull = (v: string | undefined | null): number | null => (v === undefined || v === null || v === "" || v === "0" ? null : Number(v));

export function parseTxn(h: Record<string, string>): StoredTxn | null {
  if (!h.txn_id || h.body === undefined) return null;
  return {
    txnId: h.txn_id,
    body: h.body,
    pduCount: num(h.pdu_count),
    eduCount: num(h.edu_count),
    createdTs: num(h.created_ts),
    attempts: num(h.attempts),
    rejections: num(h.rejections),
    lastAttemptTs: numOrNull(h.last_attempt_ts),
  };
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
  };
}

export interface DestinationSnapshot {
  destination: string;
  pendingPdus: number;
  pendingEdus: number;
  txn: StoredTxn | null;
  status: DestinationStatus;
}

export class OutboundStore {
  private readonly redis: ScriptedRedis;

  constructor(
    redis: Redis,
    readonly keys: RedisKeys,
  ) {
    this.redis = redis as ScriptedRedis;
    if (!("gatehouseCreateTxn" in redis)) {
      redis.defineCommand("gatehouseCreateTxn", { lua: CREATE_TXN_LUA });
      redis.defineCommand("gatehouseMarkAttempt", { lua: MARK_ATTEMPT_LUA });
      redis.defineCommand("gatehouseCommitTxn", { lua: COMMIT_TXN_LUA });
    }
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
   * of the lists). Returns the txn ID; "exists" when a transaction is already stored (the caller
   * sends that one), "stale" when the heads changed under it (the caller rebuilds).
   */
  async createTxn(
    destination: string,
    txnIdPrefix: string,
    body: string,
    createdTs: number,
    pduRefs: readonly string[],
    edus: readonly string[],
  ): Promise<{ result: "created" | "exists" | "stale"; txnId: string }> {
    const k = this.keys;
    const [result, txnId] = await this.redis.gatehouseCreateTxn(
      4,
      k.outboundTxn(destination),
      k.outboundPdus(destination),
      k.outboundEdus(destination),
      k.txnCounter(),
      txnIdPrefix,
      body,
      String(createdTs),
      String(pduRefs.length),
      String(edus.length),
      ...pduRefs,
      ...edus,
    );
    return { result: result as "created" | "exists" | "stale", txnId };
  }

  async getTxn(destination: string): Promise<StoredTxn | null> {
    return parseTxn(await this.redis.hgetall(this.keys.outboundTxn(destination)));
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
  ): Promise<{ pendingPdus: number; pendingEdus: number; removedPdus: number } | null> {
    const k = this.keys;
    const [p, e, removed] = await this.redis.gatehouseCommitTxn(
      4,
      k.outboundTxn(destination),
      k.outboundPdus(destination),
      k.outboundEdus(destination),
      k.destinationStatus(destination),
      txnId,
      String(now),
      mode,
      String(pduErrors),
    );
    if (p < 0) return null;
    return { pendingPdus: p, pendingEdus: e, removedPdus: removed };
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
    await this.redis.multi().rpush(this.keys.outboundEdus(destination), eduJson).sadd(this.keys.destinations(), destination).exec();
  }

  async destinations(): Promise<string[]> {
    return (await this.redis.smembers(this.keys.destinations())).sort();
  }

  async isKnownDestination(destination: string): Promise<boolean> {
    return (await this.redis.sismember(this.keys.destinations(), destination)) === 1;
  }

  /** Queue lengths, stored transaction and status of many destinations in one round trip. */
  async snapshots(destinations: readonly string[]): Promise<DestinationSnapshot[]> {
    if (destinations.length === 0) return [];
    const k = this.keys;
    const m = this.redis.multi();
    for (const d of destinations) m.llen(k.outboundPdus(d)).llen(k.outboundEdus(d)).hgetall(k.outboundTxn(d)).hgetall(k.destinationStatus(d));
    const res = (await m.exec()) as [Error | null, unknown][];
    return destinations.map((destination, i) => ({
      destination,
      pendingPdus: res[4 * i]![1] as number,
      pendingEdus: res[4 * i + 1]![1] as number,
      txn: parseTxn(res[4 * i + 2]![1] as Record<string, string>),
      status: parseStatus(res[4 * i + 3]![1] as Record<string, string>),
    }));
  }
}
