/**
 * `node --import tsx bench/mem-windows.ts PROBE.jsonl [MALLOC.jsonl] [WINDOW_MIN]` (default 15): per-window slopes
 * (MB/min, least squares) of what the memory probe (bench/lib/mem-probe.mjs, the soak's
 * SOAK_MEM_FILE) recorded: RSS, V8's committed heap, heap used, the native rest (anonymous RSS −
 * V8's physical heap − ArrayBuffers), glibc's brk heap and its 64 MiB thread arenas; the live
 * heap from the full-GC samples (`gc: true`, the SIGUSR2 ones); and, given the JSON lines of
 * bench/malloc-info.ts, glibc's main arena in use and free at each of its samples.
 * Bench-only reading aid; prints, asserts nothing.
 */
import { readFileSync } from "node:fs";
import { slopes } from "./lib/slope.js";

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON lines of two bench tools
type Row = any;

const args = process.argv.slice(2);
const windowArg = args.find((a) => /^\d+(\.\d+)?$/.test(a));
const [probeFile, mallocFile] = args.filter((a) => a !== windowArg);
if (!probeFile) throw new Error("usage: node --import tsx bench/mem-windows.ts PROBE.jsonl [MALLOC.jsonl] [WINDOW_MIN]");
const WINDOW = Number(windowArg ?? "15") * 60;
const MB = 1048576;
const lines = (f: string): Row[] => readFileSync(f, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
const rows = lines(probeFile);

/** Least-squares slope of ys over xs, per minute (xs in seconds). */
const slope = (xs: number[], ys: number[]) => slopes(xs, ys).fit * 60;

const series: Record<string, (r: Row) => number> = {
  rss: (r: Row) => r.rss,
  committed: (r: Row) => r.heapTotal,
  used: (r: Row) => r.heapUsed,
  native: (r: Row) => r.rssAnon - r.v8Physical - r.arrayBuffers,
  brk: (r: Row) => r.brkHeap,
  arenas: (r: Row) => r.arena64,
  code: (r: Row) => r.spaces?.code_space ?? 0,
};
const periodic = rows.filter((r: Row) => !r.gc && !r.snapshot);
const gcs = rows.filter((r: Row) => r.gc);
const end = Math.max(...rows.map((r: Row) => r.t));
const f = (x: number) => (Number.isNaN(x) ? "   -  " : (x >= 0 ? "+" : "") + x.toFixed(2));
const mean = (rs: Row[], k: string) => rs.reduce((a: number, r: Row) => a + series[k]!(r), 0) / rs.length / MB;

console.log(`window (min)   n  | slopes MB/min: ${Object.keys(series).join(" ")} live-after-GC | means MB: rss committed native brk`);
const windows: [number, number][] = [];
for (let a = 0; a < end; a += WINDOW) windows.push([a, Math.min(a + WINDOW, end + 1)]);
windows.push([end / 2, end + 1], [0, end + 1]);
for (const [a, b] of windows) {
  const w = periodic.filter((r: Row) => r.t >= a && r.t < b);
  const g = gcs.filter((r: Row) => r.t >= a && r.t < b);
  if (w.length < 2) continue;
  const s = Object.values(series).map((fn) => f(slope(w.map((r: Row) => r.t), w.map((r: Row) => fn(r) / MB))));
  const live = f(slope(g.map((r: Row) => r.t), g.map((r: Row) => r.heapUsed / MB)));
  const label = `${(a / 60).toFixed(0)}–${(Math.min(b, end) / 60).toFixed(0)}`.padEnd(9);
  console.log(`${label} ${String(w.length).padStart(4)}  | ${s.join(" ")} ${live} | ${["rss", "committed", "native", "brk"].map((k) => mean(w, k).toFixed(1)).join(" ")}`);
}
console.log(`live heap after full GC (MB) at min: ${gcs.map((r: Row) => `${Math.round(r.t / 60)}:${(r.heapUsed / MB).toFixed(1)}`).join(" ")}`);
if (mallocFile) {
  console.log("glibc (bench/malloc-info.ts): t(min) rss brk | main arena held / in use / free (≥ 128 KiB) | thread arenas n held / in use | mmapped");
  for (const m of lines(mallocFile)) {
    const mb = (x: number) => (x / MB).toFixed(1);
    console.log(
      `  ${(m.t / 60).toFixed(1).padStart(5)}  ${mb(m.rss)} ${mb(m.brkHeap)} | ${mb(m.main.system)} / ${mb(m.main.inUse)} / ${mb(m.main.free)}${m.main.largeFree === undefined ? "" : ` (${mb(m.main.largeFree)})`} | ${m.threadArenas.count} ${mb(m.threadArenas.system)} / ${mb(m.threadArenas.inUse)} | ${mb(m.mmap)}` +
        (m.trim ? `  malloc_trim(0): rss ${mb(m.trim.before.rss)} → ${mb(m.trim.after.rss)}, brk ${mb(m.trim.before.brkHeap)} → ${mb(m.trim.after.brkHeap)}` : ""),
    );
  }
}
