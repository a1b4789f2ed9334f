/**
 * An immutable string-keyed map whose new versions share most of their entries with the old one.
 *
 * Room state versions differ by an event or two while a room holds thousands of members, and
 * every version handed out must stay as it was (a request keeps the snapshot it authorised
 * against). Copying a `Map` per version cost ~400 µs at 2,600 members — the largest
 * Gatehouse-owned cost of a knock, growing with the room. A version here is a shared, frozen
 * `base` map plus a small `top` map of the entries set since; `with()` copies only `top`, and
 * folds it into a new base once it holds more than about √size entries, so a change costs
 * O(√n) amortised instead of O(n) and old versions are never touched.
 *
 * Versions branch (the states after many concurrent knocks are all built on one state): a version
 * whose layer must fold folds its parent's layer first, once, into a base all of the parent's
 * children share, so N siblings of a version cost one O(n) fold, not N.
 *
 * A change may also remove a key (`null`): a fork's resolution can drop a key its base group
 * has (a state reset), and with removals it still shares the base instead of copying it. The
 * layer then holds `null` for the removed key. Iteration order is Map's: keys in the order they
 * were first set, a replaced value keeping its key's place; except that a key removed and set
 * again keeps its old place (a Map would move it to the end). Room state has no order.
 */
export class LayeredMap<V extends NonNullable<unknown>> implements ReadonlyMap<string, V> {
  private constructor(
    /** Never mutated once a LayeredMap holds it. */
    private readonly base: ReadonlyMap<string, V>,
    /** Entries set since `base`, newest value per key (`null`: removed); never mutated either. */
    private readonly top: ReadonlyMap<string, V | null>,
    readonly size: number,
  ) {}

  /** This version with its layer folded into its base (made once, on demand; see `with`). */
  private folded: LayeredMap<V> | undefined;

  static empty<V extends NonNullable<unknown>>(): LayeredMap<V> {
    return new LayeredMap<V>(new Map(), new Map(), 0);
  }

  static from<V extends NonNullable<unknown>>(entries: Iterable<readonly [string, V]>): LayeredMap<V> {
    const base = new Map(entries);
    return new LayeredMap(base, new Map(), base.size);
  }

  get(key: string): V | undefined {
    const t = this.top.get(key);
    return t === undefined ? this.base.get(key) : (t ?? undefined);
  }

  has(key: string): boolean {
    const t = this.top.get(key);
    return t === undefined ? this.base.has(key) : t !== null;
  }

  /** A new version with `changes` applied (later entries win; `null` removes the key); this one is unchanged. */
  with(changes: Iterable<readonly [string, V | null]>): LayeredMap<V> {
    let top: Map<string, V | null> | null = null;
    let size = this.size;
    for (const [key, value] of changes) {
      const t = (top ?? this.top).get(key);
      const current = t === undefined ? this.base.get(key) : (t ?? undefined);
      if (current === (value ?? undefined)) continue;
      top ??= new Map(this.top);
      if (current === undefined) size++;
      else if (value === null) size--;
      // A key the base lacks needs no tombstone once removed.
      if (value === null && !this.base.has(key)) top.delete(key);
      else top.set(key, value);
    }
    if (!top) return this;
    // Fold once `top` outgrows √size: keeps both the per-change copy of `top` and the amortised
    // cost of rebuilding `base` at O(√n).
    if (top.size > 16 && top.size * top.size > size) {
      // This version's own layer first, shared by every version built on it: siblings do not
      // each copy the whole map. Then the changes alone, unless they outgrow √size themselves.
      if (this.top.size > 0) return this.flat().with(changes);
      return new LayeredMap(fold(this.base, top), new Map(), size);
    }
    return new LayeredMap(this.base, top, size);
  }

  /** The same entries with an empty layer (this version when its layer is empty), made once. */
  private flat(): LayeredMap<V> {
    if (this.top.size === 0) return this;
    if (!this.folded) {
      this.folded = new LayeredMap(fold(this.base, this.top), new Map(), this.size);
    }
    return this.folded;
  }

  /** Whether both versions read the same shared base (for tests and diagnostics). */
  sharesBaseWith(other: LayeredMap<V>): boolean {
    return this.base === other.base;
  }

  /**
   * The entries; a version with an empty layer hands out its base's own iterators (the answers
   * that read a big room's whole state, /state_ids and /state, iterate ~100,000 entries: a
   * generator per element cost ~3× a Map's iterator).
   */
  entries(): MapIterator<[string, V]> {
    return this.top.size === 0 ? this.base.entries() : this.layeredEntries();
  }

  private *layeredEntries(): MapIterator<[string, V]> {
    const { base, top } = this;
    for (const [key, value] of base) {
      const t = top.get(key);
      if (t === undefined) yield [key, value];
      else if (t !== null) yield [key, t];
    }
    for (const [key, value] of top) if (value !== null && !base.has(key)) yield [key, value];
  }

  keys(): MapIterator<string> {
    return this.top.size === 0 ? this.base.keys() : this.layeredKeys();
  }

  private *layeredKeys(): MapIterator<string> {
    const { base, top } = this;
    for (const key of base.keys()) if (top.get(key) !== null) yield key;
    for (const [key, value] of top) if (value !== null && !base.has(key)) yield key;
  }

  values(): MapIterator<V> {
    return this.top.size === 0 ? this.base.values() : this.layeredValues();
  }

  private *layeredValues(): MapIterator<V> {
    const { base, top } = this;
    for (const [key, value] of base) {
      const t = top.get(key);
      if (t === undefined) yield value;
      else if (t !== null) yield t;
    }
    for (const [key, value] of top) if (value !== null && !base.has(key)) yield value;
  }

  [Symbol.iterator](): MapIterator<[string, V]> {
    return this.entries();
  }

  /** The entries in iteration order, without a generator step per entry (the fast way through a big state). */
  forEach(fn: (value: V, key: string, map: ReadonlyMap<string, V>) => void, thisArg?: unknown): void {
    const { base, top } = this;
    if (top.size === 0) {
      base.forEach((value, key) => fn.call(thisArg, value, key, this));
      return;
    }
    base.forEach((value, key) => {
      const t = top.get(key);
      if (t === undefined) fn.call(thisArg, value, key, this);
      else if (t !== null) fn.call(thisArg, t, key, this);
    });
    top.forEach((value, key) => {
      if (value !== null && !base.has(key)) fn.call(thisArg, value, key, this);
    });
  }

  /** Number of entries outside the shared base (for tests and diagnostics). */
  get layered(): number {
    return this.top.size;
  }
}

/** `base` with `layer` applied (`null` removes), as a new Map. */
function fold<V>(base: ReadonlyMap<string, V>, layer: ReadonlyMap<string, V | null>): Map<string, V> {
  const out = new Map(base);
  for (const [key, value] of layer) {
    if (value === null) out.delete(key);
    else out.set(key, value);
  }
  return out;
}
