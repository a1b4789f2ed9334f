/**
 * The outbound transaction sender (Synapse's PerDestinationQueue, on BullMQ).
 *
 * PDUs are queued per destination by the persist-event Lua script (atomically with the event);
 * EDUs by enqueueEdu. Each destination has at most one BullMQ job, found by its deduplication ID
 * (= the destination) with `keepLastIfActive`: a wake while the job waits or is delayed is a
 * no-op, a wake while it runs is remembered and turned into the next job when it finishes. So a
 * destination is never processed by two workers at once, with any number of worker processes on
 * one Redis, and no wake is lost.
 *
 * One job run sends one transaction:
 *   1. the stored transaction (out:{dest}:txn) if there is one, else a new one from the heads of
 *      the queues (≤ 50 PDUs, ≤ 100 EDUs), stored with its txn_id and exact body BEFORE sending;
 *   2. PUT /send/{txnId}; on 200 the Lua commit removes exactly those entries and clears the
 *      transaction; if more is queued the next run is scheduled;
 *   3. on a network error, timeout, 5xx or 429 the job is delayed by the destination's backoff
 *      (exponential with jitter, status in out:{dest}:status) and the same txn_id and body are
 *      re-sent, forever; a 4xx is retried the same way up to `maxRejectedAttempts` times, then
 *      the batch is dropped (logged and counted).
 * A worker killed mid-request leaves the job active with an expiring lock; BullMQ's stalled-job
 * check hands it to another worker, which re-sends the stored transaction with the same txn_id.
 * The persist script and the job add are not atomic, so workers sweep on start (and
 * periodically) for destinations with queued entries or a stored transaction and no job.
 */
import { DelayedError, Queue, Worker, type Job } from "bullmq";
import type { Redis } from "ioredis";
import type { RedisKeys } from "../store/redis-keys.js";
import { EncodedJsonBody, type FederationClient, type FederationResponse } from "../net/federation-client.js";
import type { Logger } from "../logger.js";
import { canonicalJson } from "../protocol/canonical-json.js";
import { backoffDelay } from "./backoff.js";
import { CanonicalPduCache } from "./canonical-pdu-cache.js";
import { OutboundStore, type DestinationSnapshot, type SendStart, type StoredTxn } from "./outbound-store.js";

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
/** Size of the in-process cache of canonical PDU JSON (bytes, outside the V8 heap). */
const PDU_CACHE_BYTES = 16 * 1024 * 1024;
const COMMA = Buffer.from(",");
const CLOSE_PDUS = Buffer.from("]}");
const QUEUE_NAME = "send";
const JOB_NAME = "destination";
/** The BullMQ attempts budget for unexpected processor errors (Redis down...): effectively forever. */
const JOB_ATTEMPTS = 1_000_000_000;
/** noteRemoteActivity looks at a given origin's backoff at most this often. */
export const ACTIVITY_CHECK_MS = 5_000;

export interface SenderSettings {
  /** Destinations processed in parallel by one process. */
  concurrency: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
  /** 4xx answers (other than 429) to one transaction before its batch is dropped. */
  maxRejectedAttempts: number;
  /**
   * Caps each retry delay at this percentage of how long the destination has been failing
   * (never below backoffInitialMs; 0 = off), so a destination back after a short outage is
   * retried soon: the wait after it recovers is at most about this share of the outage.
   */
  backoffOutagePercent: number;
  /** BullMQ job lock; a killed worker's destination is picked up by another after about this long. */
  lockDurationMs: number;
  /** How often workers look for destinations with queued work and no job (0 = only at start). */
  sweepIntervalMs: number;
}

export const DEFAULT_SENDER_SETTINGS: SenderSettings = {
  concurrency: 100,
  backoffInitialMs: 1000,
  backoffMaxMs: 300_000,
  maxRejectedAttempts: 5,
  backoffOutagePercent: 25,
  lockDurationMs: 30_000,
  sweepIntervalMs: 60_000,
};

