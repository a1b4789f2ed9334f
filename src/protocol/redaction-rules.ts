/**
 * When an `m.room.redaction` takes effect (the redaction *algorithm* itself is redaction.ts).
 *
 * Spec, room versions: v1–v2 authorise redactions in auth rule 11 (the redact level, or the same
 * event-ID domain as the redacted event); from v3 the auth rules accept every redaction the
 * sender may send, and "Handling redactions" says the server *applies* it only when
 *   1. the redaction's sender has the redact level, or
 *   2. the redaction's sender is on the same server as the redacted event's sender,
 * once both events are known. Where the target is `redacts` moved in v11: top level in v1–v10,
 * `content.redacts` from v11 (MSC2174).
 *
 * Like Synapse (`_maybe_redact_event_row`): redactions of `m.room.create` are ignored, and a
 * redaction only applies to an event of its own room. The redact level is judged against the
 * state the redaction was accepted in (Synapse: its auth events), and recorded with it, because
 * the target may arrive later.
 */
import { namedLevel, powerLevelOf, type StateLookup } from "./auth/index.js";
import { serverOfUserId } from "./ids.js";
import type { RoomVersion } from "./room-versions.js";

interface EventFields {
  type: string;
  sender: string;
  room_id?: string;
  content?: Record<string, unknown>;
  redacts?: unknown;
}

/** The event a redaction redacts (undefined when the field is missing or not a string). */
export function redactionTarget(event: EventFields, roomVersion: RoomVersion): string | undefined {
  const target = roomVersion.redactsInContent ? event.content?.redacts : event.redacts;
  return typeof target === "string" ? target : undefined;
}

/** Whether `sender` has the redact level in `state` (the state the redaction is accepted in). */
export function senderHasRedactLevel(sender: string, state: StateLookup, roomVersion: RoomVersion): boolean {
  const pl = state("m.room.power_levels", "")?.content;
  return powerLevelOf(sender, pl, state("m.room.create", ""), roomVersion) >= namedLevel("redact", pl, roomVersion);
}

/**
 * What to record with an accepted event: for an `m.room.redaction` with a target, the target and
 * whether its sender has the redact level in `state` (the state it is accepted in); else undefined.
 */
export function redactionRecordOf(
  event: EventFields & { state_key?: unknown },
  state: StateLookup,
  roomVersion: RoomVersion,
): { target: string; senderHasRedactLevel: boolean } | undefined {
  if (event.type !== "m.room.redaction" || event.state_key !== undefined) return undefined;
  const target = redactionTarget(event, roomVersion);
  if (target === undefined) return undefined;
  return { target, senderHasRedactLevel: senderHasRedactLevel(event.sender, state, roomVersion) };
}

export type RedactionVerdict = { applies: true; why: string } | { applies: false; why: string };

/**
 * Does an accepted redaction apply to `target`? `redactLevel` is what senderHasRedactLevel said
 * when the redaction was accepted.
 */
export function redactionApplies(redaction: EventFields, target: EventFields, redactLevel: boolean, roomVersion: RoomVersion): RedactionVerdict {
  if (target.type === "m.room.create") return { applies: false, why: "redactions of m.room.create are ignored (as Synapse does)" };
  if (redaction.room_id !== undefined && target.room_id !== undefined && redaction.room_id !== target.room_id) {
    return { applies: false, why: "the redaction is in another room" };
  }
  if (roomVersion.eventIdFormat === "server-chosen") return { applies: true, why: "v1–v2: auth rule 11 authorised it (redact level or same event-ID domain)" };
  if (redactLevel) return { applies: true, why: "the sender had the redact level" };
  const a = serverOfUserId(redaction.sender);
  if (a !== undefined && a === serverOfUserId(target.sender)) return { applies: true, why: "the sender is on the redacted event's sender's server" };
  return { applies: false, why: "the sender has neither the redact level nor the redacted event's sender's server" };
}
