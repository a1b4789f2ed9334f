/**
 * The sender's settings and their defaults: the one place each default is written (loadConfig
 * reads its fallbacks from here, and the Sender fills unset fields from here).
 */
export interface SenderSettings {
  /** Destinations processed in parallel by one process (split evenly over its shards' workers). */
  concurrency: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
  /** 4xx answers (other than 408/429) to one transaction before its batch is dropped. */
  maxRejectedAttempts: number;
  /**
   * Caps each retry delay at this percentage of how long the destination has been failing
   * (never below backoffInitialMs; 0 = off), so a destination back after a short outage is
   * retried soon: the wait after it recovers is at most about this share of the outage.
   */
  backoffOutagePercent: number;
  /**
   * BullMQ job lock, renewed every half of it while the job runs; a killed worker's destinations
   * are picked up by another worker within about this long plus two stalled checks (every
   * STALLED_CHECK_MS). A restarted process with the same instance ID takes its dead
   * incarnation's jobs back at once instead.
   */
  lockDurationMs: number;
  /**
   * BullMQ queues the destinations are spread over (shards.ts), each in its own hash slot on a
   * Redis Cluster; one worker per shard in each process, the concurrency split between them.
   */
  shards: number;
  /** How often workers look for destinations with queued work and no job (0 = only at start). */
  sweepIntervalMs: number;
  /**
   * How long a destination's job, its queue drained, waits for a wake from this process before it
   * completes (0 = not at all): a wake meanwhile is sent by the same job, saving BullMQ's job
   * cycle (an add, the fetch, the completion). Only while its shard's worker has a free slot; a
   * job that would fill the last slot ends the waits of that shard (see Sender.processJob).
   */
  lingerMs: number;
}

/**
 * How long a stopping process lets requests and in-flight transactions finish
 * (GATEHOUSE_SHUTDOWN_TIMEOUT_MS); the sender's close() uses it when no deadline is given.
 */
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 10_000;

export const DEFAULT_SENDER_SETTINGS: SenderSettings = {
  concurrency: 100,
  backoffInitialMs: 1000,
  backoffMaxMs: 300_000,
  maxRejectedAttempts: 5,
  backoffOutagePercent: 25,
  lockDurationMs: 2_500,
  sweepIntervalMs: 60_000,
  shards: 8,
  lingerMs: 50,
};
