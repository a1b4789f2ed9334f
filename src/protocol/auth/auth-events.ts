/**
 * The auth-events selection algorithm (spec: Server-Server API "Auth events selection") and
 * rule 3 (v12) / 2 (≤v11), "Considering the event's auth_events".
 */
import type { RoomVersion } from "../room-versions.js";
import type { AuthCheckOptions, AuthResult, EventLike, EventSkeleton, StateKey, StateLookup } from "./types.js";
import { ALLOW, deny } from "./rules.js";
import { isObject } from "./util.js";

/**
 * Every `(type, state_key)` the auth-events selection algorithm may pick for this event,
 * whether or not it exists in the room (spec: Server-Server API "Auth events selection").
 * `m.room.create` events have no auth events.
 */
export function authEventKeys(event: EventSkeleton, roomVersion: RoomVersion): StateKey[] {
  if (event.type === "m.room.create") return [];
  const keys: StateKey[] = [];
  const add = (type: string, stateKey: string) => {
    if (!keys.some(([t, s]) => t === type && s === stateKey)) keys.push([type, stateKey]);
  };
  // v1–v11 always reference the create event; v12 MUST NOT (the room ID implies it, MSC4291).
  if (roomVersion.createEventInAuthEvents) add("m.room.create", "");
  add("m.room.power_levels", "");
  add("m.room.member", event.sender);
  if (event.type === "m.room.member" && typeof event.state_key === "string") {
    const content = isObject(event.content) ? event.content : {};
    const membership = content.membership;
    add("m.room.member", event.state_key);
    // join, invite and (v7+) knock are the memberships the join rule decides.
    if (membership === "join" || membership === "invite" || (membership === "knock" && roomVersion.knock)) {
      add("m.room.join_rules", "");
    }
    if (membership === "invite" && isObject(content.third_party_invite)) {
      const signed = content.third_party_invite.signed;
      if (isObject(signed) && typeof signed.token === "string") add("m.room.third_party_invite", signed.token);
    }
    const via = content.join_authorised_via_users_server;
    if (roomVersion.restrictedJoins && typeof via === "string") add("m.room.member", via);
  }
  return keys;
}

/** The auth events for a new event: the keys of `authEventKeys` that exist in `state`, in that order. */
export function selectAuthEvents(event: EventSkeleton, state: StateLookup, roomVersion: RoomVersion): StateKey[] {
  return authEventKeys(event, roomVersion).filter(([type, stateKey]) => state(type, stateKey) !== undefined);
}

/**
 * Rule 3 (v12) / 2 (v1–v11), "Considering the event's auth_events": no duplicate
 * `(type, state_key)`; nothing the selection algorithm would not pick (in v12 that includes the
 * create event); none rejected; (≤v11) a create event present; all in the event's room.
 */
export function checkAuthEventsList(
  event: EventLike,
  authEvents: readonly EventLike[],
  roomVersion: RoomVersion,
  options: Pick<AuthCheckOptions, "isRejected"> = {},
): AuthResult {
  const rv = roomVersion;
  const seen = new Set<string>();
  for (const ae of authEvents) {
    const k = `${ae.type}\u0000${String(ae.state_key)}`;
    if (seen.has(k)) return deny(rv, ["authEvents", "duplicate"], `auth_events lists (${ae.type}, ${JSON.stringify(ae.state_key)}) more than once`);
    seen.add(k);
  }
  const allowed = authEventKeys(event, rv);
  for (const ae of authEvents) {
    const ok = typeof ae.state_key === "string" && allowed.some(([t, s]) => t === ae.type && s === ae.state_key);
    if (!ok) {
      const why = ae.type === "m.room.create" && !rv.createEventInAuthEvents ? " (v12: the create event must not be in auth_events)" : "";
      return deny(rv, ["authEvents", "unexpected"], `auth_events contains (${ae.type}, ${JSON.stringify(ae.state_key)}), which the auth-events selection would not pick${why}`);
    }
  }
  if (options.isRejected) {
    for (const ae of authEvents) {
      if (options.isRejected(ae)) return deny(rv, ["authEvents", "rejected"], `auth event (${ae.type}, ${JSON.stringify(ae.state_key)}) was itself rejected`);
    }
  }
  if (rv.createEventInAuthEvents && !authEvents.some((ae) => ae.type === "m.room.create" && ae.state_key === "")) {
    return deny(rv, ["authEvents", "noCreate"], "auth_events has no m.room.create event");
  }
  for (const ae of authEvents) {
    if (ae.room_id !== event.room_id) {
      return deny(rv, ["authEvents", "otherRoom"], `auth event (${ae.type}, ${JSON.stringify(ae.state_key)}) belongs to room ${String(ae.room_id)}, not ${String(event.room_id)}`);
    }
  }
  return ALLOW;
}
