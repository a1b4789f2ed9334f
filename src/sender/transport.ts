/**
 * How a transaction reaches one kind of destination. The sender's queue, transaction storage,
 * retry and backoff are the same for every kind (see sender.ts); only these differ:
 *   - how one queued event is encoded in a transaction (a federation PDU as it is; an
 *     application service would get the client event format),
 *   - the envelope around the events and EDUs (federation: {edus, origin, origin_server_ts, pdus};
 *     an application service: {ephemeral, events}),
 *   - how it is sent (federation: PUT /_matrix/federation/v1/send/{txnId}, X-Matrix signed;
 *     an application service: PUT {url}/_matrix/app/v1/transactions/{txnId}, Bearer hs_token),
 *   - which per-event errors a 2xx answer can report.
 * A destination is a string in the queue (a server name for federation); `Transports` picks its
 * transport by that name, so a second kind adds itself with a name space of its own (e.g.
 * "as:{id}", which is not a server name) without a second queue.
 */
import { canonicalJson } from "../protocol/canonical-json.js";
import { EncodedJsonBody, type FederationClient } from "../net/federation-client.js";
import type { StoredTxn } from "./outbound-store.js";
import type { Pdu } from "../protocol/pdu.js";

/** Any HTTP answer; transports reject (throw) only for network errors and timeouts. */
export interface TransportResponse {
  status: number;
  body: unknown;
  rawBody: string;
}

/** What a transaction carries, each item already encoded as canonical JSON. */
export interface TxnParts {
  /** Encoded events, in queue order (by encodeEvent). */
  events: readonly Buffer[];
  /** EDUs (ephemeral events), canonical JSON, in queue order. */
  edus: readonly string[];
  /** The transaction's creation time (ms). */
  ts: number;
}

export interface DestinationTransport {
  /** A short, fixed name ("federation", "appservice"): logs and bounded metric labels. */
  readonly kind: string;
  /** Whether `destination` is one of this transport's (Transports asks in order). */
  handles(destination: string): boolean;
  /**
   * Whether `destination` is a valid name for this transport (admin routes and CLI check names
   * with it before reading anything).
   */
  isValidDestination(destination: string): boolean;
  /**
   * One queued event as this transport sends it (canonical JSON), from the stored PDU JSON.
   * Cached per (kind, event) by the transaction builder, so it must depend on the event alone.
   * `eventId` is the event's ID from its queue reference (v3+ PDUs do not carry it).
   * Throws when the event cannot be encoded (it is then skipped).
   */
  encodeEvent(pduJson: string, eventId: string): string;
  /**
   * encodeEvent from the parsed PDU, for an event the builder has in memory (the room store's
   * event cache: most often one this process has just written): the same text as
   * `encodeEvent(JSON.stringify(pdu), eventId)`, without reading the event from Redis and parsing
   * it again. Optional: a transport without it has every event read.
   */
  encodePdu?(pdu: Pdu, eventId: string): string;
  /** The transaction body: canonical JSON built around the encoded parts. */
  encodeBody(parts: TxnParts): Buffer;
  /** Sends (or re-sends) the stored transaction, byte for byte. */
  send(destination: string, txn: StoredTxn): Promise<TransportResponse>;
  /** Per-event errors in a 2xx answer (logged and counted; such events are not retried). */
  eventErrors(responseBody: unknown): { eventId: string; error: string }[];
}

const COMMA = Buffer.from(",");
const CLOSE_PDUS = Buffer.from("]}");

/** Server-to-server: signed PUT /_matrix/federation/v1/send/{txnId}. */
export class FederationTransport implements DestinationTransport {
  readonly kind = "federation";

  constructor(
    private readonly client: Pick<FederationClient, "request">,
    private readonly serverName: string,
    private readonly isServerName: (s: string) => boolean,
  ) {}

  handles(): boolean {
    return true;
  }

  isValidDestination(destination: string): boolean {
    return this.isServerName(destination);
  }

  encodeEvent(pduJson: string): string {
    return canonicalJson(JSON.parse(pduJson));
  }

  encodePdu(pdu: Pdu): string {
    return canonicalJson(pdu);
  }

  /**
   * Canonical JSON by concatenation, keys in canonical order (edus < origin < origin_server_ts <
   * pdus): the bytes sent are also the `content` the X-Matrix signature covers, so neither
   * sending nor signing encodes the body again.
   */
  encodeBody(parts: TxnParts): Buffer {
    const head = `${parts.edus.length ? `{"edus":[${parts.edus.join(",")}],` : "{"}"origin":${canonicalJson(this.serverName)},"origin_server_ts":${canonicalJson(parts.ts)},"pdus":[`;
    const chunks: Buffer[] = [Buffer.from(head, "utf8")];
    parts.events.forEach((p, i) => {
      if (i > 0) chunks.push(COMMA);
      chunks.push(p);
    });
    chunks.push(CLOSE_PDUS);
    return Buffer.concat(chunks);
  }

  send(destination: string, txn: StoredTxn): Promise<TransportResponse> {
    // The transaction's body, byte for byte (as built, or rebuilt and checked against its digest, or an older version's stored one); a canonical one is also signed as it is.
    const body = new EncodedJsonBody(txn.body, txn.canonical);
    return this.client.request("PUT", destination, `/_matrix/federation/v1/send/${encodeURIComponent(txn.txnId)}`, body);
  }

  eventErrors(responseBody: unknown): { eventId: string; error: string }[] {
    const pdus = (responseBody as { pdus?: unknown } | undefined)?.pdus;
    if (typeof pdus !== "object" || pdus === null) return [];
    const out: { eventId: string; error: string }[] = [];
    for (const [eventId, result] of Object.entries(pdus as Record<string, unknown>)) {
      const error = (result as { error?: unknown } | null)?.error;
      if (error !== undefined) out.push({ eventId, error: String(error) });
    }
    return out;
  }
}

/**
 * The transports of one queue: the first that handles a destination sends to it; the fallback
 * (federation) takes the rest.
 */
export class Transports {
  private readonly specific: DestinationTransport[];

  constructor(
    readonly fallback: DestinationTransport,
    specific: readonly DestinationTransport[] = [],
  ) {
    this.specific = [...specific];
  }

  /** Adds a kind of destination (checked before the ones added earlier and the fallback). */
  add(transport: DestinationTransport): void {
    this.specific.unshift(transport);
  }

  for(destination: string): DestinationTransport {
    for (const t of this.specific) if (t.handles(destination)) return t;
    return this.fallback;
  }

  /** Whether `destination` is a valid name for the transport that would send to it. */
  isValidDestination(destination: string): boolean {
    return this.for(destination).isValidDestination(destination);
  }
}
