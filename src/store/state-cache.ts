/**
 * In-process cache of hosted rooms' current state, kept exact by the room's stream position.
 *
 * Every accepted event gets the next stream position in the persist script, and the state hash
 * changes only there: usually an accepted event (no status) with a state_key sets its
 * (type, state_key) field. When state resolution changes current state in any other way, the
 * script records the position in the room's `state_reset`, and caches older than it are read
 * again in full. So the state at stream S is the state at stream C (cached) plus the accepted state events
 * at positions (C, S], applied in order. A snapshot read is one script call that returns the room
 * record, the extremities, the event ID at the cached position (to detect a Redis that lost data
 * or was flushed: then the cache is dropped) and the event IDs and statuses after it, and which
 * of them are state events (the room's state-event record, redis-keys.ts stateEvents, written by
 * persist-events.lua in the same atomic write as the events): only state events this process has
 * not seen are fetched, so a replica follows another's messages without reading them. Where the
 * record does not cover the delta (positions written by a version without it, or by
 * persist-joined-room), every event this process has not seen is fetched, as before the record.
 * Without a usable entry (first read, a gap larger than MAX_DELTA) the full state is read in the
 * same script call.
 *
 * State maps handed out are never mutated: a delta with state changes builds new versions that
 * share all unchanged entries with the old ones (layered-map.ts), so a snapshot a request holds
 * stays the state it was read at, and a new version costs O(√members), not O(members). The
 * servers with joined members are kept per version too, adjusted by the delta (a knock or a
 * message changes no joins, so most versions share the previous version's set). Parsed events are
 * shared and must be treated as immutable (they are).
 */
import type { Pdu } from "../protocol/pdu.js";
import { serverOfUserId } from "../protocol/ids.js";
import { LayeredMap } from "./layered-map.js";

export const MAX_DELTA = 500;
/**
 * Stream positions the room's state-event record keeps (persist-events.lua trims older ones): a
 * cache further behind than MAX_DELTA reads the state whole, so twice that always covers a delta.
 */
export const STATE_RECORD_WINDOW = 2 * MAX_DELTA;

export interface CachedState {
  stream: number;
  /** Event ID at `stream` in the timeline ("" when the room has no events yet). */
  lastEventId: string;
  state: LayeredMap<Pdu>;
  stateIds: LayeredMap<string>;
  /** Joined members per server in `state`. */
  joinedCounts: ReadonlyMap<string, number>;
  /** The keys of joinedCounts (handed out; rebuilt only when the set of servers changes). */
  joinedServers: ReadonlySet<string>;
}

/** A state event as the cache applies it: its (type, state_key) field, its ID and the event. */
export interface StateEntry {
  field: string;
  eventId: string;
  pdu: Pdu;
}

/** The server whose membership this event makes "join", if it is a join. */
export function joinedServerOf(ev: Pdu | undefined): string | undefined {
  if (!ev || ev.type !== "m.room.member" || typeof ev.state_key !== "string") return undefined;
  if ((ev.content as { membership?: unknown } | undefined)?.membership !== "join") return undefined;
  return serverOfUserId(ev.state_key);
}

/** A cache entry from a full read of the room's state. */
export function cachedStateOf(stream: number, lastEventId: string, entries: readonly StateEntry[]): CachedState {
  const counts = new Map<string, number>();
  for (const { pdu } of entries) {
    const server = joinedServerOf(pdu);
    if (server) counts.set(server, (counts.get(server) ?? 0) + 1);
  }
  return {
    stream,
    lastEventId,
    state: LayeredMap.from(entries.map((e) => [e.field, e.pdu] as const)),
    stateIds: LayeredMap.from(entries.map((e) => [e.field, e.eventId] as const)),
    joinedCounts: counts,
    joinedServers: new Set(counts.keys()),
  };
}

/**
 * `entry` advanced to `stream` by the accepted state events after it, in stream order. Unchanged
 * parts are shared with `entry`, which stays as it was.
 */
export function applyStateEntries(entry: CachedState, stream: number, lastEventId: string, changes: readonly StateEntry[]): CachedState {
  if (changes.length === 0) return { ...entry, stream, lastEventId };
  let counts: Map<string, number> | null = null;
  let serversChanged = false;
  // Within one delta a field can change twice: compare with the latest value seen.
  const seen = new Map<string, Pdu>();
  for (const { field, pdu } of changes) {
    const before = joinedServerOf(seen.get(field) ?? entry.state.get(field));
    seen.set(field, pdu);
    const after = joinedServerOf(pdu);
    if (before === after) continue;
    counts ??= new Map(entry.joinedCounts);
    if (before) {
      const n = (counts.get(before) ?? 0) - 1;
      if (n > 0) counts.set(before, n);
      else {
        counts.delete(before);
        serversChanged = true;
      }
    }
    if (after) {
      const n = counts.get(after) ?? 0;
      counts.set(after, n + 1);
      if (n === 0) serversChanged = true;
    }
  }
  return {
    stream,
    lastEventId,
    state: entry.state.with(changes.map((c) => [c.field, c.pdu] as const)),
    stateIds: entry.stateIds.with(changes.map((c) => [c.field, c.eventId] as const)),
    joinedCounts: counts ?? entry.joinedCounts,
    joinedServers: serversChanged && counts ? new Set(counts.keys()) : entry.joinedServers,
  };
}

/** A bounded map with least-recently-used eviction (Map iteration order is insertion order). */
export class Lru<K, V> {
  private readonly map = new Map<K, V>();
  constructor(private readonly max: number) {}

  get(key: K): V | undefined {
    const v = this.map.get(key);
    if (v !== undefined) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }

  set(key: K, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value as K);
  }

  /** Whether the key is present (without refreshing it). */
  has(key: K): boolean {
    return this.map.has(key);
  }

  delete(key: K): void {
    this.map.delete(key);
  }

  get size(): number {
    return this.map.size;
  }
}

