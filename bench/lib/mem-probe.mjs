/**
 * Memory probe for bench runs: preloaded into a Gatehouse child with
 * `node --import bench/lib/mem-probe.mjs …` (never by the product). Every MEM_PROBE_INTERVAL_MS
 * (default 60 s) it appends one JSON line to MEM_PROBE_FILE with what the process holds:
 *
 * - `process.memoryUsage()`: rss, heapTotal (V8's committed heap), heapUsed, external, arrayBuffers;
 * - `v8.getHeapStatistics()`: total_physical_size, malloced_memory (V8's own malloc), and the
 *   committed size of each heap space (new, old, code, large object…);
 * - /proc/self/status: RssAnon, RssFile, VmData, Threads;
 * - outbound TLS connections made (`tls.connect`) and TLS contexts built, counted since start;
 * - /proc/self/smaps: resident anonymous memory split into glibc's main heap (`[heap]`, brk),
 *   regions inside 64 MiB-aligned reservations (glibc's per-thread malloc arenas), and the rest
 *   (V8's pages, thread stacks, mmapped malloc chunks).
 *
 * What is left of RSS after V8's physical heap, the ArrayBuffers and file-backed pages is native
 * memory: malloc arenas (fragmentation), OpenSSL, libuv, zlib. The periodic samples do not force
 * a GC; MEM_PROBE_HEAP_SNAPSHOTS_MIN (minutes, comma-separated) writes heap snapshots. On SIGUSR2 the probe runs a full GC and appends a sample marked `gc: true` at once: the
 * scale rows (bench/scale.ts) read the live heap that way (heap per member, per destination).
 * MEM_PROBE_PEAK_MS (ms, off by default): V8's heapUsed + external (Buffers) is sampled that often,
 * and every SIGUSR2 sample carries `peakHeap`, the largest value seen since the previous one (the
 * scale-room row reads the heap a send_join answer costs that way). A timer cannot fire inside a
 * synchronous block (a JSON.stringify of 58 MB), so the peak is the first sample after it: what
 * it left for the GC.
 */
import { appendFileSync, readFileSync } from "node:fs";
import tls from "node:tls";
import v8 from "node:v8";
import { runInNewContext } from "node:vm";

const file = process.env.MEM_PROBE_FILE;
const interval = Number(process.env.MEM_PROBE_INTERVAL_MS ?? "60000");
const t0 = Date.now();

// Counts of outbound TLS connections and of TLS contexts built (each one an OpenSSL SSL_CTX):
// connection churn is a source of native memory (bench/README.md, "Memory").
const tlsCounts = { connects: 0, contexts: 0 };
if (file) {
  const connect = tls.connect;
  tls.connect = function (...args) {
    tlsCounts.connects++;
    return connect.apply(this, args);
  };
  const createSecureContext = tls.createSecureContext;
  tls.createSecureContext = function (...args) {
    tlsCounts.contexts++;
    return createSecureContext.apply(this, args);
  };
}

function statusKb(text, key) {
  const m = new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(text);
  return m ? Number(m[1]) * 1024 : null;
}

/** Resident anonymous bytes by kind, from /proc/self/smaps. */
function smapsSplit() {
  const out = { brkHeap: 0, arena64: 0, otherAnon: 0, arenaCount: 0 };
  let text;
  try {
    text = readFileSync("/proc/self/smaps", "utf8");
  } catch {
    return out;
  }
  const ARENA = 64 * 1024 * 1024;
  const arenas = new Set();
  let cur = null;
  for (const line of text.split("\n")) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (head) {
      const start = parseInt(head[1], 16);
      const name = head[4].trim();
      const inode = head[3];
      cur = { start, name, anon: inode === "0" && (name === "" || name === "[heap]") };
      continue;
    }
    if (!cur || !cur.anon) continue;
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (!rss) continue;
    const bytes = Number(rss[1]) * 1024;
    if (cur.name === "[heap]") out.brkHeap += bytes;
    else if (cur.start % ARENA === 0 || arenas.has(Math.floor(cur.start / ARENA))) {
      // glibc reserves each thread arena as a 64 MiB-aligned 64 MiB region; its used part is one
      // mapping at the aligned start (the rest PROT_NONE). V8 pages are 256 KiB-aligned, so a V8
      // page can be counted here only if it happens to sit at a 64 MiB boundary.
      arenas.add(Math.floor(cur.start / ARENA));
      out.arena64 += bytes;
    } else out.otherAnon += bytes;
  }
  out.arenaCount = arenas.size;
  return out;
}

function sample() {
  const mu = process.memoryUsage();
  const hs = v8.getHeapStatistics();
  const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name, s.space_size]));
  let status = "";
  try {
    status = readFileSync("/proc/self/status", "utf8");
  } catch {
    /* not Linux */
  }
  return {
    t: Math.round((Date.now() - t0) / 1000),
    at: new Date().toISOString(),
    rss: mu.rss,
    heapTotal: mu.heapTotal,
    heapUsed: mu.heapUsed,
    external: mu.external,
    arrayBuffers: mu.arrayBuffers,
    v8Physical: hs.total_physical_size,
    v8Malloced: hs.malloced_memory,
    spaces,
    rssAnon: statusKb(status, "RssAnon"),
    rssFile: statusKb(status, "RssFile"),
    vmData: statusKb(status, "VmData"),
    threads: Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? 0),
    tlsConnects: tlsCounts.connects,
    tlsContexts: tlsCounts.contexts,
    ...smapsSplit(),
  };
}

if (file) {
  const write = () => {
    try {
      appendFileSync(file, JSON.stringify(sample()) + "\n");
    } catch {
      /* the bench removed the folder */
    }
  };
  setTimeout(write, 1000).unref();
  setInterval(write, interval).unref();
  // MEM_PROBE_HEAP_SNAPSHOTS_MIN="12,57": a V8 heap snapshot (which collects first: live objects
  // only) at those minutes, next to MEM_PROBE_FILE, to diff what the live heap gained between them.
  for (const min of (process.env.MEM_PROBE_HEAP_SNAPSHOTS_MIN ?? "").split(",").filter(Boolean).map(Number)) {
    setTimeout(() => {
      try {
        const snapshot = v8.writeHeapSnapshot(`${file}.${min}min.heapsnapshot`);
        appendFileSync(file, JSON.stringify({ ...sample(), snapshot }) + "\n");
      } catch {
        /* the bench removed the folder */
      }
    }, min * 60_000).unref();
  }
  const peakMs = Number(process.env.MEM_PROBE_PEAK_MS ?? "0");
  let peakHeap = 0;
  if (peakMs > 0) {
    setInterval(() => {
      const mu = process.memoryUsage();
      peakHeap = Math.max(peakHeap, mu.heapUsed + mu.external);
    }, peakMs).unref();
  }
  v8.setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc");
  process.on("SIGUSR2", () => {
    gc();
    try {
      const s = sample();
      appendFileSync(file, JSON.stringify({ ...s, gc: true, ...(peakMs > 0 ? { peakHeap: Math.max(peakHeap, s.heapUsed + s.external) } : {}) }) + "\n");
      peakHeap = 0;
    } catch {
      /* the bench removed the folder */
    }
  });
}
