// Hot-path cost of the caches bounded by bytes (src/store/byte-lru.ts) against the count-bounded
// Lru they replaced (src/store/state-cache.ts), and of the sender's canonical PDU cache against
// another checkout's (CACHE_BENCH_ROOT=/path/to/checkout, default: this one). Printed, never
// asserted: `node --import tsx bench/cache-lru.ts`.
import { randomBytes } from "node:crypto";
import { pathToFileURL } from "node:url";
import { Lru } from "../src/store/state-cache.js";
import { ByteLru, estimateBytes, keyBytes, MAP_ENTRY } from "../src/store/byte-lru.js";

const N = Number(process.env.CACHE_BENCH_N ?? 200_000);
const ROUNDS = 5;
const b64 = (n: number) => randomBytes(n).toString("base64").replace(/=+$/, "");
const room = `!${b64(18)}:gatehouse.example`;
const pdus = Array.from({ length: 5000 }, (_, i) => ({
  auth_events: [`$${b64(32)}`, `$${b64(32)}`, `$${b64(32)}`],
  content: { body: `message ${i} ${b64(24)}`, msgtype: "m.text" },
  depth: i,
  hashes: { sha256: b64(32) },
  origin_server_ts: 1_700_000_000_000 + i,
  prev_events: [`$${b64(32)}`],
  room_id: room,
  sender: `@u${i}:remote${i % 7}.example`,
  signatures: { [`remote${i % 7}.example`]: { "ed25519:a": b64(64) } },
  type: "m.room.message",
}));
const ids = pdus.map(() => `$${b64(32)}`);
// Keys built once (the store builds `${roomId} ${eventId}` per call in both versions alike).
const keys = ids.map((id) => `${room} ${id}`);
const memoKeys = Array.from({ length: 15_000 }, (_, i) => `${room} ${ids[i % 5000]}${Math.floor(i / 5000)}`);
const texts = pdus.map((p) => JSON.stringify(p));

function time(label: string, fn: () => void): void {
  const per: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    fn();
    per.push(Number(process.hrtime.bigint() - t0) / N);
  }
  per.sort((a, b) => a - b);
  console.log(`${label.padEnd(58)} median ${per[ROUNDS >> 1]!.toFixed(0)} ns/op (min ${per[0]!.toFixed(0)})`);
}

// A warm cache of 3,000 events, then N mixed operations: a set of a new event, then 3 reads (hits and misses).
function workload(cache: { get(k: string): unknown; set(k: string, v: (typeof pdus)[number]): void }): () => void {
  return () => {
    for (let i = 0; i < N; i++) {
      const j = i % 5000;
      cache.set(keys[j]!, pdus[j]!);
      cache.get(keys[(j + 4999) % 5000]!);
      cache.get(keys[(j + 2500) % 5000]!);
      cache.get(keys[(j + 17) % 5000]!);
    }
  };
}
const eventsByCount = new Lru<string, (typeof pdus)[number]>(3000);
const eventsByBytes = new ByteLru(3000 * 1400, (k: string, p: unknown) => MAP_ENTRY + keyBytes(k) + estimateBytes(p));
for (let pass = 0; pass < 2; pass++) {
  time("events: Lru by count (3,000), set + 3 gets", workload(eventsByCount));
  time(`events: ByteLru by bytes (${eventsByBytes.size} entries), set + 3 gets`, workload(eventsByBytes));
}
time("estimateBytes of one m.room.message PDU", () => {
  for (let i = 0; i < N; i++) estimateBytes(pdus[i % 5000]);
});
time("memo: Lru by count (10,000), set + get", (() => {
  const c = new Lru<string, boolean>(10_000);
  return () => {
    for (let i = 0; i < N; i++) { c.set(memoKeys[i % 15_000]!, true); c.get(memoKeys[(i + 7) % 15_000]!); }
  };
})());
time("memo: ByteLru by bytes (~10,000), set + get", (() => {
  const c = new ByteLru<string, boolean>(10_000 * 360, (k: string) => MAP_ENTRY + keyBytes(k));
  return () => {
    for (let i = 0; i < N; i++) { c.set(memoKeys[i % 15_000]!, true); c.get(memoKeys[(i + 7) % 15_000]!); }
  };
})());

const here = new URL("../", import.meta.url).pathname;
for (const [label, root] of [["before", process.env.CACHE_BENCH_ROOT], ["this checkout", here]] as const) {
  if (!root) continue;
  const { CanonicalPduCache } = (await import(pathToFileURL(`${root.replace(/\/$/, "")}/src/sender/canonical-pdu-cache.ts`).href)) as { CanonicalPduCache: new (b: number) => { get(k: string): Buffer | undefined; set(k: string, t: string): Buffer } };
  const c = new CanonicalPduCache(4 * 1_048_576);
  time(`canonical PDUs (${label}): set + 3 gets`, () => {
    for (let i = 0; i < N; i++) {
      const j = i % 5000;
      c.set(keys[j]!, texts[j]!);
      c.get(keys[(j + 4999) % 5000]!);
      c.get(keys[(j + 2500) % 5000]!);
      c.get(keys[(j + 17) % 5000]!);
    }
  });
}
