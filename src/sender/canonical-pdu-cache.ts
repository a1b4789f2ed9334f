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
export class CanonicalPduCache {
  private readonly map = new Map<string, Buffer>();
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  get(ref: string): Buffer | undefined {
    const v = this.map.get(ref);
    if (v !== undefined) {
      // Most recently used last; a backlog reads the same refs for every destination.
      this.map.delete(ref);
      this.map.set(ref, v);
    }
    return v;
  }

  /**
   * Caches the UTF-8 bytes of `text` and returns them. Each entry gets a buffer of its own, not
   * a slice of Node's shared 8 KiB pool (what Buffer.from gives for short strings): a cached
   * slice keeps its whole slab alive, so with pool slices the cache held up to 8× its byte
   * budget (a 30-minute soak's external memory grew ~6 MB/min).
   */
  set(ref: string, text: string): Buffer {
    const canonical = Buffer.allocUnsafeSlow(Buffer.byteLength(text, "utf8"));
    canonical.write(text, "utf8");
    // One huge event must not flush everything else (a PDU is at most 64 KiB on the wire).
    if (canonical.length > this.maxBytes / 4) return canonical;
    const old = this.map.get(ref);
    if (old !== undefined) {
      this.bytes -= old.length;
      this.map.delete(ref);
    }
    this.map.set(ref, canonical);
    this.bytes += canonical.length;
    for (const [k, v] of this.map) {
      if (this.bytes <= this.maxBytes) break;
      this.map.delete(k);
      this.bytes -= v.length;
    }
    return canonical;
  }

  get size(): number {
    return this.map.size;
  }
}
