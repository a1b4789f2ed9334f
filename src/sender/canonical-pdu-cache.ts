/**
 * The canonical JSON of queued PDUs as UTF-8 bytes, by queue reference ("roomId eventId"),
 * bounded by total size.
 *
 * Why: an event sent to a room with N remote servers is put into N transactions, and every
 * transaction body is canonical JSON (it is what the X-Matrix signature covers, see
 * transaction-builder.ts). Without this cache each of the N transactions fetched the event from Redis,
 * parsed it and encoded it again; with it that happens once per process. Stored events never
 * change (the persist script refuses to overwrite an event key), so an entry cannot go stale.
 * Bytes rather than strings: a transaction body is then assembled with one Buffer.concat (the
 * strings canonicalJson returns are ropes that V8 re-flattened for every body that used them),
 * and the cache lives outside the V8 heap, where the garbage collector does not scan it.
 */
import { ByteLru, keyBytes, MAP_ENTRY, type CacheBudget } from "../store/byte-lru.js";

export class CanonicalPduCache {
  private readonly lru: ByteLru<string, Buffer>;

  /** A byte budget of its own, or the process's `canonical_pdus` cache (byte-lru.ts, GATEHOUSE_CACHE_MAX_BYTES). */
  constructor(budget: number | CacheBudget) {
    this.lru = typeof budget === "number" ? new ByteLru(budget, canonicalEntryBytes) : budget.cache("canonical_pdus", canonicalEntryBytes);
  }

  get(ref: string): Buffer | undefined {
    // Most recently used last; a backlog reads the same refs for every destination.
    return this.lru.get(ref);
  }

  /**
   * Caches the UTF-8 bytes of `text` and returns them. Each entry gets a buffer of its own, not
   * a slice of Node's shared 8 KiB pool (what Buffer.from gives for short strings): a cached
   * slice keeps its whole slab alive, so with pool slices the cache held up to 8× its byte
   * budget (a 30-minute soak's external memory grew ~6 MB/min). One entry over a quarter of the
   * budget is returned but not kept (a PDU is at most 64 KiB on the wire).
   */
  set(ref: string, text: string): Buffer {
    const canonical = Buffer.allocUnsafeSlow(Buffer.byteLength(text, "utf8"));
    canonical.write(text, "utf8");
    this.lru.set(ref, canonical);
    return canonical;
  }

  get size(): number {
    return this.lru.size;
  }

  /** Estimated bytes held (the buffers plus their heap objects and keys). */
  get bytes(): number {
    return this.lru.bytes;
  }
}

/** A Buffer's heap object and ArrayBuffer (~80 B on V8's heap), beside its bytes outside it. */
const BUFFER_OBJECT = 80;

/** What one cached canonical PDU holds: its bytes (outside V8's heap), the Buffer objects, the entry and key. */
export function canonicalEntryBytes(ref: string, canonical: Buffer): number {
  return canonical.length + BUFFER_OBJECT + MAP_ENTRY + keyBytes(ref);
}
