/**
 * Caches bounded by (estimated) bytes instead of entries, and the one budget they share
 * (GATEHOUSE_CACHE_MAX_BYTES, README.md "Settings").
 *
 * Why bytes: the caches that remember a room's history (parsed events, the events' state groups,
 * rejection and auth-verdict memos, the sender's canonical PDUs) were bounded by entry counts
 * (5,000 / 10,000 / 20,000 …) whose memory depends on the events' size. A soak showed V8's heap
 * growing for an hour while they filled, with no known ceiling (bench/README.md, "Memory"). With a
 * byte budget the ceiling is a setting, and the caches' bytes and entries are metrics
 * (gatehouse_cache_bytes / gatehouse_cache_entries), so an operator sees them level off.
 *
 * Sizes are estimates of what an entry keeps alive on V8's heap (or, for the canonical PDUs,
 * outside it): see estimateBytes. They are meant to be right within a factor of ~1.5, not exact;
 * bench/README.md ("Caches bounded by bytes") compares them with measured heap.
 */

/** What the budget reports of each of its caches (metrics). */
export interface SizedCache {
  /** Estimated bytes held (never above maxBytes). */
  readonly bytes: number;
  /** Entries held. */
  readonly size: number;
  readonly maxBytes: number;
}

/** Least-recently-used map bounded by the sum of its entries' estimated sizes. */
export class ByteLru<K, V> implements SizedCache {
  private readonly map = new Map<K, { value: V; size: number }>();
  private total = 0;

  /**
   * @param maxBytes the budget; an entry bigger than a quarter of it is not kept (one huge value
   *   must not flush everything else), but is still returned by the caller's own path.
   * @param sizeOf the estimated bytes one entry keeps alive (key included).
   * @param maxEntries also at most this many entries (for values that keep alive more than
   *   `sizeOf` counts, e.g. a shared base another cache may drop).
   */
  constructor(
    readonly maxBytes: number,
    private readonly sizeOf: (key: K, value: V) => number,
    private readonly maxEntries = Infinity,
  ) {}

  get(key: K): V | undefined {
    const e = this.map.get(key);
    if (e === undefined) return undefined;
    // Most recently used last (Map iteration order is insertion order).
    this.map.delete(key);
    this.map.set(key, e);
    return e.value;
  }

  /** Whether `key` is held (its recency unchanged). */
  has(key: K): boolean {
    return this.map.has(key);
  }

  /** Stores `value` (unless it alone is over a quarter of the budget), then evicts the least recently used until the total fits. */
  set(key: K, value: V): void {
    const old = this.map.get(key);
    if (old !== undefined) {
      this.map.delete(key);
      this.total -= old.size;
    }
    const size = this.sizeOf(key, value);
    if (size > this.maxBytes / 4) return;
    this.map.set(key, { value, size });
    this.total += size;
    if (this.total > this.maxBytes || this.map.size > this.maxEntries) {
      for (const [k, e] of this.map) {
        this.map.delete(k);
        this.total -= e.size;
        if (this.total <= this.maxBytes && this.map.size <= this.maxEntries) break;
      }
    }
  }

  delete(key: K): void {
    const e = this.map.get(key);
    if (e === undefined) return;
    this.map.delete(key);
    this.total -= e.size;
  }

  /** Entries held. */
  get size(): number {
    return this.map.size;
  }

  /** Estimated bytes held (never above maxBytes). */
  get bytes(): number {
    return this.total;
  }
}

/*
 * Estimated V8 heap bytes (64-bit, pointer compression off, as Node ships). A string: a 16-byte
 * header plus one byte per character (the event JSON Gatehouse handles is almost all one-byte),
 * rounded up to 8; a number or boolean: one 8-byte slot (a heap number would be 16, small
 * integers are in the slot); an object: a 24-byte header plus, per property, its slot and the
 * value (property names are interned once per process and not counted); an array: 16 bytes plus
 * a slot per element and the elements. A Map entry costs ~3 slots plus its bucket: MAP_ENTRY.
 */
const STRING_HEADER = 16;
const OBJECT_HEADER = 24;
const SLOT = 8;
/** A Map entry (key, value, chain link and bucket slot) plus the { value, size } record ByteLru keeps. */
export const MAP_ENTRY = 32 + OBJECT_HEADER + 2 * SLOT;

export function stringBytes(s: string): number {
  return (STRING_HEADER + s.length + 7) & ~7;
}

