/**
 * The per-destination algorithm (Synapse's PerDestinationQueue), for any kind of destination.
 * One call of `sendOne` sends one transaction:
 *   1. the stored transaction (out:{dest}:txn) if there is one, its body rebuilt from the entries
 *      it covers and checked against its stored digest (if it differs, the transaction is
 *      replaced by a new txn_id over the same entries: a txn_id never goes out with two bodies);
 *      else a new one from the heads of the queues (≤ 50 PDUs, ≤ 100 EDUs), built by the
 *      TransactionBuilder and stored with its txn_id and the digest of its body BEFORE sending;
 *   2. the destination's transport sends it; on 2xx the commit script removes exactly those
 *      entries and clears the transaction;
 *   3. on a network error, timeout, 5xx, 408 or 429 the destination backs off (exponential with
 *      jitter, status in out:{dest}:status) and the same txn_id and body are re-sent, forever;
 *      another 4xx is retried the same way up to `maxRejectedAttempts` times; then, to find the
 *      offender without losing innocent PDUs, the transaction is split: its EDUs are sent alone,
 *      then its PDUs one per transaction (each again with `maxRejectedAttempts` tries); a PDU
 *      rejected alone goes to the destination's dead letters with the reason, EDUs rejected
 *      alone are dropped (counted). An operator replays or drops the dead letters.
 * Who may call it for a destination, and when, is the caller's business (sender.ts: one BullMQ
 * job per destination); this module only guarantees that a call never builds a second
 * transaction while one is stored.
 */
import type { Logger } from "../logger.js";
import { backoffDelay } from "./backoff.js";
import { bodyDigest, type OutboundStore, type SendStart, type StoredTxn, type UnbuiltTxn } from "./outbound-store.js";
import type { TransactionBuilder } from "./transaction-builder.js";
import type { Transports, TransportResponse } from "./transport.js";

export const MAX_PDUS_PER_TXN = 50;
export const MAX_EDUS_PER_TXN = 100;
/**
 * Transactions one job run sends back to back while the destination has more queued. Each job
 * costs BullMQ a few Lua scripts and stream events (add the next job, finish this one, fetch
 * the next), which were about as much Redis work as the transaction itself during a backlog
 * drain. Bounded so that, with more destinations than worker slots, a long backlog still lets
 * other destinations in (it goes back to the queue as a new job after this many).
 */
export const MAX_TXNS_PER_JOB_RUN = 10;

/** `more.next`: the state the next transaction starts from, when the commit already read it. */
export type Outcome = { kind: "idle" } | { kind: "more"; next?: SendStart } | { kind: "retry"; at: number };

export interface RetrySettings {
  backoffInitialMs: number;
  backoffMaxMs: number;
  /** 4xx answers (other than 408/429) to one transaction before its batch is dropped. */
  maxRejectedAttempts: number;
  /** Caps each retry delay at this percentage of how long the destination has been failing (0 = off). */
  backoffOutagePercent: number;
}

/** dead_lettered: a PDU sent alone was rejected and moved to the dead letters. */
export type TransactionOutcome = "sent" | "failed" | "dropped" | "dead_lettered";

export interface PerDestinationDeps {
  outbound: OutboundStore;
  builder: TransactionBuilder;
  transports: Transports;
  settings: RetrySettings;
  logger: Logger;
  clock: () => number;
  random: () => number;
  /** Aborted at shutdown: a send in flight is abandoned (and re-sent later, same txn_id). */
  shutdown: AbortSignal;
  /** Called once per answered or failed transaction (metrics). */
  onTransaction?: (outcome: TransactionOutcome, info: { seconds: number; pdus: number; pduErrors: number; kind: string }) => void;
}

class ShuttingDown extends Error {}

export class PerDestinationSender {
  /** What this process did (the status hashes in Redis hold the totals). */
  readonly stats = { transactionsSent: 0, failedAttempts: 0, droppedBatches: 0, deadLettered: 0, pduErrors: 0 };

  constructor(private readonly deps: PerDestinationDeps) {}

  /**
   * Sends up to `maxTxns` transactions back to back, still one in flight at a time: the next is
   * built only after the previous was committed (or dropped). `stop()` is asked between
   * transactions (shutdown). `runs`: how many sends it made (of the budget).
   */
  async drain(destination: string, stop: () => boolean, maxTxns = MAX_TXNS_PER_JOB_RUN): Promise<{ outcome: Outcome; runs: number }> {
    let outcome: Outcome | undefined;
    let runs = 0;
    do outcome = await this.sendOne(destination, outcome?.kind === "more" ? outcome.next : undefined);
    while (outcome.kind === "more" && ++runs < maxTxns && !stop());
    return { outcome, runs: outcome.kind === "more" ? runs : runs + 1 };
  }

