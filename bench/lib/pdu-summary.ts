/** What a read's `pdus` hold, to compare two servers' answers to the same read (pure; test/unit/bench-slope.test.ts). */
import type { Pdu } from "../../src/protocol/pdu.js";

export interface PduSummary {
  count: number;
  distinct: number;
  /** Compact JSON bytes per event: mean, min, max. */
  meanBytes: number;
  minBytes: number;
  maxBytes: number;
  minDepth: number;
  maxDepth: number;
  /** Depths between minDepth and maxDepth that no event has (a gap in a chain: events not served). */
  absentDepths: number;
  /** Top-level keys seen on any event, and keys of `unsigned`, sorted. */
  keys: string[];
  unsignedKeys: string[];
}

export function summarisePdus(pdus: readonly Pdu[], idOf: (p: Pdu) => string): PduSummary | null {
  if (pdus.length === 0) return null;
  const sizes = pdus.map((p) => Buffer.byteLength(JSON.stringify(p)));
  const depths = pdus.map((p) => p.depth as number);
  const minDepth = Math.min(...depths);
  const maxDepth = Math.max(...depths);
  const keys = new Set<string>();
  const unsignedKeys = new Set<string>();
  for (const p of pdus) {
    Object.keys(p).forEach((k) => keys.add(k));
    if (p.unsigned && typeof p.unsigned === "object") Object.keys(p.unsigned).forEach((k) => unsignedKeys.add(k));
  }
  const seen = new Set(depths);
  let absentDepths = 0;
  for (let d = minDepth; d <= maxDepth; d++) if (!seen.has(d)) absentDepths++;
  return {
    count: pdus.length,
    distinct: new Set(pdus.map(idOf)).size,
    meanBytes: sizes.reduce((a, b) => a + b, 0) / pdus.length,
    minBytes: Math.min(...sizes),
    maxBytes: Math.max(...sizes),
    minDepth,
    maxDepth,
    absentDepths,
    keys: [...keys].sort(),
    unsignedKeys: [...unsignedKeys].sort(),
  };
}

/** One line for the bench log: how many events, their size each, their depth range and keys. */
export function describePdus(pdus: readonly Pdu[], idOf: (p: Pdu) => string): string {
  const s = summarisePdus(pdus, idOf);
  if (!s) return "0 events";
  const n = (x: number) => Math.round(x).toLocaleString("en-US");
  return (
    `${s.count} events (${s.distinct} distinct), ${n(s.meanBytes)} B each on average (${n(s.minBytes)}–${n(s.maxBytes)}), ` +
    `depth ${s.minDepth}–${s.maxDepth} (${s.absentDepths} depths of that range absent), keys [${s.keys.join(",")}], unsigned [${s.unsignedKeys.join(",")}]`
  );
}
