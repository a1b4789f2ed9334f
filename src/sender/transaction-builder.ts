/**
 * Queued entries → a transaction body. Reads each queued PDU from the room store once per
 * process (encoded bytes cached per transport kind and event, shared by every destination of
 * that kind; the PDUs a transaction lacks are taken from the store's event cache or read with
 * one MGET per room), canonicalises the queued EDUs, and lets the destination's transport put
 * the envelope around them. No Redis writes: storing the body is the algorithm's
 * (per-destination.ts).
 */
import type { Logger } from "../logger.js";
import { canonicalJson } from "../protocol/canonical-json.js";
import { CanonicalPduCache } from "./canonical-pdu-cache.js";
import { CacheBudget } from "../store/byte-lru.js";
import type { DestinationTransport } from "./transport.js";
import type { Pdu } from "../protocol/pdu.js";


export interface TransactionBuilderDeps {
  store: {
    getEventJsons(roomId: string, eventIds: readonly string[]): Promise<(string | null)[]>;
    /**
     * An event from the store's in-memory cache (never a Redis read), as stored: encoded from it
     * when the transport can (encodePdu), which spares the event's read and parse.
     */
    cachedEvent?(roomId: string, eventId: string): Pdu | undefined;
  };
  logger: Logger;
  /** The process's cache budget (GATEHOUSE_CACHE_MAX_BYTES; its `canonical_pdus` share), or a byte budget of this builder's own; the default budget when absent. */
  caches?: CacheBudget | number;
}

type Loaded = Buffer | { missing: boolean; error?: string };

export class TransactionBuilder {
  private readonly cache: CanonicalPduCache;
  /** Events being read and encoded, so concurrent transactions share one read. */
  private readonly loading = new Map<string, Promise<Loaded>>();

  constructor(private readonly deps: TransactionBuilderDeps) {
    this.cache = new CanonicalPduCache(deps.caches ?? new CacheBudget());
  }

  /**
   * The body of a transaction carrying the queued PDUs `pduRefs` ("roomId eventId") and EDUs
   * (JSON text) to `destination`, created at `ts`. A PDU that cannot be sent (not in the store,
   * or not encodable, so no signature could cover it) and an EDU that is not JSON are logged and
   * left out: the transaction would otherwise fail forever. They still count as part of the
   * transaction, so its commit removes them from the queue.
   */
  async build(destination: string, transport: DestinationTransport, pduRefs: readonly string[], edus: readonly string[], ts: number): Promise<Buffer> {
    const events = (await this.encodedEvents(destination, transport, pduRefs)).filter((p): p is Buffer => p !== null);
    const encodedEdus: string[] = [];
    for (const e of edus) {
      try {
        encodedEdus.push(canonicalJson(JSON.parse(e)));
      } catch {
        this.deps.logger.error({ destination, edu: e.slice(0, 200) }, "queued EDU is not JSON (or not canonical-encodable); skipped");
      }
    }
    return transport.encodeBody({ events, edus: encodedEdus, ts });
  }

  /** The encoded queued events `refs`, in order; null for one that cannot be sent (logged). */
  async encodedEvents(destination: string, transport: DestinationTransport, refs: readonly string[]): Promise<(Buffer | null)[]> {
    const out: (Buffer | null)[] = new Array(refs.length).fill(null);
    const waits: Promise<void>[] = [];
    /** The refs this call reads, by room: one MGET each. */
    const toRead = new Map<string, Pending[]>();
    for (let i = 0; i < refs.length; i++) {
      const ref = refs[i]!;
      const key = `${transport.kind}|${ref}`;
      const hit = this.cache.get(key);
      if (hit !== undefined) {
        out[i] = hit;
        continue;
      }
      // When a backlog drains, every destination asks for the same new events at about the same
      // moment: one read and encode per event, the others wait for it.
      let p = this.loading.get(key);
      if (!p) {
        const space = ref.indexOf(" ");
        const roomId = ref.slice(0, space);
        let batch = toRead.get(roomId);
        if (!batch) toRead.set(roomId, (batch = []));
        let settle!: { resolve: (l: Loaded) => void; reject: (e: unknown) => void };
        p = new Promise<Loaded>((resolve, reject) => (settle = { resolve, reject }));
        batch.push({ key, eventId: ref.slice(space + 1), ...settle });
        this.loading.set(key, p);
      }
      waits.push(
        p.then((r) => {
          if (Buffer.isBuffer(r)) out[i] = r;
          else if (r.missing) this.deps.logger.error({ destination, ref }, "queued PDU not found in the store; skipped");
          else this.deps.logger.error({ destination, ref, err: r.error }, "queued PDU cannot be encoded for its destination; skipped");
        }),
      );
    }
    for (const [roomId, batch] of toRead) void this.load(transport, roomId, batch);
    if (waits.length) await Promise.all(waits);
    return out;
  }

  /**
   * Reads and encodes `batch` (events of one room), settling each one's promise. Events in the
   * store's event cache (an inbound run this process wrote is there) are encoded from it; the
   * rest are read with one MGET.
   */
  private async load(transport: DestinationTransport, roomId: string, batch: Pending[]): Promise<void> {
    const encode = (b: Pending, text: () => string): void => {
      try {
        b.resolve(this.cache.set(b.key, text()));
      } catch (e) {
        b.resolve({ missing: false, error: (e as Error).message });
      }
    };
    try {
      let toRead = batch;
      const { cachedEvent } = this.deps.store;
      if (transport.encodePdu && cachedEvent) {
        toRead = [];
        for (const b of batch) {
          const pdu = cachedEvent.call(this.deps.store, roomId, b.eventId);
          if (pdu === undefined) toRead.push(b);
          else encode(b, () => transport.encodePdu!(pdu, b.eventId));
        }
      }
      if (toRead.length === 0) return;
      const texts = await this.deps.store.getEventJsons(roomId, toRead.map((b) => b.eventId));
      toRead.forEach((b, i) => {
        const text = texts[i];
        if (text === null || text === undefined) return b.resolve({ missing: true });
        encode(b, () => transport.encodeEvent(text, b.eventId));
      });
    } catch (e) {
      // (The ones already settled from the event cache stay settled.)
      for (const b of batch) b.reject(e);
    } finally {
      for (const b of batch) this.loading.delete(b.key);
    }
  }
}

interface Pending {
  key: string;
  eventId: string;
  resolve: (l: Loaded) => void;
  reject: (e: unknown) => void;
}
