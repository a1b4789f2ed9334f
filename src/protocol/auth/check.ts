/**
 * The auth rules' entry point: `checkEventAuth` runs rules 1–11 (v12 numbering) in spec order
 * and delegates membership (rule 5) to members/ and power levels (rule 10) to
 * power-levels-rule.ts.
 */
import { getRoomVersion, type RoomVersion } from "../room-versions.js";
import { checkAuthEventsList } from "./auth-events.js";
import { checkMember } from "./members/index.js";
import { currentMembership } from "./membership.js";
import { namedLevel, powerLevelOf, requiredPowerLevel } from "./power-levels.js";
import { checkPowerLevels } from "./power-levels-rule.js";
import { ALLOW, deny } from "./rules.js";
import type { AuthCheckOptions, AuthResult, EventLike, StateLookup } from "./types.js";
import { contentOf, domainOf, fmt, isValidUserId } from "./util.js";

/**
 * Authorise `event` against `state` (the state the rules should see: the event's auth events,
 * the state before it, or current state — the caller picks, see auth-rules.md §5) under the
 * rules of `roomVersion`. Pure; never throws on malformed input (malformed ⇒ rejected).
 */
export function checkEventAuth(
  event: EventLike,
  roomVersion: RoomVersion,
  state: StateLookup,
  options: AuthCheckOptions = {},
): AuthResult {
  const rv = roomVersion;

  // Rule 1: the create event is judged on its own — it has no auth events and no prior state.
  if (event.type === "m.room.create") return checkCreate(event, rv);

  const create = state("m.room.create", "");
  const createId = options.createEventId ?? (typeof create?.event_id === "string" ? create.event_id : undefined);

  // Rule 2 (v12 only, MSC4291): the room ID is the create event's ID with `!` for `$`, so an
  // event is only in a room if its room_id names an accepted create event. "Accepted" is the
  // caller's guarantee (rejected events are never in a StateLookup).
  if (rv.roomIdIsCreateEventHash) {
    if (!create) return deny(rv, ["roomId"], "no m.room.create event for this room");
    if (createId === undefined) {
      return deny(rv, ["roomId"], "cannot verify room_id: the create event's ID is unknown (pass createEventId)");
    }
    if (typeof event.room_id !== "string" || event.room_id !== `!${createId.slice(1)}`) {
      return deny(rv, ["roomId"], `room_id ${String(event.room_id)} is not the ID of the room's create event ${createId}`);
    }
  }

  // Rule 3 (v12) / 2 (≤v11): the auth_events list itself.
  if (options.authEvents) {
    const r = checkAuthEventsList(event, options.authEvents, rv, options);
    if (!r.allowed) return r;
  }
  // Every later rule needs the create event (m.federate, creators, default power); ≤v11 this is
  // rule 2.4 "no m.room.create among the auth events".
  if (!create) return deny(rv, ["authEvents", "noCreate"], "no m.room.create event in the room state");

  // Rule 4 (v12) / 3 (≤v11): m.federate = false keeps the room on the creator's server.
  if (contentOf(create)["m.federate"] === false && domainOf(event.sender) !== domainOf(create.sender)) {
    return deny(rv, ["federate"], `room is not federated (m.federate: false) and ${event.sender} is not on ${String(domainOf(create.sender))}`);
  }

  // v1–v5 rule 4: m.room.aliases may only be set by the server named in its state_key.
  if (rv.aliasesAuthRule && event.type === "m.room.aliases") {
    if (typeof event.state_key !== "string") return deny(rv, ["aliases"], "m.room.aliases without a state_key");
    if (domainOf(event.sender) !== event.state_key) return deny(rv, ["aliases"], "m.room.aliases state_key is not the sender's server");
    return ALLOW;
  }

  const pl = state("m.room.power_levels", "");
  const plContent = pl ? contentOf(pl) : undefined;

  // Rule 5 (v12) / 4 (≤v11): membership.
  if (event.type === "m.room.member") return checkMember(event, rv, state, create, createId, plContent, options);

  const senderPower = powerLevelOf(event.sender, plContent, create, rv);

  // Rule 6 / 5: everything else needs a joined sender.
  const senderMembership = currentMembership(state, event.sender) ?? "leave";
  if (senderMembership !== "join") {
    return deny(rv, ["senderJoined"], `${event.sender} is not joined to the room (membership: ${senderMembership})`);
  }

  // Rule 7 / 6: third-party invite tokens need the invite level — and nothing else.
  if (event.type === "m.room.third_party_invite") {
    const invite = namedLevel("invite", plContent, rv);
    return senderPower >= invite
      ? ALLOW
      : deny(rv, ["thirdPartyInvite"], `${event.sender} has power ${fmt(senderPower)}, below the invite level ${invite}`);
  }

  // Rule 8 / 7: the event type's required power level. For v3+ redactions this is the whole
  // auth check: the redact level is applied later ("Handling redactions", canApplyRedaction).
  const isState = typeof event.state_key === "string";
  const required = requiredPowerLevel(event.type, isState, plContent, rv);
  if (required > senderPower) {
    return deny(rv, ["requiredPower"], `${event.type} needs power ${required}; ${event.sender} has ${fmt(senderPower)}`);
  }

  // Rule 9 / 8: a state key that names a user belongs to that user alone.
  if (isState && event.state_key!.startsWith("@") && event.state_key !== event.sender) {
    return deny(rv, ["stateKeyUser"], `state_key ${event.state_key} is a user ID other than the sender`);
  }

  // Rule 10 / 9: power-level changes.
  if (event.type === "m.room.power_levels") return checkPowerLevels(event, rv, create, plContent, senderPower);

  // v1–v2 rule 11: redactions need the redact level or the same event-ID domain.
  if (rv.redactionDomainAuthRule && event.type === "m.room.redaction") {
    if (senderPower >= namedLevel("redact", plContent, rv)) return ALLOW;
    const d = domainOf(event.redacts);
    if (d !== null && d === domainOf(event.event_id)) return ALLOW;
    return deny(rv, ["redaction", "otherwise"], "redaction needs the redact level or an event from the sender's server");
  }

  // Rule 11 / 10.
  return ALLOW;
}

