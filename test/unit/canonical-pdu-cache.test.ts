import { test } from "node:test";
import assert from "node:assert/strict";
import { CanonicalPduCache } from "../../src/sender/canonical-pdu-cache.js";

test("canonical PDU cache: entries own their memory (no slices of Node's shared pool)", () => {
  const cache = new CanonicalPduCache(1 << 20);
  const stored = cache.set("!r:x $e", '{"a":"é"}');
  assert.equal(stored.toString("utf8"), '{"a":"é"}');
  assert.equal(stored.buffer.byteLength, stored.length, "a pool slice would keep an 8 KiB slab alive");
  assert.equal(cache.get("!r:x $e"), stored);
});

test("canonical PDU cache: bounded by bytes, least recently used first out", () => {
  const cache = new CanonicalPduCache(1000);
  for (let i = 0; i < 10; i++) cache.set(`r $${i}`, "x".repeat(200));
  assert.equal(cache.size, 5);
  assert.equal(cache.get("r $4"), undefined);
  assert.ok(cache.get("r $5"));
  cache.set("r $10", "y".repeat(200));
  assert.ok(cache.get("r $5"), "recently read entries stay");
  assert.equal(cache.get("r $6"), undefined);
  // Larger than a quarter of the budget: returned, not cached.
  assert.equal(cache.set("r $big", "z".repeat(300)).length, 300);
  assert.equal(cache.get("r $big"), undefined);
});
