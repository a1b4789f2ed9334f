/**
 * `node --import tsx bench/malloc-info.ts`: what glibc's malloc holds inside a running Gatehouse
 * (a bench child), in use against free, arena by arena — the part of RSS the memory probe
 * (bench/lib/mem-probe.mjs) can only call "native".
 *
 * It attaches gdb to the process for about a second, has glibc write `malloc_info()` (XML) to a
 * temp file, and parses it: per arena (heap 0 is the main arena, glibc's brk heap) the bytes it
 * holds from the system, the bytes in free chunks (fast bins + the rest) and so the bytes in use;
 * plus the chunks mmapped directly. Bytes in use that keep growing are a leak (someone keeps what
 * they malloc'ed); free bytes that keep growing are fragmentation (freed, not given back).
 * With MALLOC_INFO_TRIM_AT_S it also calls `malloc_trim(0)` once, at that many seconds, and
 * samples RSS before and after: what glibc then gives back was free memory, not a leak.
 *
 * Settings (environment): MALLOC_INFO_PID, or MALLOC_INFO_PROBE_FILE = the MEM_PROBE_FILE of the
 * Gatehouse to watch (the soak's SOAK_MEM_FILE; the pid is found by that variable in
 * /proc/PID/environ, waiting for it to start); MALLOC_INFO_EVERY_S (default 900);
 * MALLOC_INFO_FOR_S (default 4200); MALLOC_INFO_TRIM_AT_S (off by default); MALLOC_INFO_OUT
 * (JSON lines; default stdout only). Needs gdb and ptrace rights (root). Bench-only: the product
 * never runs it. Each attach stops Gatehouse for ~1 s, so sample every few minutes, not seconds.
 */
import { appendFileSync, existsSync, readdirSync, readFileSync } from "node:fs";
import { mallocInfo, residentBytes, type Arena } from "./lib/glibc-malloc.js";

const EVERY = Number(process.env.MALLOC_INFO_EVERY_S ?? "900") * 1000;
const FOR = Number(process.env.MALLOC_INFO_FOR_S ?? "4200") * 1000;
const TRIM_AT = process.env.MALLOC_INFO_TRIM_AT_S ? Number(process.env.MALLOC_INFO_TRIM_AT_S) * 1000 : null;
const OUT = process.env.MALLOC_INFO_OUT;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The Gatehouse child whose MEM_PROBE_FILE is `probeFile` (the bench sets it; bench/lib/mem-probe.mjs). */
function findPid(probeFile: string): number | null {
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const env = readFileSync(`/proc/${d}/environ`, "utf8").split("\0");
      if (env.includes(`MEM_PROBE_FILE=${probeFile}`) && readFileSync(`/proc/${d}/comm`, "utf8").trim() === "node") return Number(d);
    } catch {
      /* gone, or not ours to read */
    }
  }
  return null;
}

const probeFile = process.env.MALLOC_INFO_PROBE_FILE;
let pid = process.env.MALLOC_INFO_PID ? Number(process.env.MALLOC_INFO_PID) : null;
for (let i = 0; pid === null && probeFile && i < 600; i++) {
  pid = findPid(probeFile);
  if (pid === null) await sleep(1000);
}
if (pid === null) throw new Error("set MALLOC_INFO_PID, or MALLOC_INFO_PROBE_FILE to a running Gatehouse's MEM_PROBE_FILE");
const mb = (b: number) => (b / 1048576).toFixed(1);
const t0 = Date.now();
let trimDone = TRIM_AT === null;
for (let next = 0; Date.now() - t0 < FOR && existsSync(`/proc/${pid}`); ) {
  const trim = !trimDone && Date.now() - t0 >= TRIM_AT!;
  if (trim || Date.now() - t0 >= next) {
    let line;
    try {
      const r = residentBytes(pid);
      const info = mallocInfo(pid, { trim });
      const main = info.arenas.find((a) => a.nr === 0);
      const others = info.arenas.filter((a) => a.nr !== 0);
      const sum = (as: Arena[], k: "system" | "free" | "inUse") => as.reduce((s, a) => s + a[k], 0);
      line = {
        t: Math.round((Date.now() - t0) / 1000),
        at: new Date().toISOString(),
        ...r,
        main: main && { system: main.system, free: main.free, inUse: main.inUse, largeFree: main.largeFree },
        threadArenas: { count: others.length, system: sum(others, "system"), free: sum(others, "free"), inUse: sum(others, "inUse") },
        mmap: info.mmap,
        ...(info.trimmed ? { trim: info.trimmed } : {}),
      };
      console.log(
        `# t=${line.t}s rss ${mb(r.rss)} MB (brk ${mb(r.brkHeap)}); main arena ${mb(main?.system ?? 0)} MB held, ${mb(main?.inUse ?? 0)} in use, ${mb(main?.free ?? 0)} free (${mb(main?.largeFree ?? 0)} in chunks ≥ 128 KiB); ` +
          `${others.length} thread arenas ${mb(line.threadArenas.system)} held, ${mb(line.threadArenas.inUse)} in use; mmapped ${mb(info.mmap)}` +
          (info.trimmed ? `; malloc_trim(0): rss ${mb(info.trimmed.before.rss)} → ${mb(info.trimmed.after.rss)} MB, brk ${mb(info.trimmed.before.brkHeap)} → ${mb(info.trimmed.after.brkHeap)}` : ""),
      );
    } catch (e) {
      if (!existsSync(`/proc/${pid}`)) break;
      throw e;
    }
    if (OUT) appendFileSync(OUT, JSON.stringify(line) + "\n");
    if (trim) trimDone = true;
    else next += EVERY;
  }
  await sleep(1000);
}
