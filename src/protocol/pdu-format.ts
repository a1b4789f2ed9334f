/**
 * "Valid format for the room version" (first of the checks on receipt of a PDU): field presence
 * and types, reference shapes, list lengths and size limits. Returns the first problem as a
 * MatrixError (400 M_BAD_JSON or 413 M_TOO_LARGE) or null. Signatures and hashes are checked
 * elsewhere; this only decides whether the object is a PDU at all.
 */
import { badJson, type MatrixError } from "./errors.js";
import { checkPduLimits, isValidUserId, parseRoomId, parseEventId } from "./ids.js";
import { isPlainObject, referencedEventIds } from "./pdu.js";
import type { RoomVersion } from "./room-versions.js";
import { MAX_SAFE_INT } from "./canonical-json.js";
import { exceedsNesting, MAX_EVENT_NESTING } from "./json-nesting.js";

export const MAX_PREV_EVENTS = 20;
export const MAX_AUTH_EVENTS = 10;

/** `contentBytes`: the byte length of the PDU's content-hash input, when the caller has encoded it (ids.ts checkPduSize). */
export function validatePduFormat(pdu: unknown, version: RoomVersion, contentBytes?: number): MatrixError | null {
  if (!isPlainObject(pdu)) return badJson("PDU must be a JSON object");
  const limits = checkPduLimits(pdu, contentBytes);
  if (limits) return limits;
  if (typeof pdu.type !== "string" || pdu.type === "") return badJson("PDU type must be a non-empty string");
  if (typeof pdu.sender !== "string" || !isValidUserId(pdu.sender)) return badJson("PDU sender must be a user ID");
  if (!isPlainObject(pdu.content)) return badJson("PDU content must be an object");
  if (pdu.state_key !== undefined && typeof pdu.state_key !== "string") return badJson("state_key must be a string");
  const v12Create = version.roomIdIsCreateEventHash && pdu.type === "m.room.create" && pdu.state_key === "";
  if (v12Create) {
    if (pdu.room_id !== undefined) return badJson("a v12 m.room.create event must not have a room_id");
  } else if (typeof pdu.room_id !== "string" || !parseRoomId(pdu.room_id)) {
    return badJson("PDU room_id must be a room ID");
  }
  if (!Number.isSafeInteger(pdu.origin_server_ts)) return badJson("origin_server_ts must be an integer");
  if (!Number.isSafeInteger(pdu.depth) || (pdu.depth as number) < 0 || (pdu.depth as number) > MAX_SAFE_INT)
    return badJson("depth must be a non-negative integer");
  const prev = referencedEventIds(pdu.prev_events, version);
  if (!prev) return badJson(`prev_events has the wrong shape for room version ${version.id}`);
  if (prev.length > MAX_PREV_EVENTS) return badJson(`prev_events has more than ${MAX_PREV_EVENTS} entries`);
  const auth = referencedEventIds(pdu.auth_events, version);
  if (!auth) return badJson(`auth_events has the wrong shape for room version ${version.id}`);
  if (auth.length > MAX_AUTH_EVENTS) return badJson(`auth_events has more than ${MAX_AUTH_EVENTS} entries`);
  for (const id of [...prev, ...auth]) if (!parseEventId(id, version)) return badJson(`${id} is not an event ID for room version ${version.id}`);
  if (!isPlainObject(pdu.hashes) || typeof pdu.hashes.sha256 !== "string") return badJson("hashes.sha256 is missing");
  if (!isPlainObject(pdu.signatures)) return badJson("signatures is missing");
  if (pdu.unsigned !== undefined && !isPlainObject(pdu.unsigned)) return badJson("unsigned must be an object");
  if (pdu.type === "m.room.member" && (typeof pdu.state_key !== "string" || typeof pdu.content.membership !== "string"))
    return badJson("m.room.member events need a state_key and content.membership");
  return null;
}

/**
 * Nesting limit for events Gatehouse decides on itself (json-nesting.ts explains the number):
 * knocks, joins and leaves it is asked to accept, and events it creates. Never applied to PDUs
 * that other servers relay in /send, which the spec's rules alone judge.
 */
export function checkEventNesting(event: unknown): MatrixError | null {
  return exceedsNesting(event, MAX_EVENT_NESTING) ? badJson(`Event nests deeper than ${MAX_EVENT_NESTING} levels of objects and arrays`) : null;
}
