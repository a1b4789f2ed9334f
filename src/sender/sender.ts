/**
 * The outbound sender: one queue of destinations on BullMQ, for every kind of destination
 * (federation servers; application services through a transport of their own, see transport.ts).
 *
 * Invariant: each destination has at most ONE transaction in flight, and it is re-sent with the
 * same txn_id and byte-identical body until the destination answers 2xx (or, after repeated
 * 4xx, it is split apart and a PDU rejected alone is dead-lettered); only then is the next built. It holds because (a) the transaction is stored
 * (out:{dest}:txn: the queue entries it covers, its created_ts and the digest of its body, from
 * which a re-send rebuilds the same bytes — or, should they ever differ, replaces it by a new
 * txn_id over the same entries; see outbound-store.ts) before it is sent and removed only by a
 * commit naming its txn_id (per-destination.ts, ../store/lua/sender-*.lua), and (b) each destination has at most
 * one BullMQ job, found by its deduplication ID (= the destination) with `keepLastIfActive`: a
 * wake while the job waits or is delayed is a no-op, a wake while it runs is remembered and
 * becomes the next job when it finishes, so no two workers, in any number of processes on one
 * Redis, process a destination at once and no wake is lost. A worker killed mid-request leaves
 * its job active with an expiring lock; BullMQ's stalled-job check hands it to another worker,
 * which re-sends the stored transaction with the same txn_id. A live run whose lock renewal was
 * missed (an event loop or Redis stalled past the lock's margin) is handed back the same way: in
 * this process the new invocation joins the run and applies its outcome (processJob), so the
 * run stays alone; in another process it re-sends the stored transaction (same txn_id and
 * body, never a second one: see per-destination.ts). The persist script and the job add
 * are not atomic, so workers sweep on start (and periodically) for destinations with queued
 * entries or a stored transaction and no job.
 *
 * The parts: this file (BullMQ glue: jobs, workers, sweep, shutdown), takeover.ts (a restarted
 * process takes back its dead predecessor's jobs; locks released at shutdown), per-destination.ts (the
 * algorithm: build, store, send, commit, back off), transaction-builder.ts (queued entries →
 * body), transport.ts (how a body reaches a kind of destination), queue-view.ts (what /queue and
 * the metrics read), outbound-store.ts (the Redis keys and scripts).
 */
import type { CacheBudget } from "../store/byte-lru.js";
import type { Pdu } from "../protocol/pdu.js";
import { DelayedError, Queue, Worker, type Job } from "bullmq";
import type { Redis } from "ioredis";
import type { RedisKeys } from "../store/redis-keys.js";
import type { FederationClient } from "../net/federation-client.js";
import type { Logger } from "../logger.js";
import { parseServerName } from "../protocol/ids.js";
import { backoffDelay } from "./backoff.js";
import { OutboundStore } from "./outbound-store.js";
import { MAX_TXNS_PER_JOB_RUN, PerDestinationSender, type Outcome, type TransactionOutcome } from "./per-destination.js";
import { QueueView } from "./queue-view.js";
import { TransactionBuilder } from "./transaction-builder.js";
import { FederationTransport, Transports } from "./transport.js";
import { claimInstance, releaseLocksOf } from "./takeover.js";
import { adoptLayout, shardOf, shardQueueName } from "./shards.js";
import { BullConnection } from "./bull-connection.js";

export { MAX_PDUS_PER_TXN, MAX_EDUS_PER_TXN, MAX_TXNS_PER_JOB_RUN } from "./per-destination.js";
export type { DestinationView } from "./queue-view.js";

/**
 * Queues: `settings.shards` of them, each named with a hash tag (one slot per queue on a Redis
 * Cluster), a destination always in shard shardOf(destination) — see shards.ts, also for what
 * changing the count does.
 */
const JOB_NAME = "destination";
/** The BullMQ attempts budget for unexpected processor errors (Redis down...): effectively forever. */
const JOB_ATTEMPTS = 1_000_000_000;
/** noteRemoteActivity looks at a given origin's backoff at most this often. */
export const ACTIVITY_CHECK_MS = 5_000;

