// Live heap of the fork points' auth-chain cache (src/rooms/auth-chain-cache.ts) against its own
// estimate, after a full GC. Printed, never asserted. Each mode in its own process:
//   node --expose-gc --import tsx bench/chain-cache-mem.ts whole    # 20 unrelated chains of 7,000 IDs
//   node --expose-gc --import tsx bench/chain-cache-mem.ts count16  # 10 rooms, each one's chain re-walked 200 times (+2 IDs each), 16 whole copies kept per room (the old Lru(16))
//   node --expose-gc --import tsx bench/chain-cache-mem.ts rebase   # the same, each walk stored as its difference from the room's newest (chainOf now)
// IDs are flat strings from JSON.parse, a new copy per walk, as the store's parse gives them.
import { randomBytes } from "node:crypto";
import { AuthChainCache, LayeredIdSet } from "../src/rooms/auth-chain-cache.js";

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with node --expose-gc");
const mode = process.argv[2] ?? "rebase";
const newId = () => `$${randomBytes(32).toString("base64url").slice(0, 43)}`;
const json = JSON.stringify(Array.from({ length: 7000 }, newId));
gc();
gc();
const before = process.memoryUsage().heapUsed;
const cache = new AuthChainCache(1e12);
if (mode === "whole") {
  for (let i = 0; i < 20; i++) cache.set(`!r:x ${i}`, LayeredIdSet.of(new Set(JSON.parse(json) as string[])));
} else {
  for (let r = 0; r < 10; r++) {
    let extra = "[]";
    for (let v = 0; v < 200; v++) {
      extra = JSON.stringify([...(JSON.parse(extra) as string[]), newId(), newId()]);
      const whole = new Set([...(JSON.parse(json) as string[]), ...(JSON.parse(extra) as string[])]);
      const near = mode === "rebase" ? cache.newestOf(`!r${r}:x`) : undefined;
      cache.set(`!r${r}:x ${v}`, near ? near.rebase(whole) : LayeredIdSet.of(whole));
      if (v >= 16) cache.delete(`!r${r}:x ${v - 16}`);
    }
  }
}
gc();
gc();
const after = process.memoryUsage().heapUsed;
console.log(`${mode}: ${cache.size} entries, ${cache.layerCount} layers: live heap +${((after - before) / 1e6).toFixed(2)} MB, estimated ${(cache.bytes / 1e6).toFixed(2)} MB`);
