/**
 * Redactions of hosted rooms' events.
 *
 * Accepted `m.room.redaction` events (local, or remote through /send) are recorded against the
 * event they redact in the same Lua script that persists them (RoomStore, `redactions` hash),
 * with whether their sender had the redact level then. Every read that serves stored events
 * (federation reads, admin reads, the client use case) passes them through `apply`, which returns
 * the redacted copy (redaction.ts, the room version's algorithm) for events a valid redaction
 * targets (redaction-rules.ts). Redacted copies keep `hashes` and `signatures`: the signature
 * covers the redacted form, so other servers can still verify it; the content hash no longer
 * matches, which tells them the event was redacted.
 *
 * The original JSON stays stored and the redaction is applied at read time. Synapse also keeps
 * originals, for `redaction_retention_period` (7 days by default), then overwrites them with the
 * redacted copy. Gatehouse has no such pruning yet: originals are kept until the room's keys are
 * deleted (documented in the README). Applying at read time also means every replica and every
 * process-local event cache serves the redaction at once, with no cache invalidation. State reads
 * (auth rules, current state, state resolution) see redacted copies too (RoomStore.getStateEvents);
 * the current state cache is read again when a redaction of a current state event is persisted.
 */
import { senderHasRedactLevel } from "../protocol/redaction-rules.js";
import { forbidden, notFound } from "../protocol/errors.js";
import type { Pdu } from "../protocol/pdu.js";
import type { RoomVersion } from "../protocol/room-versions.js";
import type { RoomStore } from "../store/room-store.js";
import { stateLookup, type PersistedEvent, type RoomContext } from "./room-service.js";

export interface StoredEvent {
  eventId: string;
  pdu: Pdu;
}

export interface ServedEvent extends StoredEvent {
  /** Set when a redaction applies: the redaction event (the first valid one, as Synapse picks). */
  redactedBy?: StoredEvent;
}

/** The events with every valid recorded redaction applied (same order). Two round trips at most. */
export async function applyRedactions(store: RoomStore, roomId: string, version: RoomVersion, events: readonly StoredEvent[]): Promise<ServedEvent[]> {
  return store.withRedactions(roomId, version, events);
}

/**
 * A local user redacts an event (admin API). Like Synapse's client API: the event must be in
 * the room, `m.room.create` and `m.room.server_acl` events cannot be redacted, and a user
 * without the redact level may only redact their own events.
 */
export async function redactLocally(ctx: RoomContext, roomId: string, input: { sender: string; eventId: string; reason?: string }): Promise<PersistedEvent> {
  const { rooms, store } = ctx;
  const snap = await rooms.snapshot(roomId);
  const target = await store.getEvent(roomId, input.eventId);
  if (!target) throw notFound(`Event ${input.eventId} not found in ${roomId}`);
  if (target.type === "m.room.create") throw forbidden("Redacting create events is not permitted");
  if (target.type === "m.room.server_acl") throw forbidden("Redacting server ACL events is not permitted");
  if (target.sender !== input.sender && !senderHasRedactLevel(input.sender, stateLookup(snap.state), snap.version)) {
    throw forbidden(`${input.sender} may only redact their own events (the redact level is needed for others')`);
  }
  return rooms.sendLocalEvent(roomId, {
    type: "m.room.redaction",
    sender: input.sender,
    content: input.reason !== undefined ? { reason: input.reason } : {},
    redacts: input.eventId,
  });
}