/** Rule 1: m.room.create. */
function checkCreate(event: EventLike, rv: RoomVersion): AuthResult {
  const content = contentOf(event);
  // 1.1: the create event is the root of the DAG.
  if (Array.isArray(event.prev_events) && event.prev_events.length > 0) {
    return deny(rv, ["create", "prevEvents"], "m.room.create must not have prev_events");
  }
  if (rv.roomIdIsCreateEventHash) {
    // v12 1.2: the room ID is derived from this event's hash, so it cannot be inside it.
    if (event.room_id !== undefined) return deny(rv, ["create", "hasRoomId"], "a v12 m.room.create event must not have a room_id");
  } else {
    // v1–v11 1.2: a server may only create rooms in its own namespace.
    const rd = domainOf(event.room_id);
    if (rd === null || rd !== domainOf(event.sender)) {
      return deny(rv, ["create", "roomIdDomain"], `room_id ${String(event.room_id)} is not on the sender's server`);
    }
  }
  // 1.3: an unknown room_version would mean rules we cannot apply.
  if (content.room_version !== undefined && (typeof content.room_version !== "string" || !getRoomVersion(content.room_version))) {
    return deny(rv, ["create", "roomVersion"], `unrecognised room_version ${JSON.stringify(content.room_version)}`);
  }
  // v1–v10 1.4: creator is how those versions name the creator.
  if (rv.createHasCreator && content.creator === undefined) {
    return deny(rv, ["create", "creator"], "m.room.create content has no creator");
  }
  // v12 1.4 (MSC4289): additional_creators get infinite power, so they must be real user IDs.
  if (rv.privilegedCreators && content.additional_creators !== undefined) {
    const ac = content.additional_creators;
    if (!Array.isArray(ac) || !ac.every((u) => isValidUserId(u))) {
      return deny(rv, ["create", "additionalCreators"], "additional_creators must be an array of valid user IDs");
    }
  }
  return ALLOW;
}