  /**
   * Sends (or re-sends) one transaction to `destination`. `start`: the destination's state as the
   * previous commit returned it (else read here).
   */
  async sendOne(destination: string, start?: SendStart): Promise<Outcome> {
    const { outbound } = this.deps;
    const now = this.deps.clock();
    start ??= await outbound.begin(destination, MAX_PDUS_PER_TXN, MAX_EDUS_PER_TXN);
    if (start.backoffUntil > now) return { kind: "retry", at: start.backoffUntil };
    const transport = this.deps.transports.for(destination);

    // A new (or replacing) transaction is stored with its first attempt already counted.
    const got = start.txn
      ? { txn: start.txn, attempted: false }
      : start.unbuilt
        ? await this.rebuildTxn(destination, start.unbuilt)
        : await this.createTxn(destination, start.head);
    if (got === "idle") return { kind: "idle" };
    // Another transaction was stored, or the entries moved, meanwhile: start again from Redis.
    if (got === "again") return { kind: "more" };
    const txn = got.txn;
    if (!got.attempted && (await outbound.markAttempt(destination, txn.txnId, now)) < 0) return { kind: "more" };

    let res: TransportResponse;
    const started = process.hrtime.bigint();
    const report = (outcome: TransactionOutcome, pduErrors = 0) =>
      this.deps.onTransaction?.(outcome, { seconds: Number(process.hrtime.bigint() - started) / 1e9, pdus: txn.pduCount, pduErrors, kind: transport.kind });
    try {
      res = await this.abortable(transport.send(destination, txn));
    } catch (e) {
      if (e instanceof ShuttingDown) return { kind: "retry", at: this.deps.clock() };
      report("failed");
      return this.failed(destination, txn, (e as Error).message);
    }
    const answeredAt = this.deps.clock();
    if (res.status >= 200 && res.status < 300) {
      const errors = transport.eventErrors(res.body);
      errors.slice(0, 10).forEach(({ eventId, error }) =>
        this.deps.logger.warn({ destination, txnId: txn.txnId, eventId, error: error.slice(0, 300) }, "destination rejected a PDU (not retried)"),
      );
      const pduErrors = errors.length;
      const left = await outbound.commitTxn(destination, txn.txnId, answeredAt, "sent", pduErrors, { maxPdus: MAX_PDUS_PER_TXN, maxEdus: MAX_EDUS_PER_TXN });
      this.stats.transactionsSent++;
      this.stats.pduErrors += pduErrors;
      report("sent", pduErrors);
      this.deps.logger.debug({ destination, txnId: txn.txnId, pdus: txn.pduCount, edus: txn.eduCount, pduErrors }, "transaction sent");
      if (!left) return { kind: "more" };
      // The commit cleared the backoff and the stored transaction and read the new heads.
      if (left.pendingPdus > 0 || left.pendingEdus > 0) return { kind: "more", next: { backoffUntil: 0, txn: null, head: left.head } };
      return { kind: "idle" };
    }
    const errcode = (res.body as { errcode?: unknown } | undefined)?.errcode;
    const message = `HTTP ${res.status}${typeof errcode === "string" ? ` ${errcode}` : ""}`;
    if (res.status === 429) {
      report("failed");
      const retryAfter = Number((res.body as { retry_after_ms?: unknown } | undefined)?.retry_after_ms);
      return this.failed(destination, txn, message, Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : 0);
    }
    if (res.status >= 400 && res.status < 500 && res.status !== 408) {
      const rejections = await outbound.markRejected(destination, txn.txnId);
      if (rejections >= this.deps.settings.maxRejectedAttempts) {
        // Find the offender: split the transaction, or dead-letter its single PDU.
        const error = (res.body as { error?: unknown } | undefined)?.error;
        const reason = `${message}${typeof error === "string" ? `: ${error.slice(0, 300)}` : ""}`;
        const rejected = await outbound.rejectTxn(destination, txn.txnId, answeredAt, reason, res.status);
        const log = { destination, txnId: txn.txnId, status: res.status, errcode, body: res.rawBody.slice(0, 300), pdus: txn.pduCount, edus: txn.eduCount, attempts: rejections };
        if (rejected.result === "split") {
          report("failed");
          this.deps.logger.warn(log, "destination rejected the transaction repeatedly; sending its entries apart to find the offender");
        } else if (rejected.result === "dead") {
          this.stats.deadLettered++;
          report("dead_lettered");
          this.deps.logger.error(log, "destination rejected a PDU sent alone; moved it to the destination's dead letters");
        } else if (rejected.result === "dropped") {
          this.stats.droppedBatches++;
          report("dropped");
          this.deps.logger.error(log, "destination rejected EDUs sent alone; dropped them");
        }
        return rejected.pendingPdus > 0 || rejected.pendingEdus > 0 || rejected.result === "gone" ? { kind: "more" } : { kind: "idle" };
      }
    }
    report("failed");
    return this.failed(destination, txn, message);
  }

