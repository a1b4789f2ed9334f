/**
 * Per-destination retry delays: exponential with jitter, capped. Pure (randomness injected).
 *
 * Gentler than Synapse's per-destination backoff (10 min doubling to 7 days, see
 * ../shared/spec/transactions.md §4) because Gatehouse never drops PDUs and has no catch-up mode:
 * a peer that comes back should get its backlog within minutes, not hours.
 */
export interface BackoffSettings {
  /** Delay after the first failure (ms). */
  initialMs: number;
  /** Largest delay (ms), jitter included. */
  maxMs: number;
  /** Growth per consecutive failure (default 2). */
  multiplier?: number;
  /** Random factor range (default [0.8, 1.4], as Synapse). */
  jitter?: readonly [number, number];
}

/** Delay before the next attempt after `failures` consecutive failures (failures ≥ 1). */
export function backoffDelay(failures: number, s: BackoffSettings, random: () => number = Math.random): number {
  const n = Math.max(1, Math.floor(failures));
  const mult = s.multiplier ?? 2;
  const [lo, hi] = s.jitter ?? [0.8, 1.4];
  // Grow in log space so a long outage (thousands of failures) never overflows to Infinity.
  const exp = Math.min(n - 1, Math.ceil(Math.log(Math.max(s.maxMs / s.initialMs, 1)) / Math.log(mult)) + 1);
  const base = Math.min(s.initialMs * Math.pow(mult, exp), s.maxMs);
  const factor = lo + (hi - lo) * random();
  return Math.max(1, Math.min(Math.round(base * factor), s.maxMs));
}