export { DEFAULT_SENDER_SETTINGS, type SenderSettings } from "./settings.js";
import { DEFAULT_SENDER_SETTINGS, DEFAULT_SHUTDOWN_TIMEOUT_MS, type SenderSettings } from "./settings.js";

/** How often workers look for stalled jobs (active, lock expired); at most half the lock. */
export function stalledCheckMs(lockDurationMs: number): number {
  return Math.max(250, Math.min(1000, Math.floor(lockDurationMs / 2)));
}

export interface SenderDeps {
  /** The process's cache budget (GATEHOUSE_CACHE_MAX_BYTES): the canonical PDUs' share is the sender's. */
  caches?: CacheBudget;
  /** Must have maxRetriesPerRequest: null (BullMQ workers block on it). */
  redis: Redis;
  keys: RedisKeys;
  store: {
    getEventJsons(roomId: string, eventIds: readonly string[]): Promise<(string | null)[]>;
    /** An event from the store's in-memory cache, never read from Redis (TransactionBuilder). */
    cachedEvent?(roomId: string, eventId: string): Pdu | undefined;
    /** The fan-out stage's catch-up (RoomStore.drainOutboxes): run by every sweep, before it looks at queues. */
    drainOutboxes?(): Promise<string[]>;
  };
  client: Pick<FederationClient, "request">;
  serverName: string;
  logger: Logger;
  settings?: Partial<SenderSettings>;
  clock?: () => number;
  random?: () => number;
  /**
   * This process's identity, stable across its restarts (GATEHOUSE_INSTANCE_ID, with the role):
   * a restarted process takes back at once the jobs its dead incarnation still holds locked.
   */
  instanceId?: string;
  /** The host this process runs on (with the pid, tells a dead incarnation from a live twin). */
  hostname?: string;
  /** Called once per answered or failed transaction (metrics). */
  onTransaction?: (outcome: TransactionOutcome, info: { seconds: number; pdus: number; pduErrors: number; kind: string }) => void;
  /** Called when BullMQ hands a destination's job back while its run continues here (processJob; metrics). */
  onJobHandedBack?: () => void;
}

export interface Edu {
  edu_type: string;
  content: Record<string, unknown>;
}

interface JobData {
  destination: string;
}

export class Sender {
  readonly settings: SenderSettings;
  readonly outbound: OutboundStore;
  /** One BullMQ queue per shard (index = shardOf(destination, shards)). */
  readonly queues: Queue<JobData>[];
  /** The kinds of destination: federation for server names; others add themselves (transport.ts). */
  readonly transports: Transports;
  readonly builder: TransactionBuilder;
  readonly perDestination: PerDestinationSender;
  /** What /queue, the CLI and the metrics read. */
  readonly view: QueueView;
  private workers: Worker<JobData>[] = [];
  /** BullMQ's connection, and every one it duplicates (closed for good at close(); bull-connection.ts). */
  readonly bull: BullConnection;
  private sweepTimer: NodeJS.Timeout | null = null;
  private readonly clock: () => number;
  private readonly random: () => number;
  private readonly abort = new AbortController();
  /** Destinations whose job runs in this process (see processJob). */
  private readonly running = new Map<string, RunningJob>();
  /** Of those, the ones woken since their job's last drain began (see wake, processJob). */
  private readonly rewoken = new Set<string>();
  /** Of those, the ones whose job waits for a wake (settings.lingerMs): ends the wait now. */
  private readonly lingering = new Map<string, () => void>();
  /** Jobs running in this process, per shard (index = shardOf), and the worker slots per shard. */
  private runningPerShard: number[] = [];
  private slotsPerShard = 1;
  /** No job lingers until then (drain() at shutdown). */
  private noLingerUntil = 0;
  private closed = false;
  private closing: Promise<void> | null = null;

