import { test } from "node:test";
import assert from "node:assert/strict";
import { CanonicalPduCache, canonicalEntryBytes } from "../../src/sender/canonical-pdu-cache.js";

test("canonical PDU cache: entries own their memory (no slices of Node's shared pool)", () => {
  const cache = new CanonicalPduCache(1 << 20);
  const stored = cache.set("!r:x $e", '{"a":"é"}');
  assert.equal(stored.toString("utf8"), '{"a":"é"}');
  assert.equal(stored.buffer.byteLength, stored.length, "a pool slice would keep an 8 KiB slab alive");
  assert.equal(cache.get("!r:x $e"), stored);
});

test("canonical PDU cache: bounded by bytes, least recently used first out", () => {
  // Five entries of 200 bytes fit (each also counts its Buffer object, map entry and key).
  const cache = new CanonicalPduCache(5 * canonicalEntryBytes("r $0", Buffer.alloc(200)));
  for (let i = 0; i < 10; i++) cache.set(`r $${i}`, "x".repeat(200));
  assert.equal(cache.size, 5);
  assert.equal(cache.get("r $4"), undefined);
  assert.ok(cache.get("r $5"));
  cache.set("r $10", "y".repeat(200));
  assert.ok(cache.get("r $5"), "recently read entries stay");
  assert.equal(cache.get("r $6"), undefined);
  // Larger than a quarter of the budget: returned, not cached.
  assert.equal(cache.set("r $big", "z".repeat(700)).length, 700);
  assert.equal(cache.get("r $big"), undefined);
});