export interface SenderDeps {
  /** Must have maxRetriesPerRequest: null (BullMQ workers block on it). */
  redis: Redis;
  keys: RedisKeys;
  store: { getEventJson(roomId: string, eventId: string): Promise<string | null> };
  client: Pick<FederationClient, "request">;
  serverName: string;
  logger: Logger;
  settings?: Partial<SenderSettings>;
  clock?: () => number;
  random?: () => number;
  /** Called once per answered or failed transaction (metrics). */
  onTransaction?: (outcome: "sent" | "failed" | "dropped", info: { seconds: number; pdus: number; pduErrors: number }) => void;
}

export interface Edu {
  edu_type: string;
  content: Record<string, unknown>;
}

interface JobData {
  destination: string;
}

/** `more.next`: the state the next transaction starts from, when the commit already read it. */
type Outcome = { kind: "idle" } | { kind: "more"; next?: SendStart } | { kind: "retry"; at: number };

class ShuttingDown extends Error {}

/** A destination as the admin API and CLI show it. */
export interface DestinationView {
  destination: string;
  pending_pdus: number;
  pending_edus: number;
  txn_id: string | null;
  txn_age_ms: number | null;
  txn_pdus: number | null;
  txn_edus: number | null;
  txn_attempts: number | null;
  last_success_ts: number | null;
  last_error: string | null;
  last_error_ts: number | null;
  failures: number;
  backoff_until: number | null;
  txns_sent: number;
  pdus_sent: number;
  edus_sent: number;
  pdu_errors: number;
  dropped_batches: number;
  dropped_pdus: number;
  dropped_edus: number;
}

export class Sender {
  readonly settings: SenderSettings;
  readonly outbound: OutboundStore;
  readonly queue: Queue<JobData>;
  private worker: Worker<JobData> | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private readonly clock: () => number;
  private readonly random: () => number;
  private readonly abort = new AbortController();
  private readonly processing = new Set<string>();
  private readonly pduCache = new CanonicalPduCache(PDU_CACHE_BYTES);
  /** PDUs being read and encoded for the cache, so concurrent transactions share one read. */
  private readonly pduLoading = new Map<string, Promise<Buffer | { missing: boolean; error?: string }>>();
  private closed = false;
  private closing: Promise<void> | null = null;
  /** What this process's workers did (the status hashes in Redis hold the totals). */
  readonly stats = { transactionsSent: 0, failedAttempts: 0, droppedBatches: 0, pduErrors: 0 };

  constructor(private readonly deps: SenderDeps) {
    this.settings = { ...DEFAULT_SENDER_SETTINGS, ...deps.settings };
    this.clock = deps.clock ?? Date.now;
    this.random = deps.random ?? Math.random;
    this.outbound = new OutboundStore(deps.redis, deps.keys);
    this.queue = new Queue<JobData>(QUEUE_NAME, { connection: deps.redis, prefix: this.bullPrefix });
    this.queue.on("error", (err) => deps.logger.warn({ err: err.message }, "sender queue error"));
  }

  private get bullPrefix(): string {
    return `${this.deps.keys.prefix}:bull`;
  }

  // --- producing -----------------------------------------------------------------------------

  /** Makes sure each destination has a job (fire and forget; the RoomService onQueued hook). */
  wake(destinations: readonly string[]): void {
    for (const d of destinations) {
      this.ensureJob(d).catch((err: Error) => this.deps.logger.warn({ destination: d, err: err.message }, "could not schedule a sender job (the sweep will)"));
    }
  }

  /** Like wake(), awaited. */
  async ensureJob(destination: string): Promise<void> {
    await this.queue.add(JOB_NAME, { destination }, {
      deduplication: { id: destination, keepLastIfActive: true },
      removeOnComplete: true,
      removeOnFail: true,
      attempts: JOB_ATTEMPTS,
      backoff: { type: "destination" },
    });
  }

