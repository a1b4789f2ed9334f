import { test } from "node:test";
import assert from "node:assert/strict";
import { AuthChainCache, LayeredIdSet } from "../../src/rooms/auth-chain-cache.js";

/** n event-ID-like strings, `$<prefix><i>` padded to the 44 characters of a v4 event ID. */
function ids(prefix: string, from: number, to: number): string[] {
  const out: string[] = [];
  for (let i = from; i < to; i++) out.push(`$${prefix}${i}`.padEnd(44, "x"));
  return out;
}
const set = (...parts: string[][]) => new Set(parts.flat());

/** The IDs a LayeredIdSet holds, checked through has() against a universe of candidates, and its size. */
function contents(s: LayeredIdSet, universe: readonly string[]): string[] {
  return universe.filter((id) => s.has(id)).sort();
}

const A = ids("a", 0, 1000);
const B = ids("b", 0, 50);
const C = ids("c", 0, 600);
const UNIVERSE = [...A, ...B, ...C, ...ids("z", 0, 10)];

const setCases: { why: string; build: () => LayeredIdSet; want: string[]; layers: number }[] = [
  { why: "a whole set is one layer", build: () => LayeredIdSet.of(set(A)), want: A, layers: 1 },
  { why: "plus adds a layer of the IDs it lacks", build: () => LayeredIdSet.of(set(A)).plus(set(B, A.slice(0, 5))), want: [...A, ...B], layers: 2 },
  { why: "plus of IDs it holds already is the same set", build: () => LayeredIdSet.of(set(A)).plus(set(A.slice(0, 5))), want: A, layers: 1 },
  {
    why: "rebase on a near set: a layer adding what it lacks and taking out what the new set lacks",
    build: () => LayeredIdSet.of(set(A)).rebase(set(A.slice(10), B)),
    want: [...A.slice(10), ...B],
    layers: 2,
  },
  {
    why: "rebase to a set far from it (difference over a quarter) is a set of its own, sharing nothing",
    build: () => LayeredIdSet.of(set(A)).rebase(set(A.slice(0, 400), C)),
    want: [...A.slice(0, 400), ...C],
    layers: 1,
  },
  {
    why: "an ID taken out in one layer and added again in a later one is held",
    build: () => LayeredIdSet.of(set(A)).rebase(set(A.slice(1))).rebase(set(A)),
    want: A,
    layers: 3,
  },
  {
    why: "past 16 layers the set is flattened into one, with the same contents",
    build: () => {
      let s = LayeredIdSet.of(set(A));
      for (let i = 0; i < 20; i++) s = s.plus(set([B[i]!]));
      return s.rebase(set(A.slice(3), B.slice(0, 20)));
    },
    want: [...A.slice(3), ...B.slice(0, 20)],
    layers: 1 + 15 + 1 - 16 + 5, // 16 layers, flattened at the 17th, then 4 more plus the rebase
  },
];

for (const c of setCases) {
  test(`LayeredIdSet: ${c.why}`, () => {
    const s = c.build();
    assert.deepEqual(contents(s, UNIVERSE), [...c.want].sort());
    assert.equal(s.size, c.want.length, "size");
    assert.deepEqual([...s].sort(), [...c.want].sort(), "iteration");
    assert.equal(s.layers.length, c.layers, "layers");
  });
}

/** Ops on a cache of a given budget; after each, bytes ≤ budget and bytes = distinct layers + entries' overhead. */
type Op = ["set", string, () => LayeredIdSet] | ["get", string] | ["delete", string];

const base = LayeredIdSet.of(set(A));
const child = base.plus(set(B));
const sibling = base.rebase(set(A.slice(1), C.slice(0, 10)));
const other = LayeredIdSet.of(set(C));
const oneLayer = (s: LayeredIdSet) => s.layers.reduce((n, l) => n + l.bytes, 0);