/**
 * A cache key built as `${roomId} ${eventId}` or the like: the flat string plus the parts it was
 * made of, when nothing else keeps them (measured: ~380 B per memo entry with fresh 100-character
 * keys, against MAP_ENTRY + keyBytes = 72 + 264).
 */
export function keyBytes(key: string): number {
  return 2 * stringBytes(key) + STRING_HEADER * 2;
}

/** Estimated heap bytes of a JSON-shaped value (objects, arrays, strings, numbers, booleans, null). */
export function estimateBytes(value: unknown): number {
  switch (typeof value) {
    case "string":
      return stringBytes(value);
    case "object": {
      if (value === null) return 0;
      if (Array.isArray(value)) {
        let n = 16 + value.length * SLOT;
        for (const v of value) n += estimateBytes(v);
        return n;
      }
      let n = OBJECT_HEADER;
      for (const k in value) n += SLOT + estimateBytes((value as Record<string, unknown>)[k]);
      return n;
    }
    default:
      return 0; // numbers, booleans, undefined: in the slot already counted
  }
}

/** The caches that share GATEHOUSE_CACHE_MAX_BYTES, and each one's share of it (sum 1). */
export const CACHE_SHARES = {
  /** The sender's canonical JSON of queued PDUs (Buffers, outside V8's heap). */
  canonical_pdus: 0.26,
  /** Parsed events by room and event ID (RoomStore). */
  events: 0.24,
  /** Auth chains (event IDs) of state groups' states that /state_ids and /state answered (RoomStore). */
  state_chains: 0.02,
  /** /state_ids's `pdu_ids` of state groups, serialised (Buffers, outside V8's heap; RoomHistory). */
  state_ids: 0.04,
  /** State groups before/after stored events (RoomStore). */
  event_state_groups: 0.1,
  /** Parent, depth and delta of state groups (RoomStore). */
  state_group_meta: 0.06,
  /** Whether stored events were rejected (RoomStateService). */
  rejected: 0.06,
  /** Auth verdicts of state resolution's iterative auth checks (RoomStateService). */
  auth_verdicts: 0.08,
  /** Auth chains of recent fork points' states, layers shared between entries counted once (RoomStateService; src/rooms/auth-chain-cache.ts). */
  auth_chains: 0.1,
  /** State resolutions' answers (RoomStateService; a fork's answer counted as its layer over its base group's state, which the group cache holds). */
  resolutions: 0.04,
} as const;

export type CacheName = keyof typeof CACHE_SHARES;

export interface CacheStats {
  cache: CacheName;
  bytes: number;
  entries: number;
  maxBytes: number;
}

/** Default GATEHOUSE_CACHE_MAX_BYTES: 64 MiB (the Kubernetes deployment caps V8's heap at 256 MB). */
export const DEFAULT_CACHE_MAX_BYTES = 64 * 1_048_576;

/**
 * One process's cache budget: hands out each named cache once, with its share of the total, and
 * reports their sizes (metrics). Share the one instance between the store, the room service and
 * the sender of a process (buildCore does).
 */
export class CacheBudget {
  private readonly caches = new Map<CacheName, SizedCache>();

  constructor(readonly maxBytes: number = DEFAULT_CACHE_MAX_BYTES) {}

  /** The cache `name` (created on first use with its share of the budget; the same one after). */
  cache<K, V>(name: CacheName, sizeOf: (key: K, value: V) => number): ByteLru<K, V> {
    let c = this.caches.get(name) as ByteLru<K, V> | undefined;
    if (c === undefined) {
      c = new ByteLru<K, V>(Math.floor(this.maxBytes * CACHE_SHARES[name]), sizeOf);
      this.caches.set(name, c as ByteLru<unknown, unknown>);
    }
    return c;
  }

  /**
   * The cache `name` that keeps its own account of its bytes (e.g. parts shared between entries,
   * counted once): `make` builds it with its share of the budget, on first use; the same one after.
   */
  own<C extends SizedCache>(name: CacheName, make: (maxBytes: number) => C): C {
    let c = this.caches.get(name) as C | undefined;
    if (c === undefined) {
      c = make(Math.floor(this.maxBytes * CACHE_SHARES[name]));
      this.caches.set(name, c);
    }
    return c;
  }

  stats(): CacheStats[] {
    return [...this.caches].map(([cache, c]) => ({ cache, bytes: c.bytes, entries: c.size, maxBytes: c.maxBytes }));
  }
}
