/**
 * The auth chains of recent fork points' states (RoomStateService.chainOf), bounded by bytes from
 * the process's cache budget (GATEHOUSE_CACHE_MAX_BYTES, share `auth_chains`).
 *
 * Why its own cache: an entry is the whole auth chain of a room's state, which in a room with
 * membership churn grows with every membership change (a member event names the previous one as
 * an auth event). Bounded by count (16), a soak's heap grew by ~105,000 event-ID strings in 15
 * such sets (bench/README.md, "Memory, 2026-12-05 (later)"). Entries of one room overlap almost
 * entirely, so they are stored as layers (LayeredIdSet): a chain that only adds to a cached one
 * is that one plus a layer, and a chain walked whole is stored as its difference from the room's
 * newest cached chain when that difference is small. A layer held by several entries is counted
 * once (reference counts), so the byte total is what the cache keeps alive, not the sum of the
 * entries' sizes.
 */
import type { IdSet } from "../protocol/state-res/index.js";
import { keyBytes, MAP_ENTRY, stringBytes, type SizedCache } from "../store/byte-lru.js";

/*
 * Estimated V8 heap bytes of a Set entry: its slot and chain link in the OrderedHashSet table plus
 * half a bucket, with tables grown by doubling (~24 B measured: 164 kB tables for ~7,000 IDs in the
 * lead's heap snapshots of 2026-12-05).
 */
const SET_ENTRY = 24;
const SET_HEADER = 64;
const OBJECT_HEADER = 24;
const SLOT = 8;

/** Flattened into one set past this many layers, so a lookup stays cheap. */
const MAX_LAYERS = 16;

/**
 * IDs added to the layers below, and IDs taken out of them. `bytes`: what the layer alone keeps
 * alive: its tables, and the ID strings of `add` (an upper bound: a string also held by a layer
 * below, or by the event cache, is counted here too). `del` holds IDs of the layers below, so only
 * its table is counted.
 */
export interface IdLayer {
  readonly add: ReadonlySet<string>;
  readonly del: ReadonlySet<string> | undefined;
  readonly bytes: number;
}

function layer(add: ReadonlySet<string>, del?: ReadonlySet<string>): IdLayer {
  let bytes = OBJECT_HEADER + 3 * SLOT + SET_HEADER + add.size * SET_ENTRY;
  for (const id of add) bytes += stringBytes(id);
  if (del !== undefined && del.size > 0) bytes += SET_HEADER + del.size * SET_ENTRY;
  return { add, del: del !== undefined && del.size > 0 ? del : undefined, bytes };
}

/** A set of event IDs as a few layers: extending it, or changing a few IDs, shares the rest. */
export class LayeredIdSet implements IdSet {
  private constructor(
    readonly layers: readonly IdLayer[],
    /** How many IDs the set holds. */
    readonly size: number,
  ) {}

  static of(ids: ReadonlySet<string>): LayeredIdSet {
    return new LayeredIdSet([layer(ids)], ids.size);
  }

  has(id: string): boolean {
    // Newest layer first: its additions and removals override the layers below.
    for (let i = this.layers.length - 1; i >= 0; i--) {
      const l = this.layers[i]!;
      if (l.add.has(id)) return true;
      if (l.del?.has(id)) return false;
    }
    return false;
  }

  *[Symbol.iterator](): IterableIterator<string> {
    if (this.layers.length === 1) {
      yield* this.layers[0]!.add;
      return;
    }
    yield* this.flat();
  }

  private flat(): Set<string> {
    const all = new Set<string>();
    for (const l of this.layers) {
      if (l.del) for (const id of l.del) all.delete(id);
      for (const id of l.add) all.add(id);
    }
    return all;
  }

  /** This set with `add` added and `del` taken out (`add` disjoint from this set, `del` part of it). */
  private with(add: ReadonlySet<string>, del: ReadonlySet<string> | undefined, size: number): LayeredIdSet {
    if (this.layers.length < MAX_LAYERS) return new LayeredIdSet([...this.layers, layer(add, del)], size);
    const all = this.flat();
    if (del) for (const id of del) all.delete(id);
    for (const id of add) all.add(id);
    return LayeredIdSet.of(all);
  }

