/**
 * `node --import tsx bench/malloc-threshold.ts`: how much of glibc's brk heap a Node process keeps
 * after large transient buffers, with glibc's default (dynamic) mmap threshold and with a fixed one
 * (bench/README.md, "Memory, 2026-12-05 (native)"). Figures are printed, never asserted.
 *
 * By default glibc serves a malloc of ≥ 128 KiB with its own mmap, returned to the kernel on
 * free. But when such a chunk is freed, glibc raises the threshold to that chunk's size (up to
 * 32 MiB) and the trim threshold to twice that: from then on buffers of that size come from the
 * brk heap, and their freed space stays resident unless it is at the heap's top. Setting
 * MALLOC_MMAP_THRESHOLD_ (or MALLOC_TRIM_THRESHOLD_) turns that adjustment off.
 *
 * The workload, in a child node process per setting: ROUNDS rounds; each allocates two transient
 * Buffers whose size grows from 256 KiB to MAX_MB (a JSON answer being written), interleaved with
 * small Buffers of which a rolling 2,000 stay alive (connections, parsers), then drops the large
 * ones; a full GC every 10 rounds. At the end: RSS, the brk heap's resident part and the main
 * arena's held/in-use/free bytes (bench/lib/glibc-malloc.ts, via gdb; needs root).
 * Settings: MALLOC_THRESHOLD_ROUNDS (default 400), MALLOC_THRESHOLD_MAX_MB (default 4),
 * MALLOC_THRESHOLD_ENVS (default "default;MALLOC_MMAP_THRESHOLD_=131072"; `;`-separated, each
 * `default` or space-separated NAME=value pairs for the child).
 */
import { spawn } from "node:child_process";
import { mallocInfo, residentBytes } from "./lib/glibc-malloc.js";

const ROUNDS = Number(process.env.MALLOC_THRESHOLD_ROUNDS ?? "400");
const MAX = Number(process.env.MALLOC_THRESHOLD_MAX_MB ?? "4") * 1048576;
const ENVS = (process.env.MALLOC_THRESHOLD_ENVS ?? "default;MALLOC_MMAP_THRESHOLD_=131072").split(";").map((s) => s.trim());

const workload = `
const ROUNDS = ${ROUNDS}, MAX = ${MAX}, MIN = 256 * 1024;
const keep = [];
for (let r = 0; r < ROUNDS; r++) {
  // Sizes vary below a ceiling that grows with the rounds (answers grow with a room's history).
  const ceiling = MIN + ((MAX - MIN) * r) / (ROUNDS - 1);
  const size = () => Math.round(MIN + (ceiling - MIN) * Math.random());
  const big = [Buffer.alloc(size(), 1)];
  for (let i = 0; i < 200; i++) {
    const b = Buffer.alloc(2048 + ((i * 7919) % 6144), 2);
    if (i % 10 === 0) { keep.push(b); if (keep.length > 2000) keep.shift(); }
  }
  big.push(Buffer.alloc(size(), 3));
  big.length = 0;
  if (r % 10 === 9) gc();
}
gc();
process.stdout.write("ready\\n");
setTimeout(() => {}, 600000);
`;

const mb = (b: number) => (b / 1048576).toFixed(1);
console.log(`# ${ROUNDS} rounds, transient buffers 0.25 → ${MAX / 1048576} MiB, ${new Date().toISOString()}`);
console.log("| setting | RSS | brk heap resident | main arena held / in use / free | mmapped chunks | after malloc_trim(0): RSS / brk |");
console.log("|---|---|---|---|---|---|");
for (const setting of ENVS) {
  const extra = setting === "default" ? {} : Object.fromEntries(setting.split(/\s+/).map((kv) => kv.split("=") as [string, string]));
  const child = spawn(process.execPath, ["--expose-gc", "-e", workload], { env: { ...process.env, ...extra }, stdio: ["ignore", "pipe", "inherit"] });
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => d.toString().includes("ready") && resolve());
      child.on("exit", (code) => reject(new Error(`workload exited ${code}`)));
    });
    const r = residentBytes(child.pid!);
    const info = mallocInfo(child.pid!, { trim: true });
    const main = info.arenas.find((a) => a.nr === 0)!;
    const t = info.trimmed!;
    console.log(`| ${setting} | ${mb(r.rss)} MB | ${mb(r.brkHeap)} MB | ${mb(main.system)} / ${mb(main.inUse)} / ${mb(main.free)} MB | ${mb(info.mmap)} MB | ${mb(t.after.rss)} / ${mb(t.after.brkHeap)} MB |`);
  } finally {
    child.kill("SIGKILL");
  }
}
