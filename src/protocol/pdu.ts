/**
 * The PDU (persistent data unit) shape shared by room versions 1–12, and helpers for the one
 * structural difference that hashing code must care about: how `prev_events` / `auth_events`
 * refer to other events. v1–v2 use `[event_id, {"sha256": reference hash}]` pairs because their
 * event IDs are opaque; v3+ use bare event IDs because the ID *is* the reference hash.
 *
 * Pure data: no hashing or signing here (see event-hashing.ts / event-signing.ts).
 */
import type { RoomVersion } from "./room-versions.js";
import type { Signatures } from "./json-signing.js";

/** v1–v2 event reference: the event ID plus the referenced event's reference hash(es). */
export type EventIdPair = [eventId: string, hashes: { sha256: string; [algorithm: string]: string }];
export type EventReference = string | EventIdPair;

/**
 * A PDU as it travels over federation. The index signature is deliberate: PDUs carry fields this
 * code does not model (legacy `origin`, `prev_state`, future additions) and every one of them
 * must survive hashing and signing untouched, since the content hash covers them.
 */
export interface Pdu {
  type: string;
  sender: string;
  /** Absent only on a v12 `m.room.create` event, whose ID defines the room ID. */
  room_id?: string;
  state_key?: string;
  content: Record<string, unknown>;
  origin_server_ts: number;
  depth: number;
  prev_events: EventReference[];
  auth_events: EventReference[];
  hashes?: { sha256: string; [algorithm: string]: string };
  signatures?: Signatures;
  unsigned?: Record<string, unknown>;
  /** v1–v2 only: the server-chosen event ID. Must be absent in v3+ (it would change the reference hash). */
  event_id?: string;
  /** v1–v10 `m.room.redaction` target; v11+ moved it into `content.redacts`. */
  redacts?: string;
  [key: string]: unknown;
}

function isEventIdPair(value: unknown): value is EventIdPair {
  if (!Array.isArray(value) || value.length !== 2) return false;
  const [id, hashes] = value as [unknown, unknown];
  if (typeof id !== "string" || typeof hashes !== "object" || hashes === null || Array.isArray(hashes)) return false;
  return typeof (hashes as Record<string, unknown>).sha256 === "string";
}

/**
 * The event IDs that a `prev_events` / `auth_events` value refers to, or null when the value does
 * not have the shape the room version requires (a v3+ room must not contain pairs, and vice versa).
 */
export function referencedEventIds(refs: unknown, roomVersion: RoomVersion): string[] | null {
  if (!Array.isArray(refs)) return null;
  const ids: string[] = [];
  for (const ref of refs as unknown[]) {
    if (roomVersion.eventRefsAreIds) {
      if (typeof ref !== "string") return null;
      ids.push(ref);
    } else {
      if (!isEventIdPair(ref)) return null;
      ids.push(ref[0]);
    }
  }
  return ids;
}

export function isValidEventReferences(refs: unknown, roomVersion: RoomVersion): refs is EventReference[] {
  return referencedEventIds(refs, roomVersion) !== null;
}

/**
 * The server name in a user ID, room ID (pre-v12) or v1–v2 event ID: everything after the first
 * colon. Server names may carry a port (`localhost:8008`), so splitting on the last colon would
 * be wrong. Returns null when there is no colon or nothing after it.
 */
export function serverNameOf(id: string): string | null {
  const colon = id.indexOf(":");
  if (colon < 0 || colon === id.length - 1) return null;
  return id.slice(colon + 1);
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
