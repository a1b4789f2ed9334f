import { test } from "node:test";
import assert from "node:assert/strict";
import { ByteLru, CACHE_SHARES, CacheBudget, estimateBytes, stringBytes, type CacheName } from "../../src/store/byte-lru.js";

/** Sizes given by the test: the value is the entry's size in bytes. */
const bySize = (_k: string, v: number) => v;

type Op = ["set", string, number] | ["get", string] | ["delete", string];

const cases: { why: string; maxBytes: number; maxEntries?: number; ops: Op[]; keys: string[]; bytes: number }[] = [
  {
    why: "entries fit the budget: all stay",
    maxBytes: 100,
    ops: [["set", "a", 20], ["set", "b", 20], ["set", "c", 20]],
    keys: ["a", "b", "c"],
    bytes: 60,
  },
  {
    why: "over the budget: the least recently set go first, until the total fits",
    maxBytes: 100,
    ops: [["set", "a", 25], ["set", "b", 25], ["set", "c", 25], ["set", "d", 25], ["set", "e", 25]],
    keys: ["b", "c", "d", "e"],
    bytes: 100,
  },
  {
    why: "bytes, not entries: one big entry evicts several small ones",
    maxBytes: 100,
    ops: [["set", "a", 10], ["set", "b", 10], ["set", "c", 10], ["set", "d", 10], ["set", "e", 10], ["set", "f", 10], ["set", "big", 25], ["set", "big2", 25], ["set", "big3", 25]],
    keys: ["e", "f", "big", "big2", "big3"],
    bytes: 95,
  },
  {
    why: "a read makes an entry the most recently used: it outlives older reads",
    maxBytes: 80,
    ops: [["set", "a", 20], ["set", "b", 20], ["set", "c", 20], ["set", "d", 20], ["get", "a"], ["set", "e", 20]],
    keys: ["c", "d", "a", "e"],
    bytes: 80,
  },
  {
    why: "an entry over a quarter of the budget is not kept (one huge value must not flush the rest)",
    maxBytes: 100,
    ops: [["set", "a", 20], ["set", "huge", 26]],
    keys: ["a"],
    bytes: 20,
  },
  {
    why: "setting a key again replaces its size instead of adding to it",
    maxBytes: 100,
    ops: [["set", "a", 20], ["set", "a", 5], ["set", "b", 20]],
    keys: ["a", "b"],
    bytes: 25,
  },
  {
    why: "a key set again too big for the cache is dropped, its old size with it",
    maxBytes: 100,
    ops: [["set", "a", 20], ["set", "a", 30]],
    keys: [],
    bytes: 0,
  },
  {
    why: "delete gives its bytes back",
    maxBytes: 100,
    ops: [["set", "a", 20], ["set", "b", 20], ["delete", "a"], ["delete", "missing"]],
    keys: ["b"],
    bytes: 20,
  },
  {
    why: "with maxEntries, the least recently used also goes when the count is over it (bytes to spare)",
    maxBytes: 1000,
    maxEntries: 2,
    ops: [["set", "a", 5], ["set", "b", 5], ["get", "a"], ["set", "c", 5]],
    keys: ["a", "c"],
    bytes: 10,
  },
];

for (const c of cases) {
  test(`ByteLru: ${c.why}`, () => {
    const lru = new ByteLru<string, number>(c.maxBytes, bySize, c.maxEntries);
    for (const op of c.ops) {
      if (op[0] === "set") lru.set(op[1], op[2]);
      else if (op[0] === "get") lru.get(op[1]);
      else lru.delete(op[1]);
      assert.ok(lru.bytes <= c.maxBytes, `after ${JSON.stringify(op)}: ${lru.bytes} bytes held, budget ${c.maxBytes}`);
    }
    const held = ["a", "b", "c", "d", "e", "f", "big", "big2", "big3", "huge"].filter((k) => lru.get(k) !== undefined);
    assert.deepEqual(held.sort(), [...c.keys].sort());
    assert.equal(lru.bytes, c.bytes);
    assert.equal(lru.size, c.keys.length);
  });
}

test("ByteLru: the limit holds under many inserts of mixed sizes (the byte count stays the sum of what is held)", () => {
  const lru = new ByteLru<string, number>(10_000, bySize);
  let x = 7;
  for (let i = 0; i < 20_000; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    const key = `k${x % 3000}`;
    if (i % 7 === 0) lru.get(`k${(x >> 3) % 3000}`);
    lru.set(key, 1 + (x % 2600));
    assert.ok(lru.bytes <= 10_000);
  }
  let sum = 0;
  for (let i = 0; i < 3000; i++) sum += lru.get(`k${i}`) ?? 0;
  assert.equal(lru.bytes, sum);
});

const estimates: { why: string; value: unknown; bytes: number }[] = [
  { why: "a string: 16-byte header plus its characters, rounded up to 8", value: "x".repeat(10), bytes: 32 },
  { why: "numbers, booleans and null live in their slot", value: [1, true, null], bytes: 16 + 3 * 8 },
  { why: "an object: header plus a slot per property plus the values", value: { a: "xy", b: 5 }, bytes: 24 + 8 + stringBytes("xy") + 8 },
  { why: "nested values are counted", value: { s: { k: ["abc"] } }, bytes: 24 + 8 + 24 + 8 + 16 + 8 + stringBytes("abc") },
];
for (const c of estimates) {
  test(`estimateBytes: ${c.why}`, () => assert.equal(estimateBytes(c.value), c.bytes));
}

test("CacheBudget: the shares sum to the whole, each cache gets its share once, and stats report every cache made", () => {
  const sum = Object.values(CACHE_SHARES).reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(sum - 1) < 1e-9, `shares sum to ${sum}`);
  const budget = new CacheBudget(10_000_000);
  for (const name of Object.keys(CACHE_SHARES) as CacheName[]) {
    const c = budget.cache(name, bySize);
    assert.equal(c.maxBytes, Math.floor(10_000_000 * CACHE_SHARES[name]), name);
    assert.equal(budget.cache(name, bySize), c, `${name}: the same cache the second time`);
  }
  budget.cache<string, number>("events", bySize).set("e", 100);
  const stats = budget.stats();
  assert.equal(stats.length, Object.keys(CACHE_SHARES).length);
  assert.deepEqual(stats.find((s) => s.cache === "events"), { cache: "events", bytes: 100, entries: 1, maxBytes: 2_400_000 });
  assert.ok(stats.reduce((a, s) => a + s.maxBytes, 0) <= 10_000_000, "together the caches stay within the budget");
});

test("CacheBudget.own: a cache keeping its own account gets its share once and is reported with the others", () => {
  const budget = new CacheBudget(10_000_000);
  let made = 0;
  const mk = (maxBytes: number) => ({ maxBytes, bytes: 1234, size: 5, n: ++made });
  const c = budget.own("auth_chains", mk);
  assert.equal(c.maxBytes, Math.floor(10_000_000 * CACHE_SHARES.auth_chains));
  assert.equal(budget.own("auth_chains", mk), c, "the same cache the second time");
  assert.equal(made, 1);
  assert.deepEqual(budget.stats(), [{ cache: "auth_chains", bytes: 1234, entries: 5, maxBytes: c.maxBytes }]);
});
