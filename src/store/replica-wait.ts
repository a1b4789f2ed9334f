/**
 * `WAIT <replicas> <timeout>` after an acknowledged write (GATEHOUSE_REDIS_WAIT_REPLICAS): the 200
 * of an inbound /send, a local event (admin and client APIs), createRoom or a send_* handshake is
 * held until that many replicas of the room's primary have the write, or the timeout passed.
 *
 * WAIT counts the writes of the connection it is sent on, so it must go to the connection that
 * wrote: on a single Redis that is the one connection; on a Redis Cluster, the pool connection of
 * the primary serving the room's slot (ioredis routes a keyless WAIT to a random node, which would
 * wait for nothing useful). The slot is computed locally (ioredis's own Command#getSlot) and
 * looked up in ioredis's slot table.
 *
 * What it bounds (README "Redis Cluster"): a primary that dies after the 200 no longer takes an
 * event that a replica had not received with it, PROVIDED the replica that acknowledged is the one
 * promoted. It does not make the write durable on disk, and a timeout (replica gone or lagging)
 * still answers 200: the event is on the primary, and refusing would not undo it. Timeouts are
 * counted (gatehouse_redis_replica_wait_timeouts_total) and logged.
 */
import { Cluster, Command, type Redis } from "ioredis";
import type { Logger } from "../logger.js";
import type { RedisKeys } from "./redis-keys.js";

export interface ReplicaWaitOptions {
  /** Replicas that must acknowledge (0: off, no WAIT sent). */
  replicas: number;
  timeoutMs: number;
  logger: Logger;
  /** Called once per WAIT with the replicas that acknowledged and how long it took. */
  onWait?: (info: { acknowledged: number; seconds: number; timedOut: boolean }) => void;
}

export class ReplicaWait {
  constructor(
    private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly opts: ReplicaWaitOptions,
  ) {}

  get enabled(): boolean {
    return this.opts.replicas > 0;
  }

  /**
   * Waits for the writes made so far to the primaries of `roomIds` (one WAIT per distinct
   * primary, in parallel). Never throws: a failed WAIT is logged like a timeout.
   */
  async afterRoomWrites(roomIds: Iterable<string>): Promise<void> {
    if (!this.enabled) return;
    const conns = new Set<Redis>();
    for (const roomId of roomIds) conns.add(this.connectionOf(this.keys.room(roomId)));
    await Promise.all([...conns].map((c) => this.waitOn(c)));
  }

  /** The connection that writes `key`: the slot's primary on a cluster, else the one connection. */
  connectionOf(key: string): Redis {
    const r = this.redis as unknown;
    if (!(r instanceof Cluster)) return this.redis;
    const slot = new Command("get", [key]).getSlot();
    const owner = slot === null ? undefined : r.slots[slot]?.[0];
    const node = owner ? r.nodes("master").find((n) => `${n.options.host}:${n.options.port}` === owner) : undefined;
    // Slot table not loaded yet (or being refreshed): any primary; WAIT there bounds nothing
    // but cannot block a write either.
    return node ?? r.nodes("master")[0] ?? this.redis;
  }

  private async waitOn(conn: Redis): Promise<void> {
    const started = performance.now();
    let acknowledged = 0;
    try {
      acknowledged = Number(await conn.call("WAIT", this.opts.replicas, this.opts.timeoutMs));
    } catch (err) {
      this.opts.logger.warn({ err: (err as Error).message }, "WAIT for replicas failed; answering anyway");
    }
    const seconds = (performance.now() - started) / 1000;
    const timedOut = acknowledged < this.opts.replicas;
    if (timedOut) {
      this.opts.logger.warn({ acknowledged, wanted: this.opts.replicas, timeoutMs: this.opts.timeoutMs }, "fewer replicas than GATEHOUSE_REDIS_WAIT_REPLICAS acknowledged an accepted write in time; a failover now could lose it");
    }
    this.opts.onWait?.({ acknowledged, seconds, timedOut });
  }
}