  /** This set plus `ids` (IDs it already holds are not added again). */
  plus(ids: ReadonlySet<string>): LayeredIdSet {
    let fresh: Set<string> | undefined;
    for (const id of ids) if (!this.has(id)) (fresh ??= new Set()).add(id);
    return fresh === undefined ? this : this.with(fresh, undefined, this.size + fresh.size);
  }

  /**
   * Exactly `ids`, as this set plus the IDs it lacks minus those `ids` lacks when that
   * difference is under a quarter of `ids` (the layers below are then shared with this set),
   * else as a set of its own.
   */
  rebase(ids: ReadonlySet<string>): LayeredIdSet {
    const limit = ids.size / 4;
    const add = new Set<string>();
    for (const id of ids) {
      if (!this.has(id)) {
        add.add(id);
        if (add.size >= limit) return LayeredIdSet.of(ids);
      }
    }
    const removed = this.size - (ids.size - add.size);
    if (add.size + removed >= limit) return LayeredIdSet.of(ids);
    let del: Set<string> | undefined;
    if (removed > 0) {
      del = new Set();
      for (const id of this) if (!ids.has(id)) del.add(id);
    }
    if (add.size === 0 && del === undefined) return this;
    return this.with(add, del, ids.size);
  }
}

/**
 * Least-recently-used map of LayeredIdSets by `${roomId} ${group}`, bounded by the bytes of the
 * distinct layers it holds plus each entry's own overhead. A layer shared by several entries is
 * counted once and stays counted until the last entry holding it goes.
 */
export class AuthChainCache implements SizedCache {
  private readonly map = new Map<string, { value: LayeredIdSet; own: number }>();
  private readonly refs = new Map<IdLayer, number>();
  private total = 0;

  /** @param maxBytes the budget; an entry whose layers alone are over it is not kept. */
  constructor(readonly maxBytes: number) {}

  get(key: string): LayeredIdSet | undefined {
    const e = this.map.get(key);
    if (e === undefined) return undefined;
    this.map.delete(key);
    this.map.set(key, e);
    return e.value;
  }

  /**
   * The most recently used chain of `roomId` (its recency unchanged): the set a chain of that
   * room walked whole is stored as a difference from (LayeredIdSet.rebase).
   */
  newestOf(roomId: string): LayeredIdSet | undefined {
    const prefix = `${roomId} `;
    let found: LayeredIdSet | undefined;
    for (const [k, e] of this.map) if (k.startsWith(prefix)) found = e.value;
    return found;
  }

  set(key: string, value: LayeredIdSet): void {
    this.delete(key);
    const own = MAP_ENTRY + keyBytes(key) + OBJECT_HEADER + 2 * SLOT + 16 + value.layers.length * SLOT;
    let whole = own;
    for (const l of value.layers) whole += l.bytes;
    if (whole > this.maxBytes) return;
    this.map.set(key, { value, own });
    this.total += own;
    for (const l of value.layers) {
      const n = this.refs.get(l) ?? 0;
      this.refs.set(l, n + 1);
      if (n === 0) this.total += l.bytes;
    }
    if (this.total > this.maxBytes) {
      for (const k of this.map.keys()) {
        if (k === key) break; // the newest; it fits alone
        this.delete(k);
        if (this.total <= this.maxBytes) break;
      }
    }
  }

  delete(key: string): void {
    const e = this.map.get(key);
    if (e === undefined) return;
    this.map.delete(key);
    this.total -= e.own;
    for (const l of e.value.layers) {
      const n = this.refs.get(l)!;
      if (n === 1) {
        this.refs.delete(l);
        this.total -= l.bytes;
      } else this.refs.set(l, n - 1);
    }
  }

  /** Entries held. */
  get size(): number {
    return this.map.size;
  }

  /** Estimated bytes held: the distinct layers once, plus each entry's overhead (never above maxBytes). */
  get bytes(): number {
    return this.total;
  }

  /** Distinct layers held (for tests and debugging). */
  get layerCount(): number {
    return this.refs.size;
  }
}