  /** Queues an EDU for a destination (sent in order with PDUs, ≤ 100 per transaction). */
  async enqueueEdu(destination: string, edu: Edu): Promise<void> {
    if (destination === this.deps.serverName) return;
    if (typeof edu?.edu_type !== "string" || typeof edu.content !== "object" || edu.content === null) throw new Error("an EDU needs edu_type and content");
    await this.outbound.enqueueEdu(destination, JSON.stringify({ edu_type: edu.edu_type, content: edu.content }));
    await this.ensureJob(destination);
  }

  /**
   * Ensures every destination with queued entries or a stored transaction has a job. Returns
   * those destinations.
   */
  async recoverySweep(): Promise<string[]> {
    const all = await this.outbound.destinations();
    const need: string[] = [];
    for (let i = 0; i < all.length; i += 500) {
      for (const s of await this.outbound.snapshots(all.slice(i, i + 500))) {
        if (s.pendingPdus > 0 || s.pendingEdus > 0 || s.txn) need.push(s.destination);
      }
    }
    await Promise.all(need.map((d) => this.ensureJob(d)));
    if (need.length) this.deps.logger.info({ destinations: need.length }, "sender sweep scheduled destinations with queued work");
    return need;
  }

  /** Operator "retry now": clears the backoff and runs the destination's job at once. */
  async retryNow(destination: string): Promise<string> {
    await this.outbound.clearBackoff(destination);
    const jobId = await this.queue.getDeduplicationJobId(destination);
    if (jobId) {
      const job = await this.queue.getJob(jobId);
      if (job && (await job.getState()) === "delayed") {
        await job.promote().catch(() => undefined); // it may have started meanwhile
      }
    }
    await this.ensureJob(destination);
    return this.jobState(destination);
  }

  private readonly activityChecked = new Map<string, number>();

  /**
   * A request from `origin` arrived (authenticated): the server is up, so a backoff we hold for it
   * as a destination is cleared and its queue sent now (Synapse does the same). Checks Redis at
   * most once per origin every `ACTIVITY_CHECK_MS`; never throws.
   */
  async noteRemoteActivity(origin: string): Promise<boolean> {
    if (origin === this.deps.serverName || this.closed) return false;
    const now = this.clock();
    const last = this.activityChecked.get(origin);
    if (last !== undefined && now - last < ACTIVITY_CHECK_MS) return false;
    if (this.activityChecked.size >= 10_000) this.activityChecked.clear();
    this.activityChecked.set(origin, now);
    try {
      const status = await this.outbound.getStatus(origin);
      if (status.backoffUntil <= now) return false;
      await this.retryNow(origin);
      this.deps.logger.info({ destination: origin, failures: status.failures }, "request received from a destination in backoff; retrying it now");
      return true;
    } catch (err) {
      this.deps.logger.warn({ destination: origin, err: (err as Error).message }, "could not clear the backoff of an active destination");
      return false;
    }
  }

  async jobState(destination: string): Promise<string> {
    const jobId = await this.queue.getDeduplicationJobId(destination);
    if (!jobId) return "none";
    const job = await this.queue.getJob(jobId);
    return job ? await job.getState() : "none";
  }

  // --- visibility ----------------------------------------------------------------------------

  async listDestinations(): Promise<DestinationView[]> {
    const all = await this.outbound.destinations();
    const out: DestinationView[] = [];
    for (let i = 0; i < all.length; i += 500) out.push(...(await this.outbound.snapshots(all.slice(i, i + 500))).map((s) => this.view(s)));
    return out;
  }

  /**
   * Queue figures for the metrics scrape: totals, the 10 destinations with most pending PDUs,
   * destinations in backoff, the age of the oldest stored (undelivered) transaction, BullMQ job
   * counts. One pass over the destination set per scrape.
   */
  async metricsSnapshot(): Promise<import("../metrics.js").OutboundSnapshot> {
    const now = this.clock();
    const views = await this.listDestinations();
    let pendingPdus = 0;
    let pendingEdus = 0;
    let inBackoff = 0;
    let oldest = 0;
    for (const v of views) {
      pendingPdus += v.pending_pdus;
      pendingEdus += v.pending_edus;
      if (v.backoff_until !== null && v.backoff_until > now) inBackoff++;
      if (v.txn_age_ms !== null) oldest = Math.max(oldest, v.txn_age_ms);
    }
    const top = views
      .filter((v) => v.pending_pdus > 0)
      .sort((a, b) => b.pending_pdus - a.pending_pdus)
      .slice(0, 10)
      .map((v) => [v.destination, v.pending_pdus] as [string, number]);
    const jobs = await this.queue.getJobCounts("waiting", "active", "delayed", "failed");
    return { pendingPdus, pendingEdus, top, destinationsInBackoff: inBackoff, oldestPendingAgeSeconds: oldest / 1000, jobs };
  }

