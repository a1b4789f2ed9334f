/**
 * Content hashes, reference hashes, event IDs (v3+) and v12 room IDs.
 * Spec: Server-Server API "Calculating the content hash for an event", "Calculating the reference
 * hash for an event"; room versions v3 ("Event IDs"), v4 (URL-safe IDs), v12 (room IDs).
 *
 * Everything is driven by RoomVersion records: `eventIdFormat` decides whether an ID is derived and
 * with which base64 alphabet, `roomIdIsCreateEventHash` whether the room ID comes from the create
 * event. All functions are pure and never mutate their input.
 */
import { hash } from "node:crypto";
import { canonicalJsonBytes } from "./canonical-json.js";
import { decodeBase64, encodeBase64, encodeBase64Url } from "./base64.js";
import type { RoomVersion } from "./room-versions.js";
import { redactEvent, type RedactOptions } from "./redaction.js";
import { isPlainObject, type EventReference } from "./pdu.js";

export class EventIdError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "EventIdError";
  }
}

/**
 * SHA-256 of `bytes` (the hashes of events and the reference hash are over canonical JSON bytes).
 * The one-shot `crypto.hash` (Node ≥ 20.12), not `createHash`: no Hash object per call, about
 * half the CPU for an event-sized input (two calls per inbound PDU; bench/README.md, inbound, 2026-12-05 late morning).
 */
export function sha256(bytes: Uint8Array): Buffer {
  return hash("sha256", bytes, "buffer");
}

/**
 * SHA-256 over the canonical JSON of the event without `unsigned`, `signatures` and `hashes`.
 * Every other key counts, including unknown ones and (v1–v2) `event_id`. Synapse additionally
 * drops legacy `age_ts`/`outlier`/`destinations`; the spec does not, and a conforming sender never
 * emits them, so they are hashed here like any other key.
 */
export function contentHashBytes(event: Record<string, unknown>): Buffer {
  return sha256(contentHashInput(event));
}

/**
 * What the content hash hashes: the canonical JSON bytes of the event without `unsigned`,
 * `signatures` and `hashes`. The inbound verifier encodes it once for the size limit (ids.ts
 * pduByteLengthFromContent) and the hash check.
 */
export function contentHashInput(event: Record<string, unknown>): Buffer {
  const { unsigned: _u, signatures: _s, hashes: _h, ...rest } = event;
  return canonicalJsonBytes(rest);
}

/** Unpadded standard base64 of the content hash, the value of `hashes.sha256`. */
export function computeContentHash(event: Record<string, unknown>): string {
  return encodeBase64(contentHashBytes(event));
}

/** A copy of the event with `hashes.sha256` set to its content hash (other hash algorithms kept). */
export function withContentHash<T extends Record<string, unknown>>(event: T): T & { hashes: { sha256: string } } {
  const existing = isPlainObject(event.hashes) ? (event.hashes as Record<string, string>) : {};
  return { ...event, hashes: { ...existing, sha256: computeContentHash(event) } };
}

/**
 * True when `hashes.sha256` matches the event's content. Compares decoded bytes, so a padded
 * base64 hash from a lenient sender still matches. False when the hash is missing or not base64.
 * `input`: the event's contentHashInput when the caller has it already.
 */
export function checkContentHash(event: Record<string, unknown>, input?: Buffer): boolean {
  const hashes = event.hashes;
  if (!isPlainObject(hashes) || typeof hashes.sha256 !== "string") return false;
  const claimed = decodeBase64(hashes.sha256);
  return claimed !== null && claimed.equals(sha256(input ?? contentHashInput(event)));
}

/**
 * The reference hash: SHA-256 of the canonical JSON of the *redacted* event without
 * `signatures` and `unsigned`. Redaction keeps `hashes`, so the hash still commits to the full
 * content; dropping `signatures` means co-signing never changes an event's ID.
 */
export function referenceHash(event: Record<string, unknown>, roomVersion: RoomVersion, options?: RedactOptions): Buffer {
  const { signatures: _s, unsigned: _u, ...rest } = redactEvent(event, roomVersion, options);
  return sha256(canonicalJsonBytes(rest));
}

/**
 * The event ID a v3+ event has by construction (`$` + base64 of the reference hash; standard
 * alphabet in v3, URL-safe from v4). Throws EventIdError for v1–v2, where IDs are server-chosen.
 * Any `event_id` field on the event is ignored here: it is not the event's ID in v3+ (and,
 * being on the redaction keep-list, it changes the hash; see digest discrepancy 19).
 */
export function computeEventId(event: Record<string, unknown>, roomVersion: RoomVersion, options?: RedactOptions): string {
  if (roomVersion.eventIdFormat === "server-chosen") throw serverChosen(roomVersion);
  return eventIdOfReferenceHash(referenceHash(event, roomVersion, options), roomVersion);
}

/** A v3+ event ID from its reference hash (a caller that has the hash's input already). */
export function eventIdOfReferenceHash(hash: Buffer, roomVersion: RoomVersion): string {
  switch (roomVersion.eventIdFormat) {
    case "reference-hash-base64":
      return "$" + encodeBase64(hash);
    case "reference-hash-base64url":
      return "$" + encodeBase64Url(hash);
    case "server-chosen":
      throw serverChosen(roomVersion);
  }
}

function serverChosen(roomVersion: RoomVersion): EventIdError {
  return new EventIdError(`room version ${roomVersion.id} event IDs are chosen by the origin server, not derived`);
}

/**
 * The ID of an event in any room version: derived in v3+, the `event_id` field in v1–v2
 * (throws EventIdError when that field is missing or not a string).
 */
export function eventIdOf(event: Record<string, unknown>, roomVersion: RoomVersion, options?: RedactOptions): string {
  if (roomVersion.eventIdFormat !== "server-chosen") return computeEventId(event, roomVersion, options);
  if (typeof event.event_id !== "string") throw new EventIdError(`room version ${roomVersion.id} event has no event_id`);
  return event.event_id;
}

/**
 * How a later event refers to this one in `prev_events` / `auth_events`: the ID in v3+, and in
 * v1–v2 the pair `[event_id, {"sha256": reference hash}]`.
 */
export function eventReferenceOf(event: Record<string, unknown>, roomVersion: RoomVersion): EventReference {
  if (roomVersion.eventRefsAreIds) return computeEventId(event, roomVersion);
  return [eventIdOf(event, roomVersion), { sha256: encodeBase64(referenceHash(event, roomVersion)) }];
}

/**
 * v12 (MSC4291): the room ID is the create event's ID with `!` in place of `$`, no `:domain`.
 * Throws for versions whose room IDs are not derived, and for non-create events.
 */
export function roomIdFromCreateEvent(createEvent: Record<string, unknown>, roomVersion: RoomVersion): string {
  if (!roomVersion.roomIdIsCreateEventHash)
    throw new EventIdError(`room version ${roomVersion.id} room IDs are not derived from the create event`);
  if (createEvent.type !== "m.room.create" || createEvent.state_key !== "")
    throw new EventIdError("not an m.room.create event with an empty state_key");
  return "!" + computeEventId(createEvent, roomVersion).slice(1);
}