const cacheCases: { why: string; maxBytes: number; ops: Op[]; keys: string[]; layers: number }[] = [
  {
    why: "a parent and two children built on it: the parent's layer is counted once, not three times",
    maxBytes: 10_000_000,
    ops: [["set", "r 1", () => base], ["set", "r 2", () => child], ["set", "r 3", () => sibling]],
    keys: ["r 1", "r 2", "r 3"],
    layers: 3,
  },
  {
    why: "the parent evicted: its layer stays counted while a child holds it",
    maxBytes: 10_000_000,
    ops: [["set", "r 1", () => base], ["set", "r 2", () => child], ["delete", "r 1"]],
    keys: ["r 2"],
    layers: 2,
  },
  {
    why: "the last holder of a layer gone: its bytes go back",
    maxBytes: 10_000_000,
    ops: [["set", "r 1", () => base], ["set", "r 2", () => child], ["delete", "r 2"], ["delete", "r 1"], ["delete", "missing"]],
    keys: [],
    layers: 0,
  },
  {
    why: "over the budget: least recently used out until it fits; the shared base is counted once, so two chains of one room fit where two unrelated ones do not",
    maxBytes: oneLayer(base) + oneLayer(other) - 1,
    ops: [["set", "r 1", () => base], ["set", "r 2", () => child], ["set", "s 1", () => other]],
    keys: ["s 1"],
    layers: 1,
  },
  {
    why: "a read makes an entry the most recently used: it outlives older ones",
    maxBytes: oneLayer(child) + oneLayer(other) + 1000,
    ops: [["set", "r 2", () => child], ["set", "s 1", () => other], ["get", "r 2"], ["set", "t 1", () => LayeredIdSet.of(set(ids("t", 0, 30)))]],
    keys: ["r 2", "t 1"],
    layers: 3,
  },
  {
    why: "an entry bigger than the whole budget is not kept, and evicts nothing",
    maxBytes: oneLayer(other) + 1000,
    ops: [["set", "s 1", () => other], ["set", "r 1", () => base]],
    keys: ["s 1"],
    layers: 1,
  },
  {
    why: "setting a key again releases the old value's layers",
    maxBytes: 10_000_000,
    ops: [["set", "r 1", () => base], ["set", "r 1", () => other]],
    keys: ["r 1"],
    layers: 1,
  },
];

for (const c of cacheCases) {
  test(`AuthChainCache: ${c.why}`, () => {
    const cache = new AuthChainCache(c.maxBytes);
    const held = new Map<string, LayeredIdSet>();
    for (const op of c.ops) {
      if (op[0] === "set") {
        const v = op[2]();
        cache.set(op[1], v);
        held.set(op[1], v);
      } else if (op[0] === "get") cache.get(op[1]);
      else cache.delete(op[1]);
      assert.ok(cache.bytes <= c.maxBytes, `after ${op[0]} ${op[1]}: ${cache.bytes} bytes held, budget ${c.maxBytes}`);
    }
    const keys = [...held.keys()].filter((k) => cache.get(k) !== undefined);
    assert.deepEqual(keys.sort(), [...c.keys].sort());
    assert.equal(cache.size, c.keys.length);
    assert.equal(cache.layerCount, c.layers, "distinct layers held");
    // Honest total: each distinct layer once, plus per-entry overhead (under 400 B an entry).
    const distinct = new Set(c.keys.flatMap((k) => cache.get(k)!.layers));
    const layerBytes = [...distinct].reduce((n, l) => n + l.bytes, 0);
    assert.ok(cache.bytes >= layerBytes && cache.bytes <= layerBytes + 400 * c.keys.length, `${cache.bytes} bytes for ${layerBytes} bytes of distinct layers`);
  });
}

test("AuthChainCache.newestOf: the room's most recently used chain, not another room's", () => {
  const cache = new AuthChainCache(10_000_000);
  cache.set("!r:x 1", base);
  cache.set("!r:x 2", child);
  cache.set("!r:xy 1", other);
  assert.equal(cache.newestOf("!r:x"), child);
  cache.get("!r:x 1");
  assert.equal(cache.newestOf("!r:x"), base);
  assert.equal(cache.newestOf("!r:xy"), other);
  assert.equal(cache.newestOf("!none:x"), undefined);
});

test("AuthChainCache: many chains of one growing room (membership churn) stay within the budget, and cost about one chain plus their differences", () => {
  // A room whose chain grows by 2 IDs per version, each version walked whole and stored rebased on the newest one.
  const cache = new AuthChainCache(2_000_000);
  let all = ids("m", 0, 5000);
  let onlyWhole = 0;
  for (let v = 0; v < 200; v++) {
    all = [...all, ...ids(`v${v}-`, 0, 2)];
    const whole = new Set(all);
    const near = cache.newestOf("!r:x");
    const chain = near ? near.rebase(whole) : LayeredIdSet.of(whole);
    assert.equal(chain.size, whole.size);
    cache.set(`!r:x ${v}`, chain);
    onlyWhole += LayeredIdSet.of(whole).layers[0]!.bytes;
    assert.ok(cache.bytes <= 2_000_000);
  }
  // Flattened every 16 layers: ~one whole chain per 16 versions is held, not one per version.
  assert.ok(cache.size >= 16, `${cache.size} chains held`);
  assert.ok(cache.bytes < onlyWhole / 20, `${cache.bytes} bytes against ${onlyWhole} for whole copies`);
});