  async describe(destination: string): Promise<(DestinationView & { job: string }) | null> {
    const [snap] = await this.outbound.snapshots([destination]);
    if (!snap) return null;
    if (!snap.txn && snap.pendingPdus === 0 && snap.pendingEdus === 0 && !(await this.outbound.isKnownDestination(destination))) return null;
    return { ...this.view(snap), job: await this.jobState(destination) };
  }

  private view(s: DestinationSnapshot): DestinationView {
    const now = this.clock();
    return {
      destination: s.destination,
      pending_pdus: s.pendingPdus,
      pending_edus: s.pendingEdus,
      txn_id: s.txn?.txnId ?? null,
      txn_age_ms: s.txn ? now - s.txn.createdTs : null,
      txn_pdus: s.txn?.pduCount ?? null,
      txn_edus: s.txn?.eduCount ?? null,
      txn_attempts: s.txn?.attempts ?? null,
      last_success_ts: s.status.lastSuccessTs,
      last_error: s.status.lastError,
      last_error_ts: s.status.lastErrorTs,
      failures: s.status.failures,
      backoff_until: s.status.backoffUntil > now ? s.status.backoffUntil : null,
      txns_sent: s.status.txnsSent,
      pdus_sent: s.status.pdusSent,
      edus_sent: s.status.edusSent,
      pdu_errors: s.status.pduErrors,
      dropped_batches: s.status.droppedBatches,
      dropped_pdus: s.status.droppedPdus,
      dropped_edus: s.status.droppedEdus,
    };
  }

  // --- consuming -----------------------------------------------------------------------------

  /** Starts this process's workers (and the recovery sweep). */
  async startWorkers(): Promise<void> {
    if (this.worker || this.closed) return;
    const s = this.settings;
    const worker = new Worker<JobData>(QUEUE_NAME, (job, token) => this.processJob(job, token), {
      connection: this.deps.redis,
      prefix: this.bullPrefix,
      concurrency: s.concurrency,
      lockDuration: s.lockDurationMs,
      stalledInterval: Math.max(500, Math.min(s.lockDurationMs, 30_000)),
      // A job that stalls (its worker died) goes back to wait; keep doing so for a long time.
      maxStalledCount: 1000,
      settings: { backoffStrategy: (attemptsMade: number) => backoffDelay(attemptsMade, this.backoffSettings(), this.random) },
    });
    worker.on("error", (err) => this.deps.logger.warn({ err: err.message }, "sender worker error"));
    worker.on("failed", (job, err) => this.deps.logger.error({ destination: job?.data.destination, err: err.message }, "sender job failed"));
    this.worker = worker;
    await worker.waitUntilReady();
    await this.recoverySweep();
    if (s.sweepIntervalMs > 0) {
      this.sweepTimer = setInterval(() => {
        this.recoverySweep().catch((err: Error) => this.deps.logger.warn({ err: err.message }, "sender sweep failed"));
      }, s.sweepIntervalMs);
      this.sweepTimer.unref();
    }
    this.deps.logger.info({ concurrency: s.concurrency }, "sender workers started");
  }

  get runningWorkers(): boolean {
    return this.worker !== null;
  }

  /**
   * Stops the workers, letting in-flight transactions finish for up to `deadlineMs`; a
   * transaction still unanswered then stays stored and is re-sent (same txn_id) by the next worker.
   */
  close(deadlineMs = 10_000): Promise<void> {
    this.closing ??= this.doClose(deadlineMs);
    return this.closing;
  }

