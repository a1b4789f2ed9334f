/**
 * Every metric Gatehouse exports, defined once on an injected Registry (prom-client). Names
 * follow Prometheus conventions: `gatehouse_` prefix, base units (seconds, bytes), `_total` on
 * counters.
 *
 * Cardinality: no label ever carries a remote server name, user ID or event ID, since thousands
 * of servers may knock. Endpoints are Express route patterns (a fixed set), rooms are only
 * Gatehouse's own hosted rooms (created by the operator), and per-destination queue depth is
 * exported only for the top 10 destinations at scrape time (the gauge is reset on every scrape,
 * so old destinations disappear).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { CacheStats } from "./store/byte-lru.js";
import { GATEHOUSE_VERSION } from "./federation/version-routes.js";

export type KnockOutcome = "received" | "accepted" | "denied" | "rescinded" | "rejected";

export class Metrics {
  readonly registry: Registry;
  readonly federationRequests: Counter<"route" | "method" | "status" | "errcode">;
  readonly federationRequestDuration: Histogram<"route" | "method">;
  readonly adminRequests: Counter<"route" | "method" | "status">;
  readonly clientRequests: Counter<"route" | "method" | "status" | "errcode">;
  readonly knocks: Counter<"outcome">;
  readonly aclDenials: Counter<"room" | "reason">;
  readonly inboundCheckFailures: Counter<"check">;
  readonly keyFetches: Counter<"outcome">;
  readonly inboundPdus: Counter<"outcome">;
  readonly missingEvents: Counter<"outcome">;
  readonly partialStateResyncs: Counter<"outcome">;
  readonly eventsPersisted: Counter<"origin" | "kind">;
  readonly outboundPdusQueued: Counter;
  readonly outboundTransactions: Counter<"outcome">;
  readonly senderJobsHandedBack: Counter;
  readonly outboundTransactionDuration: Histogram;
  readonly outboundPdusPerTransaction: Histogram;
  readonly outboundPduErrors: Counter;
  readonly remoteKnocks: Counter<"outcome">;
  readonly outboundRefused: Counter<"reason">;
  /** Filled at scrape time by the sender's snapshot (see setOutboundCollector). */
  readonly outboundPending: Gauge<"kind">;
  readonly outboundPendingTop: Gauge<"destination">;
  readonly outboundDestinationsInBackoff: Gauge;
  readonly outboundDeadLetters: Gauge;
  readonly outboundOldestPendingAge: Gauge;
  readonly bullmqJobs: Gauge<"state">;
  /** In-process caches bounded by GATEHOUSE_CACHE_MAX_BYTES (src/store/byte-lru.ts), filled at scrape time. */
  readonly cacheBytes: Gauge<"cache">;
  readonly cacheEntries: Gauge<"cache">;
  readonly cacheMaxBytes: Gauge<"cache">;
  /** GATEHOUSE_REDIS_WAIT_REPLICAS: the WAIT before an acknowledged write's 200. */
  readonly redisReplicaWaitDuration: Histogram;
  readonly redisReplicaWaitTimeouts: Counter;
  /** Hosted rooms' writes refused because another writer (another replica) moved the room first. */
  readonly roomWriteConflicts: Counter;
  /** Runs that waited for another replica's write lease on the room before planning. */
  readonly roomWriteLeaseWaits: Counter;
  /** How the in-process room state cache answered a snapshot (store/state-cache.ts). */
  readonly roomStateReads: Counter<"path">;
  /** Events of the room stream a snapshot advanced its cache over, by where they were read from. */
  readonly roomStateDeltaEvents: Counter<"source">;
  /** How the state planner compared the current state to a resolution's answer (room-state.ts diffTo). */
  readonly roomStateDiffs: Counter<"path">;
  /** Always 1; the labels say what runs (the usual *_build_info convention). */
  readonly buildInfo: Gauge<"version" | "node_version">;

  private outboundCollector: (() => Promise<OutboundSnapshot>) | null = null;
  private cacheCollector: (() => readonly CacheStats[]) | null = null;
  private outboundRefresh: Promise<void> | null = null;

  constructor(registry = new Registry(), options: { defaultMetrics?: boolean } = {}) {
    this.registry = registry;
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: "gatehouse_" });
    const r = [registry];
    this.buildInfo = new Gauge({
      name: "gatehouse_build_info",
      help: "Always 1: the Gatehouse version (package.json) and the Node.js version running it.",
      labelNames: ["version", "node_version"] as const,
      registers: r,
    });
    this.buildInfo.set({ version: GATEHOUSE_VERSION, node_version: process.versions.node }, 1);
    this.redisReplicaWaitDuration = new Histogram({
      name: "gatehouse_redis_replica_wait_seconds",
      help: "Time a WAIT for replicas (GATEHOUSE_REDIS_WAIT_REPLICAS) held an accepted write's answer.",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: r,
    });
    this.redisReplicaWaitTimeouts = new Counter({
      name: "gatehouse_redis_replica_wait_timeouts_total",
      help: "WAITs that returned with fewer replicas than GATEHOUSE_REDIS_WAIT_REPLICAS: writes a failover could still lose.",
      registers: r,
    });
    this.roomWriteConflicts = new Counter({
      name: "gatehouse_room_write_conflicts_total",
      help: "Planned writes to a hosted room refused because another writer (usually another replica) wrote to the room since the snapshot they were planned on; each is planned again on a new snapshot.",
      registers: r,
    });
    this.roomWriteLeaseWaits = new Counter({
      name: "gatehouse_room_write_lease_waits_total",
      help: "Runs of events that found a hosted room's write lease held by another replica (planning the room) and waited for it before planning, instead of planning a write that would conflict.",
      registers: r,
    });
    this.roomStateReads = new Counter({
      name: "gatehouse_room_state_reads_total",
      help: "Room snapshots by how the in-process state cache served them: hit (nothing new), delta (advanced by the events written since, by this or another replica), full (state read whole: no entry, a gap over the delta limit, a state reset).",
      labelNames: ["path"] as const,
      registers: r,
    });
    this.roomStateDeltaEvents = new Counter({
      name: "gatehouse_room_state_delta_events_total",
      help: "Events a snapshot's delta advanced the state cache over, by source: local (in this process's event cache: written or read by it before), remote (read from Redis: usually written by another replica), skipped (not in the event cache, and no state event by the room's state-event record: not read).",
      labelNames: ["source"] as const,
      registers: r,
    });
    this.roomStateDiffs = new Counter({
      name: "gatehouse_room_state_diffs_total",
      help: "The state planner's comparisons of a state with a resolution's answer (forked rooms): deltas (only the keys of the state groups' deltas between them), or whole states compared, O(state): whole_no_fork (the answer was resolved whole, or the state has no group), whole_far (their groups do not meet within 64 steps), whole_large (the deltas between them touch more keys than the state holds).",
      labelNames: ["path"] as const,
      registers: r,
    });
    this.federationRequests = new Counter({
      name: "gatehouse_federation_requests_total",
      help: "Federation requests answered, by route (the Express route pattern), method, HTTP status and Matrix errcode (\"\" on success). An answer cut off after its first byte counts as 500 M_UNKNOWN (the server failed) or 499 (the client left).",
      labelNames: ["route", "method", "status", "errcode"] as const,
      registers: r,
    });
    this.federationRequestDuration = new Histogram({
      name: "gatehouse_federation_request_duration_seconds",
      help: "Time to answer a federation request, by route and method.",
      labelNames: ["route", "method"] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: r,
    });
    this.adminRequests = new Counter({
      name: "gatehouse_admin_requests_total",
      help: "Admin API requests, by route, method and status.",
      labelNames: ["route", "method", "status"] as const,
      registers: r,
    });
    this.clientRequests = new Counter({
      name: "gatehouse_client_requests_total",
      help: "Client-Server API requests from application services, by route, method, status and Matrix errcode (\"\" on success).",
      labelNames: ["route", "method", "status", "errcode"] as const,
      registers: r,
    });
    this.knocks = new Counter({
      name: "gatehouse_knocks_total",
      help: "Knocks on hosted rooms: received (send_knock accepted), accepted (invited), denied (kicked), rescinded (send_leave by the knocker), rejected (send_knock refused).",
      labelNames: ["outcome"] as const,
      registers: r,
    });
    this.aclDenials = new Counter({
      name: "gatehouse_acl_denials_total",
      help: "Requests or PDUs refused by a hosted room's m.room.server_acl, by room and reason.",
      labelNames: ["room", "reason"] as const,
      registers: r,
    });
    this.inboundCheckFailures = new Counter({
      name: "gatehouse_inbound_check_failures_total",
      help: "Inbound checks that failed: x_matrix (request signature), format, signature, event_id, hash, auth.",
      labelNames: ["check"] as const,
      registers: r,
    });
    this.keyFetches = new Counter({
      name: "gatehouse_key_fetches_total",
      help: "Remote server key lookups: hit (cache), miss (fetched), notary (fetched via a notary), error (not found).",
      labelNames: ["outcome"] as const,
      registers: r,
    });
    this.inboundPdus = new Counter({
      name: "gatehouse_inbound_pdus_total",
      help: "PDUs received in /send transactions, by outcome.",
      labelNames: ["outcome"] as const,
      registers: r,
    });
    this.missingEvents = new Counter({
      name: "gatehouse_missing_events_total",
      help: "Events fetched with get_missing_events (persisted, refused), gaps whose state was taken from the sender with /state_ids (state_taken) or could not be (state_failed, nothing written) or were not tried because that sender's last fallback in the room failed (state_backoff), and PDUs whose prev events stayed missing (gap_left: refused in rooms hosted elsewhere, checked as they are in rooms hosted here).",
      labelNames: ["outcome"] as const,
      registers: r,
    });
    this.partialStateResyncs = new Counter({
      name: "gatehouse_partial_state_resyncs_total",
      help: "Resyncs of rooms joined with partial state (rooms/partial-state.ts): attempts that completed the state (completed), failed on every server (failed: retried with backoff), or found the room done already (not_partial); and events accepted while the room was partial that fail the auth rules against the complete state (recheck_failed: logged, kept).",
      labelNames: ["outcome"] as const,
      registers: r,
    });
    this.eventsPersisted = new Counter({
      name: "gatehouse_events_persisted_total",
      help: "Events persisted in hosted rooms, by origin (local, remote) and kind (member, state, message).",
      labelNames: ["origin", "kind"] as const,
      registers: r,
    });
    this.outboundPdusQueued = new Counter({
      name: "gatehouse_outbound_pdus_queued_total",
      help: "PDU deliveries queued (one per event and destination).",
      registers: r,
    });
    this.outboundTransactions = new Counter({
      name: "gatehouse_outbound_transactions_total",
      help: "Outbound /send transactions, by outcome: sent (2xx), failed (will retry; a transaction rejected repeatedly is then split), dead_lettered (a PDU sent alone was rejected: moved to the dead letters), dropped (EDUs sent alone were rejected).",
      labelNames: ["outcome"] as const,
      registers: r,
    });
    this.senderJobsHandedBack = new Counter({
      name: "gatehouse_sender_jobs_handed_back_total",
      help: "Destination jobs BullMQ handed back to this process while their run here went on: a lock renewal was missed (the process or Redis stalled past GATEHOUSE_SENDER_LOCK_MS's margin). The run continues alone; a steady rate means the lock is too short for the host's stalls.",
      registers: r,
    });
    this.outboundTransactionDuration = new Histogram({
      name: "gatehouse_outbound_transaction_duration_seconds",
      help: "Time from sending a /send transaction to its answer.",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: r,
    });
    this.outboundPdusPerTransaction = new Histogram({
      name: "gatehouse_outbound_pdus_per_transaction",
      help: "PDUs in each successful outbound transaction.",
      buckets: [1, 2, 5, 10, 20, 30, 40, 50],
      registers: r,
    });
    this.outboundPduErrors = new Counter({
      name: "gatehouse_outbound_pdu_errors_total",
      help: "PDUs a destination answered with a per-PDU error inside a 200 /send response (logged, not retried).",
      registers: r,
    });
    this.remoteKnocks = new Counter({
      name: "gatehouse_remote_knocks_total",
      help: "Knocks by local users on rooms hosted elsewhere, by outcome (sent, failed).",
      labelNames: ["outcome"] as const,
      registers: r,
    });
    this.outboundRefused = new Counter({
      name: "gatehouse_federation_outbound_refused_total",
      help: "Outbound federation connections refused, by reason: private_address (every resolved address of a server name, .well-known, SRV or redirect target is in a blocked range), certificate_name, certificate_expired, certificate_untrusted, certificate_invalid, redirect_loop, too_many_redirects.",
      labelNames: ["reason"] as const,
      registers: r,
    });
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    this.outboundPending = new Gauge({
      name: "gatehouse_outbound_pending",
      help: "Deliveries waiting in the per-destination queues, by kind (pdu, edu).",
      labelNames: ["kind"] as const,
      registers: r,
      async collect() {
        await self.refreshOutbound();
      },
    });
    this.outboundPendingTop = new Gauge({
      name: "gatehouse_outbound_pending_pdus_top",
      help: "Pending PDUs of the 10 destinations with the most (bounded cardinality).",
      labelNames: ["destination"] as const,
      registers: r,
      async collect() {
        await self.refreshOutbound();
      },
    });
    this.outboundDestinationsInBackoff = new Gauge({
      name: "gatehouse_outbound_destinations_in_backoff",
      help: "Destinations whose last transaction failed and that are waiting to retry.",
      registers: r,
      async collect() {
        await self.refreshOutbound();
      },
    });
    this.outboundDeadLetters = new Gauge({
      name: "gatehouse_outbound_dead_letters",
      help: "PDUs in the destinations' dead-letter lists (rejected when sent alone; replay or drop them with `gatehouse queue dead-letters`).",
      registers: r,
      async collect() {
        await self.refreshOutbound();
      },
    });
    this.outboundOldestPendingAge = new Gauge({
      name: "gatehouse_outbound_oldest_pending_age_seconds",
      help: "Age of the oldest undelivered transaction or PDU across destinations (0 when none).",
      registers: r,
      async collect() {
        await self.refreshOutbound();
      },
    });
    this.bullmqJobs = new Gauge({
      name: "gatehouse_bullmq_jobs",
      help: "Jobs in the BullMQ sender queue, by state (waiting, active, delayed, failed).",
      labelNames: ["state"] as const,
      registers: r,
      async collect() {
        await self.refreshOutbound();
      },
    });
    // Label values are the fixed cache names of CACHE_SHARES (eight at most).
    const cacheGauge = (name: string, help: string, pick: (c: CacheStats) => number): Gauge<"cache"> =>
      new Gauge({
        name,
        help,
        labelNames: ["cache"] as const,
        registers: r,
        collect() {
          for (const c of self.cacheCollector?.() ?? []) this.set({ cache: c.cache }, pick(c));
        },
      });
    this.cacheBytes = cacheGauge("gatehouse_cache_bytes", "Estimated bytes held by an in-process cache (GATEHOUSE_CACHE_MAX_BYTES bounds their sum).", (c) => c.bytes);
    this.cacheEntries = cacheGauge("gatehouse_cache_entries", "Entries held by an in-process cache bounded by bytes.", (c) => c.entries);
    this.cacheMaxBytes = cacheGauge("gatehouse_cache_max_bytes", "An in-process cache's share of GATEHOUSE_CACHE_MAX_BYTES.", (c) => c.maxBytes);
  }

  /** The process's cache budget reports its caches' sizes at scrape time (buildCore sets it). */
  setCacheCollector(fn: () => readonly CacheStats[]): void {
    this.cacheCollector = fn;
  }

  /** The sender provides queue figures at scrape time (one Redis pass, not per event). */
  setOutboundCollector(fn: () => Promise<OutboundSnapshot>): void {
    this.outboundCollector = fn;
  }

  /**
   * One sender snapshot per scrape, shared by every gauge it fills. Fix: only outbound_pending
   * collected it, and prom-client collects all metrics in parallel, so the other gauges were
   * read before being set: one scrape stale, and absent on the first scrape.
   */
  private refreshOutbound(): Promise<void> {
    this.outboundRefresh ??= this.collectOutbound().finally(() => {
      this.outboundRefresh = null;
    });
    return this.outboundRefresh;
  }

  private async collectOutbound(): Promise<void> {
    if (!this.outboundCollector) return;
    let snap: OutboundSnapshot;
    try {
      snap = await this.outboundCollector();
    } catch {
      return;
    }
    this.outboundPending.set({ kind: "pdu" }, snap.pendingPdus);
    this.outboundPending.set({ kind: "edu" }, snap.pendingEdus);
    this.outboundPendingTop.reset();
    for (const [dest, n] of snap.top) this.outboundPendingTop.set({ destination: dest }, n);
    this.outboundDestinationsInBackoff.set(snap.destinationsInBackoff);
    this.outboundDeadLetters.set(snap.deadLetters);
    this.outboundOldestPendingAge.set(snap.oldestPendingAgeSeconds);
    this.bullmqJobs.reset();
    for (const [state, n] of Object.entries(snap.jobs)) this.bullmqJobs.set({ state }, n);
  }
}

export interface OutboundSnapshot {
  pendingPdus: number;
  pendingEdus: number;
  /** Up to 10 [destination, pending PDUs], most first. */
  top: [string, number][];
  destinationsInBackoff: number;
  /** PDUs in dead-letter lists, all destinations. */
  deadLetters: number;
  oldestPendingAgeSeconds: number;
  jobs: Record<string, number>;
}