  constructor(private readonly deps: SenderDeps) {
    this.settings = { ...DEFAULT_SENDER_SETTINGS, ...deps.settings };
    this.clock = deps.clock ?? Date.now;
    this.random = deps.random ?? Math.random;
    this.outbound = new OutboundStore(deps.redis, deps.keys);
    this.bull = new BullConnection(deps.redis);
    const shards = this.settings.shards;
    this.queues = Array.from({ length: shards }, (_, i) => {
      const q = new Queue<JobData>(shardQueueName(i, shards), { connection: this.bull.connection, prefix: this.bullPrefix });
      q.on("error", (err) => deps.logger.warn({ err: err.message, queue: q.name }, "sender queue error"));
      return q;
    });
    this.transports = new Transports(new FederationTransport(deps.client, deps.serverName, (s) => parseServerName(s) !== null));
    this.builder = new TransactionBuilder({ store: deps.store, logger: deps.logger, caches: deps.caches });
    this.perDestination = new PerDestinationSender({
      outbound: this.outbound,
      builder: this.builder,
      transports: this.transports,
      settings: this.settings,
      logger: deps.logger,
      clock: this.clock,
      random: this.random,
      shutdown: this.abort.signal,
      onTransaction: deps.onTransaction,
    });
    this.view = new QueueView(this.outbound, this.queues, (d) => this.queueOf(d), this.clock);
  }

  /** What this process's workers did (the status hashes in Redis hold the totals). */
  get stats(): PerDestinationSender["stats"] {
    return this.perDestination.stats;
  }

  private get bullPrefix(): string {
    return `${this.deps.keys.prefix}:bull`;
  }

  /** The queue of a destination's shard. */
  queueOf(destination: string): Queue<JobData> {
    return this.queues[shardOf(destination, this.queues.length)]!;
  }

  // --- producing -----------------------------------------------------------------------------

  /**
   * Makes sure each destination has a job (fire and forget; the RoomService onQueued hook, called
   * once the entries are in the queue). A destination whose job runs in this process is not
   * queued again: its job drains it once more before it completes (processJob), which costs
   * none of BullMQ's job cycle (add, the next job's creation and fetch, its completion).
   */
  wake(destinations: readonly string[]): void {
    for (const d of destinations) {
      if (this.running.has(d)) {
        this.rewoken.add(d);
        this.lingering.get(d)?.();
        continue;
      }
      this.ensureJob(d).catch((err: Error) => this.deps.logger.warn({ destination: d, err: err.message }, "could not schedule a sender job (the sweep will)"));
    }
  }

