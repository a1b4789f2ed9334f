/**
 * The fan-out stage: moves a room's outbox entries (written by the persist script in the room's
 * slot, room-store.ts) to each destination's PDU queue (the destination's slot). Two steps that no
 * one script can join on a Redis Cluster, made safe by idempotence:
 *
 * 1. per destination, one script (lua/fanout-queue.lua) appends the entries not queued there
 *    yet (the dedupe by event ID, helped by a cursor per room and destination for entries older
 *    than the dedupe remembers) and moves the cursor;
 * 2. once every destination of the batch is done, the entries are deleted from the outbox.
 *
 * A crash between 1 and 2 leaves the entries in the outbox: the next run (inline after the next
 * write of the room, or the sender's sweep) repeats step 1, which queues nothing twice, so no PDU
 * is lost or duplicated, and as the transaction is built from the destination queue exactly as
 * before, a txnId keeps its one body. Two processes fanning out one room at once are harmless for
 * the same reason. On a single Redis the same code runs, inline right after the write.
 */
import type { Redis } from "ioredis";
import type { RedisKeys } from "./redis-keys.js";
import { defineLuaCommands } from "./lua-scripts.js";

/** Outbox entries read per round. */
const BATCH = 500;
/**
 * Per destination, how many recently queued event refs the dedupe keeps (about 150 bytes each).
 * A re-run of a crashed fan-out comes within the sweep interval, long before a destination is
 * sent this many more PDUs; older entries are recognised by their outbox ID (fanout-queue.lua).
 */
export const FANOUT_SEEN_KEEP = 2_000;

type RedisWithFanout = Redis & { gatehouseFanoutQueue(numKeys: number, ...args: string[]): Promise<number> };

export class Fanout {
  private readonly redis: RedisWithFanout;
  /** Rooms with a fan-out running in this process, and whether another was asked for meanwhile. */
  private readonly running = new Map<string, { again: boolean; done: Promise<Set<string>> }>();

  constructor(
    redis: Redis,
    private readonly keys: RedisKeys,
    private readonly clock: () => number = Date.now,
  ) {
    this.redis = redis as RedisWithFanout;
    defineLuaCommands(redis, { gatehouseFanoutQueue: "fanout-queue" });
  }

  /**
   * Moves every outbox entry of the room to its destinations' queues. Returns the destinations
   * that were given PDUs. Calls for one room in one process are joined (a call during a run makes
   * the run read the outbox once more), so a busy room costs one reader, not one per event.
   */
  async drain(roomId: string): Promise<Set<string>> {
    const current = this.running.get(roomId);
    if (current) {
      current.again = true;
      return current.done;
    }
    const state = { again: false, done: Promise.resolve(new Set<string>()) };
    state.done = (async () => {
      const queued = new Set<string>();
      try {
        do {
          state.again = false;
          for (const d of await this.drainOnce(roomId)) queued.add(d);
        } while (state.again);
      } finally {
        this.running.delete(roomId);
      }
      return queued;
    })();
    this.running.set(roomId, state);
    return state.done;
  }

  private async drainOnce(roomId: string): Promise<Set<string>> {
    const k = this.keys;
    const queued = new Set<string>();
    for (;;) {
      const entries = (await this.redis.xrange(k.outbox(roomId), "-", "+", "COUNT", BATCH)) as [string, string[]][];
      if (entries.length === 0) return queued;
      const perDestination = new Map<string, string[]>();
      for (const [id, fields] of entries) {
        const f = fieldsOf(fields);
        if (!f.e) continue;
        for (const d of (f.d ?? "").split(" ")) {
          if (!d) continue;
          let pairs = perDestination.get(d);
          if (!pairs) perDestination.set(d, (pairs = []));
          pairs.push(id, f.e);
        }
      }
      const destinations = [...perDestination.keys()];
      // The global set (its own slot) first: a destination with queued PDUs is always listed.
      if (destinations.length > 0) await this.redis.sadd(k.destinations(), ...destinations);
      const now = String(this.clock());
      await Promise.all(
        destinations.map(async (d) => {
          const n = await this.redis.gatehouseFanoutQueue(3, k.outboundPdus(d), k.fanoutCursors(d), k.fanoutSeen(d), roomId, now, String(FANOUT_SEEN_KEEP), ...perDestination.get(d)!);
          if (n > 0) queued.add(d);
        }),
      );
      await this.redis.xdel(k.outbox(roomId), ...entries.map(([id]) => id));
      if (entries.length < BATCH) return queued;
    }
  }

  /** Rooms whose outbox has entries (the sweep's work), among `roomIds`. */
  async pendingRooms(roomIds: readonly string[]): Promise<string[]> {
    const lengths = await Promise.all(roomIds.map((r) => this.redis.xlen(this.keys.outbox(r))));
    return roomIds.filter((_, i) => lengths[i]! > 0);
  }
}

function fieldsOf(flat: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]!] = flat[i + 1]!;
  return out;
}
