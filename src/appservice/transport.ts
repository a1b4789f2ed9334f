/**
 * Application services as a kind of destination of the sender's one queue (see
 * sender/transport.ts): destination `as:{id}`, events in the client format, the body
 * `{"events": [...]}`, sent as `PUT {url}/_matrix/app/v1/transactions/{txnId}` with
 * `Authorization: Bearer <hs_token>`. Everything else (order, one transaction in flight, the same
 * txnId and body on retry, backoff, crash safety, /queue, metrics) is the queue's.
 */
import { canonicalJson } from "../protocol/canonical-json.js";
import type { Pdu } from "../protocol/pdu.js";
import type { DestinationTransport, TransportResponse, TxnParts } from "../sender/transport.js";
import type { StoredTxn } from "../sender/outbound-store.js";
import type { AppserviceRegistry } from "./registry.js";
import { AppserviceRequestError, type AppserviceClient } from "./as-client.js";

const PREFIX = "as:";
const COMMA = Buffer.from(",");
const CLOSE = Buffer.from("]}");

/** Stripped state a bridge needs with an invite or knock (from the PDU's unsigned, when present). */
const UNSIGNED_PASSED_ON = ["invite_room_state", "knock_room_state"];

export class AppserviceTransport implements DestinationTransport {
  readonly kind = "appservice";

  constructor(
    private readonly registry: AppserviceRegistry,
    private readonly client: AppserviceClient,
  ) {}

  private registrationOf(destination: string) {
    return destination.startsWith(PREFIX) ? this.registry.get(destination.slice(PREFIX.length)) : undefined;
  }

  handles(destination: string): boolean {
    return this.registrationOf(destination) !== undefined;
  }

  isValidDestination(destination: string): boolean {
    return this.handles(destination);
  }

  /** The client event format (ClientEvent without `unsigned.age`, which would change the bytes on retry). */
  encodeEvent(pduJson: string, eventId: string): string {
    const pdu = JSON.parse(pduJson) as Pdu;
    const unsigned: Record<string, unknown> = {};
    const u = pdu.unsigned as Record<string, unknown> | undefined;
    for (const k of UNSIGNED_PASSED_ON) if (u && u[k] !== undefined) unsigned[k] = u[k];
    return canonicalJson({
      content: pdu.content,
      event_id: eventId,
      origin_server_ts: pdu.origin_server_ts,
      // A v12 create event has no room_id: the room ID is its event ID with `!`.
      room_id: typeof pdu.room_id === "string" ? pdu.room_id : `!${eventId.slice(1)}`,
      sender: pdu.sender,
      type: pdu.type,
      ...(typeof pdu.state_key === "string" ? { state_key: pdu.state_key } : {}),
      ...(typeof pdu.redacts === "string" ? { redacts: pdu.redacts } : {}),
      ...(Object.keys(unsigned).length ? { unsigned } : {}),
    });
  }

  encodeBody(parts: TxnParts): Buffer {
    // Canonical key order: "ephemeral" < "events". Ephemeral events are not pushed yet.
    const chunks: Buffer[] = [Buffer.from('{"events":[', "utf8")];
    parts.events.forEach((e, i) => {
      if (i > 0) chunks.push(COMMA);
      chunks.push(e);
    });
    chunks.push(CLOSE);
    return Buffer.concat(chunks);
  }

  async send(destination: string, txn: StoredTxn): Promise<TransportResponse> {
    const reg = this.registrationOf(destination);
    if (!reg) throw new Error(`${destination} is not a registered application service`);
    try {
      return await this.client.request(reg, "PUT", `/_matrix/app/v1/transactions/${encodeURIComponent(txn.txnId)}`, txn.body);
    } catch (e) {
      // Unreachable or timed out: the queue backs off and re-sends the same transaction.
      if (e instanceof AppserviceRequestError) throw new Error(e.message);
      throw e;
    }
  }

  eventErrors(): { eventId: string; error: string }[] {
    return [];
  }
}