  private abortable<T>(request: Promise<T>): Promise<T> {
    const signal = this.deps.shutdown;
    if (signal.aborted) {
      request.catch(() => undefined);
      return Promise.reject(new ShuttingDown());
    }
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(new ShuttingDown());
      signal.addEventListener("abort", onAbort, { once: true });
      request.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
    });
  }

  private async failed(destination: string, txn: StoredTxn, message: string, minDelayMs = 0): Promise<Outcome> {
    const s = this.deps.settings;
    const now = this.deps.clock();
    this.stats.failedAttempts++;
    const { failures, failingSince } = await this.deps.outbound.recordFailure(destination, now, message);
    let backoff = backoffDelay(failures, { initialMs: s.backoffInitialMs, maxMs: s.backoffMaxMs }, this.deps.random);
    if (s.backoffOutagePercent > 0) {
      const cap = Math.max(s.backoffInitialMs, ((now - failingSince) * s.backoffOutagePercent) / 100);
      backoff = Math.min(backoff, Math.round(cap));
    }
    const delay = Math.max(backoff, Math.min(minDelayMs, s.backoffMaxMs));
    const at = now + delay;
    await this.deps.outbound.setBackoffUntil(destination, at);
    this.deps.logger.warn({ destination, txnId: txn.txnId, error: message, failures, failingForMs: now - failingSince, retryInMs: delay }, "transaction failed; backing off");
    return { kind: "retry", at };
  }

  /**
   * The body of a stored transaction, rebuilt from the entries it covers and its created_ts. The
   * same bytes as when it was created (see outbound-store.ts) unless a stored event's JSON was
   * rewritten or deleted, or this version encodes differently: then its digest differs, and the transaction is
   * replaced by a new one over the same entries (new txn_id, first attempt counted).
   */
  private async rebuildTxn(destination: string, u: UnbuiltTxn): Promise<{ txn: StoredTxn; attempted: boolean } | "again"> {
    const { outbound, builder } = this.deps;
    const transport = this.deps.transports.for(destination);
    const { pdus, edus, ...info } = u;
    const body = await builder.build(destination, transport, pdus, edus, u.createdTs);
    if (u.digest !== null && bodyDigest(body) === u.digest) return { txn: { ...info, body, canonical: true }, attempted: false };
    const now = this.deps.clock();
    const fresh = await builder.build(destination, transport, pdus, edus, now);
    const digest = bodyDigest(fresh);
    const created = await outbound.createTxn(destination, String(now), digest, now, pdus, edus, { attempted: true, replaces: u.txnId });
    if (created.result !== "created") return "again";
    this.deps.logger.warn({ destination, txnId: u.txnId, newTxnId: created.txnId, pdus: pdus.length, edus: edus.length }, "stored transaction's body could not be rebuilt byte for byte; replaced by a new transaction over the same entries");
    return { txn: newTxn(created.txnId, fresh, digest, pdus.length, edus.length, now), attempted: true };
  }

  /**
   * Builds and stores a transaction from the heads of the queues (`head` as read by the caller;
   * re-read if it changed meanwhile); "idle" when nothing is queued, "again" when a transaction
   * is stored meanwhile. `attempted`: stored with its first attempt counted.
   */
  private async createTxn(destination: string, head: { pdus: string[]; edus: string[] }): Promise<{ txn: StoredTxn; attempted: boolean } | "idle" | "again"> {
    const { outbound, builder } = this.deps;
    const transport = this.deps.transports.for(destination);
    for (let attempt = 0; attempt < 5; attempt++) {
      if (attempt > 0) {
        // The heads changed (or a transaction was stored) meanwhile: read them as begin does
        // (with the isolation limits).
        const again = await outbound.begin(destination, MAX_PDUS_PER_TXN, MAX_EDUS_PER_TXN);
        if (again.txn || again.unbuilt) return "again";
        head = again.head;
      }
      if (head.pdus.length === 0 && head.edus.length === 0) return "idle";
      const now = this.deps.clock();
      // The bytes are assembled once and used as they are for sending and signing.
      const body = await builder.build(destination, transport, head.pdus, head.edus, now);
      const digest = bodyDigest(body);
      const created = await outbound.createTxn(destination, String(now), digest, now, head.pdus, head.edus, { attempted: true });
      if (created.result === "created") return { txn: newTxn(created.txnId, body, digest, head.pdus.length, head.edus.length, now), attempted: true };
      if (created.result === "exists") return "again";
    }
    throw new Error(`queue head of ${destination} kept changing while building a transaction`);
  }
}

/** A transaction just stored by createTxn (first attempt counted). */
function newTxn(txnId: string, body: Buffer, digest: string, pduCount: number, eduCount: number, now: number): StoredTxn {
  return { txnId, body, canonical: true, pduCount, eduCount, createdTs: now, attempts: 1, rejections: 0, lastAttemptTs: now, digest };
}