  /** Like wake(), awaited. */
  async ensureJob(destination: string): Promise<void> {
    await this.queueOf(destination).add(JOB_NAME, { destination }, {
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
    const fannedOut = (await this.deps.store.drainOutboxes?.()) ?? [];
    if (fannedOut.length) this.deps.logger.info({ destinations: fannedOut.length }, "sender sweep fanned out outbox entries left by an interrupted write");
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

  /**
   * Operator decision on a destination's dead letters: "replay" queues them again (at the tail;
   * sent at once) or "drop" forgets them. Returns how many there were.
   */
  async resolveDeadLetters(destination: string, action: "replay" | "drop"): Promise<number> {
    const n = await this.outbound.resolveDeadLetters(destination, action);
    this.deps.logger.info({ destination, action, pdus: n }, "dead letters resolved by an operator");
    if (action === "replay" && n > 0) await this.ensureJob(destination);
    return n;
  }

  /** Operator "retry now": clears the backoff and runs the destination's job at once. */
  async retryNow(destination: string): Promise<string> {
    await this.outbound.clearBackoff(destination);
    const queue = this.queueOf(destination);
    const jobId = await queue.getDeduplicationJobId(destination);
    if (jobId) {
      const job = await queue.getJob(jobId);
      if (job && (await job.getState()) === "delayed") {
        await job.promote().catch(() => undefined); // it may have started meanwhile
      }
    }
    await this.ensureJob(destination);
    return this.view.jobState(destination);
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

  // --- consuming -----------------------------------------------------------------------------

  /**
   * Starts this process's workers (and the recovery sweep). `role` ("serve", "worker") is part
   * of the instance identity, so a serve process and a worker sharing a data folder differ.
   */
  async startWorkers(role = "worker"): Promise<void> {
    if (this.workers.length || this.closed) return;
    const s = this.settings;
    // A changed shard count drains the old layout first (shards.ts): never two jobs for a destination.
    await adoptLayout(this.queues.length, {
      redis: this.deps.redis,
      bullPrefix: this.bullPrefix,
      layoutKey: this.deps.keys.senderLayout(),
      lockKey: this.deps.keys.senderLayoutLock(),
      logger: this.deps.logger,
    });
    if (this.closed) return;
    // The process's concurrency is split over its shards' workers.
    const perShard = Math.max(1, Math.ceil(s.concurrency / this.queues.length));
    this.slotsPerShard = perShard;
    this.runningPerShard = this.queues.map(() => 0);
    const workers = this.queues.map((q) => {
      const worker = new Worker<JobData>(q.name, (job, token) => this.processJob(job, token), {
        connection: this.bull.connection,
        prefix: this.bullPrefix,
        concurrency: perShard,
        lockDuration: s.lockDurationMs,
        stalledInterval: stalledCheckMs(s.lockDurationMs),
        // A job that stalls (its worker died) goes back to wait; keep doing so for a long time.
        maxStalledCount: 1000,
        settings: { backoffStrategy: (attemptsMade: number) => backoffDelay(attemptsMade, { initialMs: s.backoffInitialMs, maxMs: s.backoffMaxMs }, this.random) },
      });
      worker.on("error", (err) => this.deps.logger.warn({ err: err.message, queue: q.name }, "sender worker error"));
      worker.on("failed", (job, err) => this.deps.logger.error({ destination: job?.data.destination, err: err.message }, "sender job failed"));
      return worker;
    });
    this.workers = workers;
    await Promise.all(workers.map((w) => w.waitUntilReady()));
    // Before the sweep: the sweep's job adds are de-duplicated against jobs still held by a dead
    // incarnation, which would otherwise wait for their locks to expire.
    if (this.deps.instanceId) {
      const instanceId = `${role}@${this.deps.instanceId}`;
      const dead = await claimInstance(this.deps.redis, this.deps.keys.senderInstance(instanceId), {
        instanceId,
        workerId: this.workerIds,
        host: this.deps.hostname ?? "",
        now: this.clock(),
        logger: this.deps.logger,
      });
      if (dead) {
        const n = await this.releaseLocksOf(dead);
        this.deps.logger.info({ instanceId, jobs: n }, "sender took back the jobs of this instance's previous (dead) process");
      }
    }
    await this.recoverySweep();
    if (s.sweepIntervalMs > 0) {
      this.sweepTimer = setInterval(() => {
        this.recoverySweep().catch((err: Error) => this.deps.logger.warn({ err: err.message }, "sender sweep failed"));
      }, s.sweepIntervalMs);
      this.sweepTimer.unref();
    }
    this.deps.logger.info({ concurrency: s.concurrency, shards: this.queues.length }, "sender workers started");
  }

  /** This process's BullMQ worker IDs, one per shard, space-separated (the instance record). */
  private get workerIds(): string {
    return this.workers.map((w) => w.id).join(" ");
  }

  /**
   * Moves the active jobs locked by BullMQ worker(s) `workerIds` (space-separated) back to wait,
   * in every shard (see takeover.ts).
   */
  async releaseLocksOf(workerIds: string): Promise<number> {
    // In parallel: at shutdown this runs under a short deadline.
    const moved = await Promise.all(this.queues.map((q) => releaseLocksOf(this.deps.redis, q, workerIds, this.deps.logger)));
    return moved.reduce((a, b) => a + b, 0);
  }

  get runningWorkers(): boolean {
    return this.workers.length > 0;
  }

  /**
   * Waits, for up to `budgetMs`, until no destination job waits or runs (jobs delayed by a
   * backoff do not count): at shutdown, once no request can add more, what was queued is sent
   * before the workers stop. Returns whether the queue drained.
   */
  async drain(budgetMs: number): Promise<boolean> {
    const end = this.clock() + budgetMs;
    this.noLingerUntil = end;
    this.endLingering();
    for (;;) {
      const all = await Promise.all(this.queues.map((q) => q.getJobCounts("waiting", "active", "prioritized")));
      if (all.every((counts) => (counts.waiting ?? 0) + (counts.active ?? 0) + (counts.prioritized ?? 0) === 0)) return true;
      if (this.clock() >= end || !this.workers.length) return false;
      await new Promise((r) => setTimeout(r, Math.min(50, Math.max(1, end - this.clock()))));
    }
  }

  /**
   * Stops the workers, letting in-flight transactions finish for up to `deadlineMs`; a
   * transaction still unanswered then stays stored and is re-sent (same txn_id) by the next worker.
   */
  close(deadlineMs = DEFAULT_SHUTDOWN_TIMEOUT_MS): Promise<void> {
    this.closing ??= this.doClose(deadlineMs);
    return this.closing;
  }

  private async doClose(deadlineMs: number): Promise<void> {
    this.closed = true;
    this.endLingering();
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.workers.length) {
      const workers = this.workers;
      const closing = Promise.all(workers.map((w) => w.close()));
      if ((await raceTimeout(closing, deadlineMs)) === "timeout") {
        this.deps.logger.warn({ deadlineMs }, "sender: transactions still in flight at the shutdown deadline; they will be re-sent");
        this.abort.abort();
        if ((await raceTimeout(closing, 3000)) === "timeout") {
          // Release what is still locked, so that the next worker resumes at once, not when the
          // locks expire; then do not leave a blocking connection reconnecting after the process
          // thinks it stopped.
          await raceTimeout(this.releaseLocksOf(this.workerIds), 1000);
          await raceTimeout(Promise.all(workers.map((w) => w.disconnect())), 1000);
        }
      }
    }
    const queues = Promise.all(this.queues.map((q) => q.close()));
    if ((await raceTimeout(queues, 2000)) === "timeout") await raceTimeout(Promise.all(this.queues.map((q) => q.disconnect())), 1000);
    this.bull.close();
  }

  /**
   * A destination's job. One run per destination in this process (`running`); a second
   * invocation while the run continues is the same job handed back by BullMQ (see below), and
   * joins the run instead of starting another.
   */
  private async processJob(job: Job<JobData>, token?: string): Promise<string> {
    const destination = job.data.destination;
    const current = this.running.get(destination);
    if (current) {
      // BullMQ handed the job back while its run here continues: a lock renewal was missed (the
      // event loop or Redis stalled for longer than the lock's margin), BullMQ's stalled-job check
      // moved the job back to wait, and a worker of this process took it again with a new lock
      // (which BullMQ now renews). The run goes on, still alone for this destination here; this
      // invocation, the lock's holder now, waits for it and finishes the job with its outcome.
      // The superseded invocation's finish is refused by BullMQ (its lock is gone): a warning.
      const sameJob = current.jobId === job.id;
      this.deps.onJobHandedBack?.();
      current.token = token;
      current.jobId = job.id;
      this.deps.logger.warn(
        { destination, jobId: job.id, sameJob },
        sameJob ? "sender: a destination's job was handed back (a lock renewal was missed) while its run continues here; the run's outcome is applied by the new lock" : "sender: a second job for a destination whose run continues here; the run's outcome is applied to it",
      );
      // It holds a worker slot meanwhile: counted, so that the run does not wait for a wake in it.
      const shard = shardOf(destination, this.queues.length);
      this.runningPerShard[shard]!++;
      let end: RunEnd;
      try {
        end = await current.done;
      } finally {
        this.runningPerShard[shard]!--;
      }
      if (current.token !== token) return "superseded";
      return this.finishJob(job, token, destination, end);
    }
    let settle!: (end: RunEnd) => void;
    const entry: RunningJob = { token, jobId: job.id, done: new Promise<RunEnd>((resolve) => (settle = resolve)) };
    this.running.set(destination, entry);
    const shard = shardOf(destination, this.queues.length);
    // The shard's last free slot taken: jobs waiting for a wake there give their slots back.
    if (++this.runningPerShard[shard]! >= this.slotsPerShard) this.endLingering(shard);
    let end: RunEnd | undefined;
    try {
      // A wake in this process while the job runs (wake) drains the destination again, within
      // the job's budget of transactions: the wake came after its entries were queued, so a
      // drain that starts after it sees them. Checking for it and leaving `running` happen in
      // one synchronous step, so a wake either finds the job running or adds a job itself.
      // Drained, the job may wait a little for such a wake (settings.lingerMs) before it ends.
      let budget = MAX_TXNS_PER_JOB_RUN;
      let outcome: Outcome;
      for (;;) {
        do {
          this.rewoken.delete(destination);
          // Stops at shutdown so close() does not wait for a backlog.
          const run = await this.perDestination.drain(destination, () => this.closed, budget);
          outcome = run.outcome;
          budget -= run.runs;
        } while (outcome.kind === "idle" && this.rewoken.has(destination) && budget > 0 && !this.closed);
        if (outcome.kind !== "idle" || budget <= 0 || !this.mayLinger(shard)) break;
        await this.linger(destination);
        if (!this.rewoken.has(destination) || this.closed) break;
      }
      end = { outcome, missedWake: false };
    } catch (error) {
      end = { error };
    } finally {
      this.runningPerShard[shard]!--;
      this.running.delete(destination);
      const missedWake = this.rewoken.delete(destination);
      if (end && "outcome" in end) end.missedWake = missedWake;
      settle(end ?? { error: new Error("sender run ended without an outcome") });
    }
    // Handed back meanwhile: the invocation holding the lock now finishes the job.
    if (entry.token !== token) return "superseded";
    return this.finishJob(job, token, destination, end);
  }

  /** Whether a drained job of `shard` may wait for a wake: lingering on, a free slot, not stopping. */
  private mayLinger(shard: number): boolean {
    return this.settings.lingerMs > 0 && !this.closed && this.runningPerShard[shard]! < this.slotsPerShard && this.clock() >= this.noLingerUntil;
  }

  /** Waits up to settings.lingerMs for a wake of `destination` (or endLingering). */
  private linger(destination: string): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.lingering.get(destination) === done) this.lingering.delete(destination);
        resolve();
      };
      const timer = setTimeout(done, this.settings.lingerMs);
      this.lingering.set(destination, done);
    });
  }

  /** Ends the waits for a wake (of one shard's jobs, or all). */
  private endLingering(shard?: number): void {
    for (const [destination, done] of [...this.lingering]) {
      if (shard === undefined || shardOf(destination, this.queues.length) === shard) done();
    }
  }

  /** Applies a run's end to its job (with the lock `token`): delay it, complete it, or fail it. */
  private async finishJob(job: Job<JobData>, token: string | undefined, destination: string, end: RunEnd): Promise<string> {
    if ("error" in end) throw end.error;
    const { outcome, missedWake } = end;
    if (outcome.kind === "retry") {
      await job.moveToDelayed(outcome.at, token);
      throw new DelayedError();
    }
    // More queued (or a wake this run had no budget left for): remembered as the next job,
    // created when this one completes.
    if (outcome.kind === "more" || missedWake) await this.ensureJob(destination);
    return outcome.kind;
  }
}

/** How a destination's run in this process ended (a thrown error fails the job: BullMQ retries it). */
type RunEnd = { outcome: Outcome; missedWake: boolean } | { error: unknown };

/** A destination's run in this process: the job and lock its end is applied with, and that end. */
interface RunningJob {
  token: string | undefined;
  jobId: string | undefined;
  done: Promise<RunEnd>;
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
