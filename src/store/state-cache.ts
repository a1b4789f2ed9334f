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

/**
 * The snapshot script. KEYS: 1 room, 2 extremities, 3 timeline, 4 event status, 5 state,
 * 6 redaction records, 7 the room's write lease (redis-keys.ts roomLock), 8 the room's
 * state-event record (redis-keys.ts stateEvents), 9.. (optional) the keys of events to probe
 * (whether they are stored).
 * ARGV: 1 cached stream ("" = no cache entry), 2 delta limit, 3 R: how many of the last ARGV are
 * event IDs whose redaction records to read, 4 lease owner ("" = take no lease), 5 lease
 * milliseconds, 6.. event IDs whose status to read (the probed events first, in the order of
 * KEYS[9..]), then the R event IDs whose redaction records to read.
 * With a lease owner: when another owner holds the room's write lease, returns {'leased', its
 * PTTL} and reads nothing; else the owner takes (or extends) the lease, which the persist script
 * gives back (persist-events.lua). The lease only keeps replicas from planning the same room at
 * once (a plan that loses the race is thrown away); the write's stream check stays what keeps
 * writes correct, with or without it.
 * Returns {room hash (flat), extremities, event ID at the cached stream (or ""), delta IDs,
 * delta statuses, full state (flat; only when there is no usable cache entry — none, too old,
 * or older than the room's `state_reset`, a current-state change the delta cannot express —
 * else false),
 * probe: {exists (0/1 per key of KEYS[9..]), statuses of ARGV[6..], redaction records of the R IDs},
 * redaction records of the delta IDs, the IDs of the delta's events with a state_key from the
 * state-event record, or false when the record does not cover every position of the delta (the
 * room's `state_events_from` after the cached position + 1, or its `state_events_to` behind its
 * stream)}: a request's auth events and the state events of the delta are served redacted
 * without another round trip.
 */
export const SNAPSHOT_LUA = `
if ARGV[4] ~= '' then
  local holder = redis.call('GET', KEYS[7])
  if holder and holder ~= ARGV[4] then return {'leased', redis.call('PTTL', KEYS[7])} end
  redis.call('SET', KEYS[7], ARGV[4], 'PX', ARGV[5])
end
local room = redis.call('HGETALL', KEYS[1])
local ext = redis.call('SMEMBERS', KEYS[2])
local probe = {{}, {}, {}}
for i = 9, #KEYS do probe[1][i - 8] = redis.call('EXISTS', KEYS[i]) end
local r = tonumber(ARGV[3])
if #ARGV - r >= 6 then probe[2] = redis.call('HMGET', KEYS[4], unpack(ARGV, 6, #ARGV - r)) end
if r > 0 then probe[3] = redis.call('HMGET', KEYS[6], unpack(ARGV, #ARGV - r + 1, #ARGV)) end
local reset = tonumber(redis.call('HGET', KEYS[1], 'state_reset') or '0')
if ARGV[1] ~= '' and reset <= tonumber(ARGV[1]) then
  local at = redis.call('ZRANGEBYSCORE', KEYS[3], ARGV[1], ARGV[1])
  local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[1], '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
  if #ids < tonumber(ARGV[2]) then
    local st = {}
    local red = {}
    local fields = false
    if #ids > 0 then
      st = redis.call('HMGET', KEYS[4], unpack(ids))
      red = redis.call('HMGET', KEYS[6], unpack(ids))
      local cover = redis.call('HMGET', KEYS[1], 'state_events_from', 'state_events_to', 'stream')
      if cover[1] and cover[2] == cover[3] and tonumber(cover[1]) <= tonumber(ARGV[1]) + 1 then
        fields = redis.call('ZRANGEBYSCORE', KEYS[8], '(' .. ARGV[1], '+inf')
      end
    end
    return {room, ext, at[1] or '', ids, st, false, probe, red, fields}
  end
end
local last = redis.call('ZRANGE', KEYS[3], -1, -1)
return {room, ext, last[1] or '', {}, {}, redis.call('HGETALL', KEYS[5]), probe, {}, false}
`;