  private async doClose(deadlineMs: number): Promise<void> {
    this.closed = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.worker) {
      const closing = this.worker.close();
      if ((await raceTimeout(closing, deadlineMs)) === "timeout") {
        this.deps.logger.warn({ deadlineMs }, "sender: transactions still in flight at the shutdown deadline; they will be re-sent");
        this.abort.abort();
        if ((await raceTimeout(closing, 3000)) === "timeout") {
          // Do not leave a blocking connection reconnecting after the process thinks it stopped.
          await raceTimeout(this.worker.disconnect(), 1000);
        }
      }
    }
    if ((await raceTimeout(this.queue.close(), 2000)) === "timeout") await raceTimeout(this.queue.disconnect(), 1000);
  }

  private backoffSettings() {
    return { initialMs: this.settings.backoffInitialMs, maxMs: this.settings.backoffMaxMs };
  }

  private async processJob(job: Job<JobData>, token?: string): Promise<string> {
    const destination = job.data.destination;
    if (this.processing.has(destination)) {
      // Cannot happen with one job per destination; refuse rather than send out of order.
      this.deps.logger.error({ destination }, "sender: destination already being processed in this process");
      await job.moveToDelayed(this.clock() + 1000, token);
      throw new DelayedError();
    }
    this.processing.add(destination);
    let outcome: Outcome | undefined;
    try {
      // Still one transaction in flight at a time: the next is built only after the previous
      // was committed (or dropped). Stops at shutdown so close() does not wait for a backlog.
      let runs = 0;
      do outcome = await this.processDestination(destination, outcome?.kind === "more" ? outcome.next : undefined);
      while (outcome.kind === "more" && ++runs < MAX_TXNS_PER_JOB_RUN && !this.closed);
    } finally {
      this.processing.delete(destination);
    }
    if (outcome.kind === "retry") {
      await job.moveToDelayed(outcome.at, token);
      throw new DelayedError();
    }
    // More queued: remembered as the next job, created when this one completes.
    if (outcome.kind === "more") await this.ensureJob(destination);
    return outcome.kind;
  }

  /**
   * Sends (or re-sends) one transaction to `destination`. `start`: the destination's state as the
   * previous commit returned it (else read here). Exposed for tests.
   */
  async processDestination(destination: string, start?: SendStart): Promise<Outcome> {
    const now = this.clock();
    start ??= await this.outbound.begin(destination, MAX_PDUS_PER_TXN, MAX_EDUS_PER_TXN);
    if (start.backoffUntil > now) return { kind: "retry", at: start.backoffUntil };

    let txn = start.txn;
    if (!txn) {
      // A new transaction is stored with its first attempt already counted.
      const built = await this.buildTxn(destination, start.head);
      if (!built) return { kind: "idle" };
      txn = built.txn;
      if (!built.attempted && (await this.outbound.markAttempt(destination, txn.txnId, now)) < 0) return { kind: "more" };
    } else if ((await this.outbound.markAttempt(destination, txn.txnId, now)) < 0) return { kind: "more" };

    let res: FederationResponse;
    const started = process.hrtime.bigint();
    const report = (outcome: "sent" | "failed" | "dropped", pduErrors = 0) =>
      this.deps.onTransaction?.(outcome, { seconds: Number(process.hrtime.bigint() - started) / 1e9, pdus: txn.pduCount, pduErrors });
    try {
      res = await this.send(destination, txn);
    } catch (e) {
      if (e instanceof ShuttingDown) return { kind: "retry", at: this.clock() };
      report("failed");
      return this.failed(destination, txn, (e as Error).message);
    }
    const answeredAt = this.clock();
    if (res.status >= 200 && res.status < 300) {
      const pduErrors = this.perPduErrors(destination, txn, res.body);
      const left = await this.outbound.commitTxn(destination, txn.txnId, answeredAt, "sent", pduErrors, { maxPdus: MAX_PDUS_PER_TXN, maxEdus: MAX_EDUS_PER_TXN });
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
      const rejections = await this.outbound.markRejected(destination, txn.txnId);
      if (rejections >= this.settings.maxRejectedAttempts) {
        const outcome = await this.failed(destination, txn, `${message} (batch dropped)`);
        await this.outbound.commitTxn(destination, txn.txnId, answeredAt, "dropped");
        this.stats.droppedBatches++;
        report("dropped");
        this.deps.logger.error(
          { destination, txnId: txn.txnId, status: res.status, errcode, body: res.rawBody.slice(0, 300), pdus: txn.pduCount, edus: txn.eduCount, attempts: rejections },
          "destination rejected the transaction repeatedly; dropped its batch",
        );
        return outcome;
      }
    }
    report("failed");
    return this.failed(destination, txn, message);
  }

  private async send(destination: string, txn: StoredTxn): Promise<FederationResponse> {
    if (this.abort.signal.aborted) throw new ShuttingDown();
    // The stored body, byte for byte; a canonical one is also signed as it is.
    const body = new EncodedJsonBody(txn.body, txn.canonical);
    const request = this.deps.client.request("PUT", destination, `/_matrix/federation/v1/send/${encodeURIComponent(txn.txnId)}`, body);
    return new Promise<FederationResponse>((resolve, reject) => {
      const onAbort = () => reject(new ShuttingDown());
      this.abort.signal.addEventListener("abort", onAbort, { once: true });
      request.then(resolve, reject).finally(() => this.abort.signal.removeEventListener("abort", onAbort));
    });
  }

  private async failed(destination: string, txn: StoredTxn, message: string, minDelayMs = 0): Promise<Outcome> {
    const now = this.clock();
    this.stats.failedAttempts++;
    const { failures, failingSince } = await this.outbound.recordFailure(destination, now, message);
    let backoff = backoffDelay(failures, this.backoffSettings(), this.random);
    if (this.settings.backoffOutagePercent > 0) {
      const cap = Math.max(this.settings.backoffInitialMs, ((now - failingSince) * this.settings.backoffOutagePercent) / 100);
      backoff = Math.min(backoff, Math.round(cap));
    }
    const delay = Math.max(backoff, Math.min(minDelayMs, this.settings.backoffMaxMs));
    const at = now + delay;
    await this.outbound.setBackoffUntil(destination, at);
    this.deps.logger.warn({ destination, txnId: txn.txnId, error: message, failures, retryInMs: delay }, "transaction failed; backing off");
    return { kind: "retry", at };
  }

  private perPduErrors(destination: string, txn: StoredTxn, body: unknown): number {
    const pdus = (body as { pdus?: unknown } | undefined)?.pdus;
    if (typeof pdus !== "object" || pdus === null) return 0;
    let errors = 0;
    for (const [eventId, result] of Object.entries(pdus as Record<string, unknown>)) {
      const error = (result as { error?: unknown } | null)?.error;
      if (error === undefined) continue;
      errors++;
      if (errors <= 10) this.deps.logger.warn({ destination, txnId: txn.txnId, eventId, error: String(error).slice(0, 300) }, "destination rejected a PDU (not retried)");
    }
    return errors;
  }

  /**
   * Canonical JSON of the queued PDUs `refs`, in order; null for a PDU that cannot be sent (not in
   * the store, or not encodable as canonical JSON, so no signature could cover it: logged and
   * skipped, as the transaction would otherwise fail forever).
   */
  private async canonicalPdus(destination: string, refs: readonly string[]): Promise<(Buffer | null)[]> {
    const out: (Buffer | null)[] = new Array(refs.length).fill(null);
    const waits: Promise<void>[] = [];
    for (let i = 0; i < refs.length; i++) {
      const ref = refs[i]!;
      const hit = this.pduCache.get(ref);
      if (hit !== undefined) {
        out[i] = hit;
        continue;
      }
      // When a backlog drains, every destination asks for the same new events at about the same
      // moment: one read and encode per event, the others wait for it.
      let p = this.pduLoading.get(ref);
      if (!p) {
        p = this.loadCanonicalPdu(ref).finally(() => this.pduLoading.delete(ref));
        this.pduLoading.set(ref, p);
      }
      waits.push(
        p.then((r) => {
          if (Buffer.isBuffer(r)) out[i] = r;
          else if (r.missing) this.deps.logger.error({ destination, ref }, "queued PDU not found in the store; skipped");
          else this.deps.logger.error({ destination, ref, err: r.error }, "queued PDU cannot be encoded as canonical JSON; skipped");
        }),
      );
    }
    if (waits.length) await Promise.all(waits);
    return out;
  }

  private async loadCanonicalPdu(ref: string): Promise<Buffer | { missing: boolean; error?: string }> {
    const space = ref.indexOf(" ");
    const text = await this.deps.store.getEventJson(ref.slice(0, space), ref.slice(space + 1));
    if (text === null) return { missing: true };
    try {
      return this.pduCache.set(ref, canonicalJson(JSON.parse(text)));
    } catch (e) {
      return { missing: false, error: (e as Error).message };
    }
  }

  /**
   * Builds and stores a transaction from the heads of the queues (`head` as read by the caller;
   * re-read if it changed meanwhile); null when nothing is queued. `attempted`: stored with its
   * first attempt counted.
   *
   * The body is built as canonical JSON by concatenation: the PDUs' canonical bytes (cached per
   * event, shared by every destination), the EDUs' and the envelope's, with the keys in canonical
   * order (edus < origin < origin_server_ts < pdus). It is at the same time the body sent and
   * the `content` the X-Matrix signature covers, so neither sending nor signing encodes it again.
   */
  private async buildTxn(destination: string, head: { pdus: string[]; edus: string[] }): Promise<{ txn: StoredTxn; attempted: boolean } | null> {
    for (let attempt = 0; attempt < 5; attempt++) {
      if (attempt > 0) head = await this.outbound.head(destination, MAX_PDUS_PER_TXN, MAX_EDUS_PER_TXN);
      if (head.pdus.length === 0 && head.edus.length === 0) return null;
      const pdus = (await this.canonicalPdus(destination, head.pdus)).filter((p): p is Buffer => p !== null);
      const edus: string[] = [];
      for (const e of head.edus) {
        try {
          edus.push(canonicalJson(JSON.parse(e)));
        } catch {
          this.deps.logger.error({ destination, edu: e.slice(0, 200) }, "queued EDU is not JSON (or not canonical-encodable); skipped");
        }
      }
      const now = this.clock();
      // The bytes are assembled once (one copy of each PDU's cached bytes) and used as they are
      // for storing, sending and signing.
      const parts: Buffer[] = [
        Buffer.from(
          `${edus.length ? `{"edus":[${edus.join(",")}],` : "{"}"origin":${canonicalJson(this.deps.serverName)},"origin_server_ts":${canonicalJson(now)},"pdus":[`,
          "utf8",
        ),
      ];
      pdus.forEach((p, i) => {
        if (i > 0) parts.push(COMMA);
        parts.push(p);
      });
      parts.push(CLOSE_PDUS);
      const body = Buffer.concat(parts);
      const created = await this.outbound.createTxn(destination, String(now), body, now, head.pdus, head.edus, { canonical: true, attempted: true });
      if (created.result === "created") {
        const txn: StoredTxn = {
          txnId: created.txnId,
          body,
          canonical: true,
          pduCount: head.pdus.length,
          eduCount: head.edus.length,
          createdTs: now,
          attempts: 1,
          rejections: 0,
          lastAttemptTs: now,
        };
        return { txn, attempted: true };
      }
      if (created.result === "exists") {
        const txn = await this.outbound.getTxn(destination);
        return txn ? { txn, attempted: false } : null;
      }
    }
    throw new Error(`queue head of ${destination} kept changing while building a transaction`);
  }
}

function raceTimeout(p: Promise<unknown>, ms: number): Promise<"done" | "timeout"> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve("timeout"), ms);
    p.then(
      () => {
        clearTimeout(t);
        resolve("done");
      },
      () => {
        clearTimeout(t);
        resolve("done");
      },
    );
  });
}
