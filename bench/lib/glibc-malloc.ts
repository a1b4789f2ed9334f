/**
 * glibc's malloc seen from outside a running process (bench/malloc-info.ts; unit-tested in
 * test/unit/bench-malloc-info.test.ts). `mallocInfo(pid)` attaches gdb for about a second and has
 * the process write `malloc_info()` (glibc's XML report) to a temp file; `parseMallocInfo` reads it
 * per arena: bytes held from the system, bytes in free chunks (fast bins, the other bins and the
 * top chunk) and so bytes in use. `trim: true` also calls `malloc_trim(0)`, which gives free pages
 * back to the kernel (the top of each heap, and whole free pages inside it by madvise). Bench-only:
 * the product never runs gdb.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Arena {
  /** 0 is the main arena (the brk heap, used by the main thread); others are thread arenas. */
  nr: number;
  /** Bytes the arena holds from the system (`<system type="current">`). */
  system: number;
  /** Bytes in free chunks: fast bins + the rest (bins and top). */
  free: number;
  /** system − free: bytes handed out by malloc and not freed (with chunk headers). */
  inUse: number;
  /**
   * Bytes in binned free chunks of ≥ 128 KiB (glibc's default mmap threshold): room left by large
   * transient buffers that were served from the arena rather than by their own mmap.
   */
  largeFree: number;
}

export interface MallocInfo {
  arenas: Arena[];
  /** Bytes in chunks mmapped directly (above the mmap threshold), outside every arena. */
  mmap: number;
}

export function parseMallocInfo(xml: string): MallocInfo {
  if (!/<malloc version="1">/.test(xml)) throw new Error("not glibc malloc_info output");
  const arenas: Arena[] = [];
  for (const m of xml.matchAll(/<heap nr="(\d+)">([\s\S]*?)<\/heap>/g)) {
    const body = m[2]!;
    const total = (type: string) => Number(new RegExp(`<total type="${type}" count="\\d+" size="(\\d+)"/>`).exec(body)?.[1] ?? 0);
    const system = Number(/<system type="current" size="(\d+)"\/>/.exec(body)?.[1] ?? 0);
    const free = total("fast") + total("rest");
    let largeFree = 0;
    for (const sz of body.matchAll(/<size from="(\d+)" to="\d+" total="(\d+)" count="\d+"\/>/g)) if (Number(sz[1]) >= 128 * 1024) largeFree += Number(sz[2]);
    arenas.push({ nr: Number(m[1]), system, free, inUse: system - free, largeFree });
  }
  // The totals after the last arena cover the whole process; only they count mmapped chunks.
  const totals = xml.slice(xml.lastIndexOf("</heap>"));
  return { arenas, mmap: Number(/<total type="mmap" count="\d+" size="(\d+)"\/>/.exec(totals)?.[1] ?? 0) };
}

/** Resident bytes of a process, all and the brk heap (`[heap]` in /proc/PID/smaps). */
export function residentBytes(pid: number): { rss: number; brkHeap: number } {
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const heap = /\[heap\]\n(?:.*\n)*?Rss:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/smaps`, "utf8"));
  return { rss: Number(/^Rss:\s+(\d+) kB/m.exec(rollup)![1]) * 1024, brkHeap: heap ? Number(heap[1]) * 1024 : 0 };
}

const gdb = (pid: number, calls: string[]) =>
  execFileSync("gdb", ["-p", String(pid), "-batch", "-nx", ...calls.flatMap((c) => ["-ex", `call ${c}`])], { stdio: "ignore", timeout: 60_000 });

/** malloc_info() of a running process (needs gdb and ptrace rights); with `trim`, then malloc_trim(0) and RSS before/after. */
export function mallocInfo(pid: number, opts: { trim?: boolean } = {}): MallocInfo & { trimmed?: { before: ReturnType<typeof residentBytes>; after: ReturnType<typeof residentBytes> } } {
  const file = join(tmpdir(), `malloc-info-${pid}-${Date.now()}.xml`);
  try {
    gdb(pid, [`(void*)fopen("${file}","w")`, "(int)malloc_info(0,$1)", "(int)fclose($1)"]);
    const info = parseMallocInfo(readFileSync(file, "utf8"));
    if (!opts.trim) return info;
    const before = residentBytes(pid);
    gdb(pid, ["(int)malloc_trim(0)"]);
    return { ...info, trimmed: { before, after: residentBytes(pid) } };
  } finally {
    rmSync(file, { force: true });
  }
}
