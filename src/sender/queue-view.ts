/**
 * What the admin API (/queue), the CLI and the metrics scrape read of the outbound queue. Reads
 * only: the per-destination lists, stored transactions and status hashes (OutboundStore) and the
 * BullMQ job of each destination (in its shard's queue; the job counts are summed over the shards).
 */
import type { Queue } from "bullmq";
import type { OutboundSnapshot } from "../metrics.js";
import type { DestinationSnapshot, OutboundStore } from "./outbound-store.js";

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
  /** PDUs in the dead-letter list now (rejected when sent alone). */
  dead_letters: number;
  /** PDUs ever dead-lettered. */
  dead_lettered_total: number;
  /** PDUs of a rejected transaction still to be sent one per transaction. */
  isolating_pdus: number;
}

/** The fields /queue can be sorted by (as Synapse's destinations admin API: `order_by`). */
export const QUEUE_ORDER_BY = [
  "destination",
  "pending_pdus",
  "pending_edus",
  "failures",
  "last_success_ts",
  "last_error_ts",
  "backoff_until",
  "txn_age_ms",
  "txns_sent",
  "pdus_sent",
  "dead_letters",
] as const;
export type QueueOrderBy = (typeof QUEUE_ORDER_BY)[number];

export interface QueuePageRequest {
  /** Offset into the sorted list. */
  from: number;
  limit: number;
  orderBy: QueueOrderBy;
  /** "f": ascending (nulls first), "b": descending. Ties: destination ascending. */
  dir: "f" | "b";
}

export interface QueuePage {
  destinations: DestinationView[];
  /** Destinations in the queue (all pages). */
  total: number;
  /** `from` of the next page, when there is one. */
  nextFrom: number | null;
  totalPendingPdus: number;
  totalPendingEdus: number;
}

export class QueueView {
  constructor(
    private readonly outbound: OutboundStore,
    /** Every shard's queue (shards.ts). */
    private readonly queues: readonly Queue[],
    /** The shard queue of a destination. */
    private readonly queueOf: (destination: string) => Queue,
    private readonly clock: () => number = Date.now,
  ) {}

  async listDestinations(): Promise<DestinationView[]> {
    const all = await this.outbound.destinations();
    const out: DestinationView[] = [];
    for (let i = 0; i < all.length; i += 500) out.push(...(await this.outbound.snapshots(all.slice(i, i + 500))).map((s) => this.view(s)));
    return out;
  }

  /** One page of the destinations, sorted; the totals are over all of them. */
  async page(req: QueuePageRequest): Promise<QueuePage> {
    const all = await this.listDestinations();
    const key = req.orderBy;
    const sign = req.dir === "b" ? -1 : 1;
    const sorted = all.sort((a, b) => {
      const x = a[key];
      const y = b[key];
      let c = 0;
      if (x !== y) {
        if (x === null) c = -1;
        else if (y === null) c = 1;
        else c = x < y ? -1 : 1;
      }
      return c !== 0 ? sign * c : a.destination < b.destination ? -1 : a.destination > b.destination ? 1 : 0;
    });
    const destinations = sorted.slice(req.from, req.from + req.limit);
    const end = req.from + destinations.length;
    return {
      destinations,
      total: all.length,
      nextFrom: end < all.length ? end : null,
      totalPendingPdus: all.reduce((n, d) => n + d.pending_pdus, 0),
      totalPendingEdus: all.reduce((n, d) => n + d.pending_edus, 0),
    };
  }

  /** One destination with its BullMQ job state; null when it never had traffic. */
  async describe(destination: string): Promise<(DestinationView & { job: string }) | null> {
    const [snap] = await this.outbound.snapshots([destination]);
    if (!snap) return null;
    if (!snap.txn && snap.pendingPdus === 0 && snap.pendingEdus === 0 && snap.deadLetters === 0 && !(await this.outbound.isKnownDestination(destination))) return null;
    return { ...this.view(snap), job: await this.jobState(destination) };
  }

  /**
   * The state of the destination's BullMQ job ("none" when it has none). A job that completes and
   * is removed between these reads has no state left (BullMQ answers "unknown"): it is "none" too.
   * (A retry on a Redis Cluster answered "unknown" when its job ran at once.)
   */
  async jobState(destination: string): Promise<string> {
    const queue = this.queueOf(destination);
    const jobId = await queue.getDeduplicationJobId(destination);
    if (!jobId) return "none";
    const job = await queue.getJob(jobId);
    const state = job ? await job.getState() : "none";
    return state === "unknown" ? "none" : state;
  }

  /**
   * Queue figures for the metrics scrape: totals, the 10 destinations with most pending PDUs,
   * destinations in backoff, the age of the oldest stored (undelivered) transaction, BullMQ job
   * counts. One pass over the destination set per scrape.
   */
  async metricsSnapshot(): Promise<OutboundSnapshot> {
    const now = this.clock();
    const views = await this.listDestinations();
    let pendingPdus = 0;
    let pendingEdus = 0;
    let inBackoff = 0;
    let oldest = 0;
    let deadLetters = 0;
    for (const v of views) {
      deadLetters += v.dead_letters;
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
    // Summed over the shards.
    const jobs: Record<string, number> = {};
    for (const counts of await Promise.all(this.queues.map((q) => q.getJobCounts("waiting", "active", "delayed", "failed")))) {
      for (const [k, v] of Object.entries(counts)) jobs[k] = (jobs[k] ?? 0) + v;
    }
    return { pendingPdus, pendingEdus, top, destinationsInBackoff: inBackoff, deadLetters, oldestPendingAgeSeconds: oldest / 1000, jobs };
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
      dead_letters: s.deadLetters,
      dead_lettered_total: s.status.deadLettered,
      isolating_pdus: s.status.isolatePdus,
    };
  }
}
