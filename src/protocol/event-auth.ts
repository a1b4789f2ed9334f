/**
 * The Matrix authorization rules ("auth rules") as a pure function, for room versions 1–12
 * (7–12 are the ones Gatehouse hosts; 1–6 are covered where it costs a few lines), plus the
 * auth-events selection algorithm and the power-level / membership helpers handlers need.
 *
 * Spec: Room Versions v1…v12 "Authorization rules"; Server-Server API "Auth events selection",
 * "Checks performed on receipt of a PDU"; `m.room.power_levels` / `m.room.member` schemas.
 *
 * Rule numbers: comments cite the v12 numbering and the v8–v11 numbering ("v12 5.7.1 / v8–v11
 * 4.7.1") because v12 inserted rule 2 and shifted everything after it. Rejections carry `rule`,
 * the number *as written for the room version being checked*, computed from the same capability
 * flags that switch the rules on (see `ruleNumber`).
 *
 * What this module does NOT do (by design — the caller owns I/O and cryptography):
 *   - signature checks: the event's own signatures, `join_authorised_via_users_server` (rule 5.2)
 *     and third-party-invite `signed` blocks (rule 5.4.1.7) are delegated to callbacks in
 *     `AuthCheckOptions`; without a callback those rules fail closed;
 *   - event format / hash checks (pdu.ts, event-hashing.ts);
 *   - deciding which state to check against (auth_events, state before the event, current
 *     state): pass the matching `StateLookup` (see `stateLookupFromEvents`).
 */
import { parseUserId } from "./ids.js";
import { getRoomVersion, type RoomVersion } from "./room-versions.js";

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/**
 * The parts of a PDU the auth rules read. Loose on purpose: a full `Pdu`, a stored event or a
 * half-built template all fit. Unknown fields are ignored.
 */
export interface EventLike {
  type: string;
  sender: string;
  state_key?: string;
  content?: Record<string, unknown>;
  /** Absent on a v12 `m.room.create` event. */
  room_id?: string;
  /** Only needed where a rule compares event IDs (v1–v2 redactions, creator's first join) — v3+ PDUs carry none, so callers may attach it. */
  event_id?: string;
  /** v3+: event IDs; v1–v2: `[event_id, hashes]` pairs. Both are accepted. */
  prev_events?: readonly unknown[];
  auth_events?: readonly unknown[];
  /** v1–v10 `m.room.redaction` target. */
  redacts?: string;
  [key: string]: unknown;
}

/** What the auth-events selection needs: an event being built, before prev/auth events exist. */
export type EventSkeleton = Pick<EventLike, "type" | "sender" | "state_key" | "content">;

/** The room state to authorise against: `(type, state_key)` → the event, or undefined. */
export type StateLookup = (type: string, stateKey: string) => EventLike | undefined;

/** A `(type, state_key)` key of room state. */
export type StateKey = readonly [type: string, stateKey: string];

export type AuthResult =
  | { readonly allowed: true }
  | {
      readonly allowed: false;
      /** Human-readable; ends with the room version and the rule number, safe to put in a 403 `error`. */
      readonly reason: string;
      /** The rejecting rule's number as written in this room version's spec text, e.g. "5.7.3" (v12) / "4.7.3" (v8–v11). */
      readonly rule: string;
    };

export interface AuthCheckOptions {
  /**
   * The event ID of the room's `m.room.create` event, when it is not on the create event as
   * `event_id` (v3+ PDUs carry no ID; callers usually know it from storage). Needed for v12
   * rule 2 (the room ID must be the create event's ID) and for the creator's first join
   * ("the only previous event is an `m.room.create`").
   */
  createEventId?: string;
  /**
   * The event's `auth_events`, resolved to events. When given, rule 3 (v12) / 2 (≤v11) runs
   * here in spec order via `checkAuthEventsList`; when omitted the caller has run it already.
   */
  authEvents?: readonly EventLike[];
  /** Rule 3.3: was this auth event itself rejected? Default: none are. */
  isRejected?: (event: EventLike) => boolean;
  /**
   * Rule 5.2 (v8+): is `event` validly signed by the homeserver of `authorisingUser` (the
   * `join_authorised_via_users_server` value)? Without this callback any event carrying that
   * key is rejected, because the rule cannot be evaluated.
   */
  verifyJoinAuthorisedVia?: (event: EventLike, authorisingUser: string) => boolean;
  /**
   * Rule 5.4.1.7: does any signature in a third-party invite's `signed` object verify with any
   * of `publicKeys` (unpadded base64 ed25519 keys from the `m.room.third_party_invite` event)?
   * Without this callback third-party invites are rejected as unsupported.
   */
  verifyThirdPartyInvite?: (signed: Record<string, unknown>, publicKeys: readonly string[]) => boolean;
}

export type Membership = "join" | "invite" | "leave" | "ban" | "knock";

// ---------------------------------------------------------------------------------------------
// Power-level defaults (spec: `m.room.power_levels` schema)
// ---------------------------------------------------------------------------------------------

/** Defaults for keys absent from an existing `m.room.power_levels` event. */
export const DEFAULT_POWER_LEVELS = Object.freeze({
  ban: 50,
  kick: 50,
  redact: 50,
  invite: 0,
  state_default: 50,
  events_default: 0,
  users_default: 0,
  /** `notifications.room`. */
  notifications_room: 50,
});

/**
 * Defaults when the room has no `m.room.power_levels` event at all: the creator has 100
 * (v1–v11; v12 creators are infinite instead) and everyone else 0. Every other level keeps its
 * ordinary default — the `m.room.power_levels` schema says so explicitly for `state_default`
 * (50), `events_default` (0), ban/kick/redact (50) and invite (0) — so until power levels
 * exist only the creator can send state, kick or ban.
 */
export const NO_POWER_LEVELS_EVENT_DEFAULTS = Object.freeze({
  state_default: 50,
  events_default: 0,
  users_default: 0,
  creator: 100,
});

export type NamedLevel = "ban" | "kick" | "redact" | "invite";

// ---------------------------------------------------------------------------------------------
// Small pure helpers
// ---------------------------------------------------------------------------------------------

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function contentOf(ev: EventLike | undefined): Record<string, unknown> {
  return ev && isObject(ev.content) ? ev.content : {};
}

/** The server part of a user/room/event ID (`@a:example.org:8448` → `example.org:8448`), or null. */
function domainOf(id: unknown): string | null {
  if (typeof id !== "string") return null;
  const i = id.indexOf(":");
  return i < 1 || i === id.length - 1 ? null : id.slice(i + 1);
}

/**
 * User IDs as the auth rules accept them (additional_creators, power-level `users` keys,
 * join_authorised_via_users_server): the ids.ts parser with printable-ASCII localparts, which is
 * what every server that ever existed has minted.
 */
export function isValidUserId(id: unknown): id is string {
  return typeof id === "string" && /^@[\x21-\x39\x3B-\x7E]+:/.test(id) && parseUserId(id) !== null;
}

/** Event IDs out of a `prev_events` value in either format (v1–v2 pairs or v3+ strings). */
function refIds(refs: readonly unknown[] | undefined): string[] {
  if (!Array.isArray(refs)) return [];
  return refs.map((r) => (Array.isArray(r) ? r[0] : r)).filter((x): x is string => typeof x === "string");
}

/** A `StateLookup` over a list of state events (later entries win). Use it to check an event against its own `auth_events` (in v12 add the create event yourself). */
export function stateLookupFromEvents(events: Iterable<EventLike>): StateLookup {
  const map = new Map<string, EventLike>();
  for (const ev of events) if (typeof ev.state_key === "string") map.set(`${ev.type}\u0000${ev.state_key}`, ev);
  return (type, stateKey) => map.get(`${type}\u0000${stateKey}`);
}

// ---------------------------------------------------------------------------------------------
// Membership helpers
// ---------------------------------------------------------------------------------------------

/** `content.membership` of a member event, or undefined. */
export function membershipOf(event: EventLike | undefined): string | undefined {
  const m = contentOf(event).membership;
  return typeof m === "string" ? m : undefined;
}

/**
 * The user's current membership in `state`, or undefined when the user has no member event.
 * The auth rules treat "no member event" exactly like `leave`.
 */
export function currentMembership(state: StateLookup, userId: string): string | undefined {
  return membershipOf(state("m.room.member", userId));
}

/**
 * The room's effective join rule. With no `m.room.join_rules` event the rules never match
 * `public`/`knock`; we follow Synapse and ruma in treating that as `invite` (so an invited user
 * can still join), see discrepancies.md #23.
 */
export function joinRuleOf(state: StateLookup): string {
  const jr = contentOf(state("m.room.join_rules", "")).join_rule;
  return typeof jr === "string" ? jr : "invite";
}

/** Does this room version let a user knock under `joinRule`? (v7+ `knock`; v10+ also `knock_restricted`.) */
export function joinRuleAllowsKnock(joinRule: string, roomVersion: RoomVersion): boolean {
  return (roomVersion.knock && joinRule === "knock") || (roomVersion.knockRestricted && joinRule === "knock_restricted");
}

// ---------------------------------------------------------------------------------------------
// Creators and power levels
// ---------------------------------------------------------------------------------------------

/**
 * The room's creators. v12 (MSC4289): the create `sender` plus valid `additional_creators`;
 * v11 (MSC2175): the create `sender`; v1–v10: `content.creator`.
 */
export function roomCreators(createEvent: EventLike | undefined, roomVersion: RoomVersion): string[] {
  if (!createEvent) return [];
  if (roomVersion.createHasCreator) {
    const c = contentOf(createEvent).creator;
    return typeof c === "string" ? [c] : [];
  }
  const out = [createEvent.sender];
  if (roomVersion.privilegedCreators) {
    const extra = contentOf(createEvent).additional_creators;
    if (Array.isArray(extra)) for (const u of extra) if (isValidUserId(u) && !out.includes(u)) out.push(u);
  }
  return out;
}

/** v12: is `userId` a room creator (and so of infinite power)? Always false before v12. */
export function isPrivilegedCreator(userId: string, createEvent: EventLike | undefined, roomVersion: RoomVersion): boolean {
  return roomVersion.privilegedCreators && roomCreators(createEvent, roomVersion).includes(userId);
}

/**
 * A power level value as the room version reads it: v10+ (MSC3667) only integers; v1–v9 also
 * strings holding an integer ("stringy power levels", parsed like Python's int()). Anything
 * else is unreadable (undefined) and callers fall back to the default.
 */
export function parsePowerLevel(value: unknown, roomVersion: RoomVersion): number | undefined {
  if (typeof value === "number") return Number.isSafeInteger(value) ? value : undefined;
  if (!roomVersion.integerPowerLevels && typeof value === "string" && /^\s*[+-]?\d+\s*$/.test(value)) {
    const n = Number(value.trim());
    return Number.isSafeInteger(n) ? n : undefined;
  }
  return undefined;
}

/**
 * A user's power level. v12 creators: Infinity, whatever the power-levels event says. Otherwise
 * `users[userId]`, else `users_default`, else 0; with no power-levels event, the creator has
 * 100 (v1–v11) and everyone else 0.
 */
export function powerLevelOf(
  userId: string,
  powerLevelsContent: Record<string, unknown> | undefined,
  createEvent: EventLike | undefined,
  roomVersion: RoomVersion,
): number {
  if (isPrivilegedCreator(userId, createEvent, roomVersion)) return Infinity;
  if (powerLevelsContent) {
    const users = powerLevelsContent.users;
    if (isObject(users) && Object.hasOwn(users, userId)) {
      const v = parsePowerLevel(users[userId], roomVersion);
      if (v !== undefined) return v;
    }
    return parsePowerLevel(powerLevelsContent.users_default, roomVersion) ?? DEFAULT_POWER_LEVELS.users_default;
  }
  if (!roomVersion.privilegedCreators && roomCreators(createEvent, roomVersion).includes(userId)) {
    return NO_POWER_LEVELS_EVENT_DEFAULTS.creator;
  }
  return NO_POWER_LEVELS_EVENT_DEFAULTS.users_default;
}

/** The ban / kick / redact / invite level (defaults 50 / 50 / 50 / 0, also when there is no power-levels event). */
export function namedLevel(
  name: NamedLevel,
  powerLevelsContent: Record<string, unknown> | undefined,
  roomVersion: RoomVersion,
): number {
  return parsePowerLevel(powerLevelsContent?.[name], roomVersion) ?? DEFAULT_POWER_LEVELS[name];
}

/**
 * The *required power level* to send an event of `eventType` (rule 8 v12 / 7 ≤v11):
 * `events[eventType]`, else `state_default` (state events, 50) / `events_default` (0) — the
 * same defaults whether or not a power-levels event exists (spec `m.room.power_levels`).
 */
export function requiredPowerLevel(
  eventType: string,
  isState: boolean,
  powerLevelsContent: Record<string, unknown> | undefined,
  roomVersion: RoomVersion,
): number {
  if (!powerLevelsContent) {
    return isState ? NO_POWER_LEVELS_EVENT_DEFAULTS.state_default : NO_POWER_LEVELS_EVENT_DEFAULTS.events_default;
  }
  const events = powerLevelsContent.events;
  if (isObject(events) && Object.hasOwn(events, eventType)) {
    const v = parsePowerLevel(events[eventType], roomVersion);
    if (v !== undefined) return v;
  }
  return isState
    ? (parsePowerLevel(powerLevelsContent.state_default, roomVersion) ?? DEFAULT_POWER_LEVELS.state_default)
    : (parsePowerLevel(powerLevelsContent.events_default, roomVersion) ?? DEFAULT_POWER_LEVELS.events_default);
}

/** Is `userId`'s power level enough to send state of `eventType`? (Power only: membership and rule 9's `@` state keys are not considered.) */
export function canSendState(
  userId: string,
  eventType: string,
  powerLevelsContent: Record<string, unknown> | undefined,
  createEvent: EventLike | undefined,
  roomVersion: RoomVersion,
): boolean {
  return (
    powerLevelOf(userId, powerLevelsContent, createEvent, roomVersion) >=
    requiredPowerLevel(eventType, true, powerLevelsContent, roomVersion)
  );
}

/**
 * v3+ "Handling redactions": the redaction event passed the auth rules (which do not look at
 * the redact level), but the server applies it to the target only if the sender has the
 * redact level or is on the same server as the target's sender. Pure helper for that check.
 */
export function canApplyRedaction(
  redaction: EventLike,
  target: EventLike,
  state: StateLookup,
  roomVersion: RoomVersion,
): boolean {
  if (domainOf(redaction.sender) !== null && domainOf(redaction.sender) === domainOf(target.sender)) return true;
  const pl = state("m.room.power_levels", "");
  const create = state("m.room.create", "");
  return powerLevelOf(redaction.sender, pl && contentOf(pl), create, roomVersion) >= namedLevel("redact", pl && contentOf(pl), roomVersion);
}

// ---------------------------------------------------------------------------------------------
// Rule numbering per room version
// ---------------------------------------------------------------------------------------------

/** v1–v5 special-case `m.room.aliases`; v6 (MSC2432) dropped the rule together with its redaction exemption, which is the flag we read. */
const hasAliasesRule = (rv: RoomVersion) => rv.redaction.keepAliases;
/** v1–v2 special-case `m.room.redaction` by comparing event-ID domains; only server-chosen IDs have domains (v3 removed the rule). */
const hasRedactionRule = (rv: RoomVersion) => rv.eventIdFormat === "server-chosen";

function topRules(rv: RoomVersion): string[] {
  return [
    "create",
    ...(rv.roomIdIsCreateEventHash ? ["roomId"] : []),
    "authEvents",
    "federate",
    ...(hasAliasesRule(rv) ? ["aliases"] : []),
    "member",
    "senderJoined",
    "thirdPartyInvite",
    "requiredPower",
    "stateKeyUser",
    "powerLevels",
    ...(hasRedactionRule(rv) ? ["redaction"] : []),
    "otherwise",
  ];
}

function subRules(rv: RoomVersion, path: readonly string[]): string[] | null {
  switch (path.join(".")) {
    case "create":
      return [
        "prevEvents",
        rv.roomIdIsCreateEventHash ? "hasRoomId" : "roomIdDomain",
        "roomVersion",
        ...(rv.createHasCreator ? ["creator"] : []),
        ...(rv.privilegedCreators ? ["additionalCreators"] : []),
        "otherwise",
      ];
    // v12 numbers these 3.1, 3.2, 3.3, 3.5 (3.4, "create present", was removed); ≤v11 have
    // 2.1–2.4, and MSC4307 adds "same room" to every version as .5 — so fixed positions.
    case "authEvents":
      return ["duplicate", "unexpected", "rejected", "noCreate", "otherRoom"];
    case "member":
      return [
        "fields",
        ...(rv.restrictedJoins ? ["authorisedVia"] : []),
        "join",
        "invite",
        "leave",
        "ban",
        ...(rv.knock ? ["knock"] : []),
        "unknown",
      ];
    case "member.join":
      return ["creator", "notSelf", "banned", "inviteRule", ...(rv.restrictedJoins ? ["restricted"] : []), "public", "otherwise"];
    case "member.invite":
      return ["thirdParty", "senderJoined", "targetState", "level", "otherwise"];
    case "member.leave":
      return ["self", "senderJoined", "banned", "kick", "otherwise"];
    case "member.ban":
      return ["senderJoined", "level", "otherwise"];
    case "member.knock":
      return ["joinRule", "notSelf", "state", "otherwise"];
    case "powerLevels":
      return [
        ...(rv.integerPowerLevels ? ["namedInt", "mapsInt"] : []),
        "users",
        ...(rv.privilegedCreators ? ["creatorsInUsers"] : []),
        "noPrevious",
        "named",
        "mapsRemoved",
        "mapsAdded",
        "usersRemoved",
        "usersAdded",
        "otherwise",
      ];
    case "redaction":
      return ["level", "sameDomain", "otherwise"];
    default:
      return null;
  }
}

/**
 * The number of a rule as written in `rv`'s spec text, from a symbolic path such as
 * `["member", "knock", "joinRule"]` → "5.7.1" (v12), "4.7.1" (v8–v11), "4.6.1" (v7).
 * Numeric path parts are used as-is (third-party invite sub-rules 5.4.1.1–8).
 *
 * Known editorial differences not reproduced: v7's text numbers "create event missing" as a
 * separate rule 3 and has no `m.federate` rule; we use the v8+ numbering (2.4, 3) for both.
 */
export function ruleNumber(rv: RoomVersion, path: readonly (string | number)[]): string {
  const out: number[] = [];
  let names = topRules(rv);
  for (let i = 0; i < path.length; i++) {
    const part = path[i]!;
    if (typeof part === "number") {
      out.push(part);
      continue;
    }
    const idx = names.indexOf(part);
    if (idx < 0) throw new Error(`ruleNumber: unknown rule ${path.slice(0, i + 1).join(".")} in room v${rv.id}`);
    out.push(idx + 1);
    names = subRules(rv, path.slice(0, i + 1) as string[]) ?? [];
  }
  return out.join(".");
}

const ALLOW: AuthResult = Object.freeze({ allowed: true as const });

function deny(rv: RoomVersion, path: readonly (string | number)[], reason: string): AuthResult {
  const rule = ruleNumber(rv, path);
  return { allowed: false, rule, reason: `${reason} (room v${rv.id} auth rule ${rule})` };
}

// ---------------------------------------------------------------------------------------------
// Auth events selection and rule 3 (v12) / 2 (≤v11)
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// The auth rules
// ---------------------------------------------------------------------------------------------

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
  if (hasAliasesRule(rv) && event.type === "m.room.aliases") {
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
  if (hasRedactionRule(rv) && event.type === "m.room.redaction") {
    if (senderPower >= namedLevel("redact", plContent, rv)) return ALLOW;
    const d = domainOf(event.redacts);
    if (d !== null && d === domainOf(event.event_id)) return ALLOW;
    return deny(rv, ["redaction", "otherwise"], "redaction needs the redact level or an event from the sender's server");
  }

  // Rule 11 / 10.
  return ALLOW;
}

function fmt(n: number): string {
  return n === Infinity ? "infinite (room creator)" : String(n);
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

/** Rule 5 (v12) / 4 (≤v11): m.room.member. */
function checkMember(
  event: EventLike,
  rv: RoomVersion,
  state: StateLookup,
  create: EventLike,
  createId: string | undefined,
  plContent: Record<string, unknown> | undefined,
  options: AuthCheckOptions,
): AuthResult {
  const content = contentOf(event);
  const membership = content.membership;
  // 5.1
  if (typeof event.state_key !== "string" || typeof membership !== "string") {
    return deny(rv, ["member", "fields"], "m.room.member needs a state_key and content.membership");
  }
  const sender = event.sender;
  const target = event.state_key;
  const via = content.join_authorised_via_users_server;

  // 5.2 (v8+): whoever authorised a restricted join vouches with their server's signature. The
  // rule applies to any membership carrying the key; the signature check is the caller's.
  if (rv.restrictedJoins && via !== undefined) {
    if (!isValidUserId(via)) {
      return deny(rv, ["member", "authorisedVia"], "join_authorised_via_users_server is not a valid user ID");
    }
    if (!options.verifyJoinAuthorisedVia) {
      return deny(rv, ["member", "authorisedVia"], "cannot check the join_authorised_via_users_server signature (no verifier supplied)");
    }
    if (!options.verifyJoinAuthorisedVia(event, via)) {
      return deny(rv, ["member", "authorisedVia"], `event is not signed by the server of ${via} (join_authorised_via_users_server)`);
    }
  }

  const senderMembership = currentMembership(state, sender) ?? "leave";
  const targetMembership = currentMembership(state, target) ?? "leave";
  const senderPower = powerLevelOf(sender, plContent, create, rv);
  const targetPower = powerLevelOf(target, plContent, create, rv);
  const joinRule = joinRuleOf(state);

  switch (membership) {
    case "join": {
      // 5.3.1: the creator's own first join, straight after the create event. v1–v10 name the
      // creator in content.creator, v11+ use the create sender (v12: not additional_creators).
      const prev = refIds(event.prev_events);
      const creator = rv.createHasCreator ? contentOf(create).creator : create.sender;
      if (prev.length === 1 && createId !== undefined && prev[0] === createId && target === creator) return ALLOW;
      // 5.3.2: nobody joins on someone else's behalf.
      if (sender !== target) return deny(rv, ["member", "join", "notSelf"], `${sender} cannot join on behalf of ${target}`);
      // 5.3.3
      if (senderMembership === "ban") return deny(rv, ["member", "join", "banned"], `${sender} is banned from the room`);
      // 5.3.4: invite-only (and v7+ knock) rooms admit the invited and the already joined.
      if (joinRule === "invite" || (rv.knock && joinRule === "knock")) {
        if (senderMembership === "invite" || senderMembership === "join") return ALLOW;
        return deny(rv, ["member", "join", "inviteRule"], `join rule is ${joinRule} and ${sender} is not invited (membership: ${senderMembership})`);
      }
      // 5.3.5 (v8+ restricted, v10+ knock_restricted): members of an allowed room may join if a
      // resident with invite power vouches (join_authorised_via_users_server). Whether the
      // user really is in an allowed room is the authorising server's check, not an auth rule.
      if ((rv.restrictedJoins && joinRule === "restricted") || (rv.knockRestricted && joinRule === "knock_restricted")) {
        if (senderMembership === "join" || senderMembership === "invite") return ALLOW;
        if (typeof via !== "string") {
          return deny(rv, ["member", "join", "restricted"], `join rule is ${joinRule}: the join needs join_authorised_via_users_server`);
        }
        // The spec says "a user with sufficient permission to invite other users"; sending an
        // invite needs a joined sender (5.4.2), so like Synapse and ruma we require both.
        const viaMembership = currentMembership(state, via) ?? "leave";
        if (viaMembership !== "join") {
          return deny(rv, ["member", "join", "restricted"], `authorising user ${via} is not joined to the room`);
        }
        const viaPower = powerLevelOf(via, plContent, create, rv);
        const invite = namedLevel("invite", plContent, rv);
        if (viaPower < invite) {
          return deny(rv, ["member", "join", "restricted"], `authorising user ${via} has power ${viaPower}, below the invite level ${invite}`);
        }
        return ALLOW;
      }
      // 5.3.6
      if (joinRule === "public") return ALLOW;
      // 5.3.7: private, unknown rules, and rules this room version does not have.
      return deny(rv, ["member", "join", "otherwise"], `join rule ${JSON.stringify(joinRule)} does not allow joining in room v${rv.id}`);
    }

    case "invite": {
      // 5.4.1: third-party invites (an invite redeeming a token issued by m.room.third_party_invite).
      if (content.third_party_invite !== undefined) {
        return checkThirdPartyInvite(event, rv, state, content.third_party_invite, targetMembership, options);
      }
      // 5.4.2: only members invite.
      if (senderMembership !== "join") return deny(rv, ["member", "invite", "senderJoined"], `inviter ${sender} is not joined (membership: ${senderMembership})`);
      // 5.4.3: a knocking, left or invited target can be invited; joined or banned cannot.
      if (targetMembership === "join" || targetMembership === "ban") {
        return deny(rv, ["member", "invite", "targetState"], `${target} cannot be invited: already ${targetMembership === "join" ? "joined" : "banned"}`);
      }
      // 5.4.4 / 5.4.5
      const invite = namedLevel("invite", plContent, rv);
      if (senderPower >= invite) return ALLOW;
      return deny(rv, ["member", "invite", "otherwise"], `${sender} has power ${fmt(senderPower)}, below the invite level ${invite}`);
    }

    case "leave": {
      // 5.5.1: leaving yourself — leave, reject an invite, or (knock) rescind a knock. The
      // knock case was added to the v7–v9 text in spec v1.2.
      if (sender === target) {
        if (senderMembership === "invite" || senderMembership === "join" || (rv.knock && senderMembership === "knock")) return ALLOW;
        return deny(rv, ["member", "leave", "self"], `${sender} cannot leave: membership is ${senderMembership}`);
      }
      // 5.5.2: kicks, unbans and knock denials come from members.
      if (senderMembership !== "join") return deny(rv, ["member", "leave", "senderJoined"], `${sender} is not joined (membership: ${senderMembership})`);
      // 5.5.3: unbanning needs the ban level (and, by 5.5.4, the kick level too).
      const ban = namedLevel("ban", plContent, rv);
      if (targetMembership === "ban" && senderPower < ban) {
        return deny(rv, ["member", "leave", "banned"], `unbanning ${target} needs the ban level ${ban}; ${sender} has ${fmt(senderPower)}`);
      }
      // 5.5.4 / 5.5.5: kick (also: deny a knock, revoke an invite) needs the kick level and to outrank the target.
      const kick = namedLevel("kick", plContent, rv);
      if (senderPower >= kick && targetPower < senderPower) return ALLOW;
      return deny(
        rv,
        ["member", "leave", "otherwise"],
        senderPower < kick
          ? `${sender} has power ${fmt(senderPower)}, below the kick level ${kick}`
          : `${sender} (power ${fmt(senderPower)}) does not outrank ${target} (power ${fmt(targetPower)})`,
      );
    }

    case "ban": {
      // 5.6.1
      if (senderMembership !== "join") return deny(rv, ["member", "ban", "senderJoined"], `${sender} is not joined (membership: ${senderMembership})`);
      // 5.6.2 / 5.6.3: works on any target membership, including a pending knock.
      const ban = namedLevel("ban", plContent, rv);
      if (senderPower >= ban && targetPower < senderPower) return ALLOW;
      return deny(
        rv,
        ["member", "ban", "otherwise"],
        senderPower < ban
          ? `${sender} has power ${fmt(senderPower)}, below the ban level ${ban}`
          : `${sender} (power ${fmt(senderPower)}) does not outrank ${target} (power ${fmt(targetPower)})`,
      );
    }

    case "knock": {
      // Before v7 `knock` is just an unknown membership (5.8).
      if (!rv.knock) break;
      // 5.7.1: v7–v9 only `knock`; v10+ (MSC3787) also `knock_restricted`.
      if (!joinRuleAllowsKnock(joinRule, rv)) {
        const accepted = rv.knockRestricted ? "knock or knock_restricted" : "knock";
        return deny(rv, ["member", "knock", "joinRule"], `join rule is ${JSON.stringify(joinRule)}; knocking needs ${accepted} in room v${rv.id}`);
      }
      // 5.7.2: knocks are always self-made.
      if (sender !== target) return deny(rv, ["member", "knock", "notSelf"], `${sender} cannot knock on behalf of ${target}`);
      // 5.7.3 / 5.7.4: leave, no membership, or a pending knock (re-knock) may knock; the
      // banned, invited (they should just join) and joined may not. See discrepancies.md #2.
      if (senderMembership === "ban" || senderMembership === "invite" || senderMembership === "join") {
        const what = { ban: "banned from", invite: "already invited to", join: "already joined to" }[senderMembership];
        return deny(rv, ["member", "knock", "otherwise"], `${sender} cannot knock: ${what} the room`);
      }
      return ALLOW;
    }
  }
  // 5.8
  return deny(rv, ["member", "unknown"], `unknown membership ${JSON.stringify(membership)} in room v${rv.id}`);
}

/** Rule 5.4.1 (v12) / 4.4.1 (v8–v11) / 4.3.1 (≤v7): invite redeeming a third-party invite. */
function checkThirdPartyInvite(
  event: EventLike,
  rv: RoomVersion,
  state: StateLookup,
  tpi: unknown,
  targetMembership: string,
  options: AuthCheckOptions,
): AuthResult {
  const rule = (n: number) => ["member", "invite", "thirdParty", n] as const;
  if (targetMembership === "ban") return deny(rv, rule(1), `${event.state_key} is banned`);
  const signed = isObject(tpi) ? tpi.signed : undefined;
  if (!isObject(signed)) return deny(rv, rule(2), "third_party_invite has no signed object");
  if (typeof signed.mxid !== "string" || typeof signed.token !== "string") {
    return deny(rv, rule(3), "third_party_invite.signed needs mxid and token");
  }
  if (signed.mxid !== event.state_key) return deny(rv, rule(4), "third_party_invite.signed.mxid does not match state_key");
  const tokenEvent = state("m.room.third_party_invite", signed.token);
  if (!tokenEvent) return deny(rv, rule(5), `no m.room.third_party_invite with token ${signed.token}`);
  if (tokenEvent.sender !== event.sender) return deny(rv, rule(6), "sender did not issue the third-party invite");
  const tc = contentOf(tokenEvent);
  const keys: string[] = [];
  if (typeof tc.public_key === "string") keys.push(tc.public_key);
  if (Array.isArray(tc.public_keys)) {
    for (const k of tc.public_keys) if (isObject(k) && typeof k.public_key === "string") keys.push(k.public_key);
  }
  if (!options.verifyThirdPartyInvite) {
    return deny(rv, rule(8), "third-party invites are not supported (no signature verifier supplied)");
  }
  if (options.verifyThirdPartyInvite(signed, keys)) return ALLOW;
  return deny(rv, rule(8), "no signature in third_party_invite.signed matches the invite's public keys");
}

const NAMED_LEVEL_KEYS = ["users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"] as const;

/** Rule 10 (v12) / 9 (≤v11): m.room.power_levels. */
function checkPowerLevels(
  event: EventLike,
  rv: RoomVersion,
  create: EventLike,
  oldContent: Record<string, unknown> | undefined,
  senderPower: number,
): AuthResult {
  const content = contentOf(event);
  const level = (v: unknown) => parsePowerLevel(v, rv);

  // 10.1 / 10.2 (v10+, MSC3667): integers only. v1–v9 accept integer strings; we also refuse
  // values that are neither (the v1–v9 text is silent; Synapse's int() would fail on them).
  for (const k of NAMED_LEVEL_KEYS) {
    if (content[k] !== undefined && level(content[k]) === undefined) {
      return rv.integerPowerLevels
        ? deny(rv, ["powerLevels", "namedInt"], `${k} must be an integer`)
        : deny(rv, ["powerLevels", "users"], `${k} must be an integer or an integer string`);
    }
  }
  for (const k of ["events", "notifications"] as const) {
    const m = content[k];
    if (m === undefined) continue;
    if (!isObject(m) || !Object.values(m).every((v) => level(v) !== undefined)) {
      return rv.integerPowerLevels
        ? deny(rv, ["powerLevels", "mapsInt"], `${k} must be an object of integers`)
        : deny(rv, ["powerLevels", "users"], `${k} must be an object of integers or integer strings`);
    }
  }
  // 10.3: users maps valid user IDs to integers ("or a string that is an integer" before v10).
  const users = content.users;
  if (users !== undefined) {
    if (!isObject(users)) return deny(rv, ["powerLevels", "users"], "users must be an object");
    for (const [u, v] of Object.entries(users)) {
      if (!isValidUserId(u)) return deny(rv, ["powerLevels", "users"], `users key ${JSON.stringify(u)} is not a valid user ID`);
      if (level(v) === undefined) return deny(rv, ["powerLevels", "users"], `users[${u}] is not an integer`);
    }
  }
  // 10.4 (v12, MSC4289): creators' power is fixed at infinity; listing them would be a lie.
  if (rv.privilegedCreators && isObject(users)) {
    for (const c of roomCreators(create, rv)) {
      if (Object.hasOwn(users, c)) return deny(rv, ["powerLevels", "creatorsInUsers"], `room creator ${c} must not appear in users`);
    }
  }
  // 10.5: the first power-levels event needs only the required power level (rule 8).
  if (!oldContent) return ALLOW;

  // 10.6: changing a named level: neither its old nor its new value may exceed the sender's power.
  for (const k of NAMED_LEVEL_KEYS) {
    const before = level(oldContent[k]);
    const after = level(content[k]);
    if (before === after) continue;
    if (before !== undefined && before > senderPower) {
      return deny(rv, ["powerLevels", "named"], `cannot change ${k} from ${before}: above the sender's power ${fmt(senderPower)}`);
    }
    if (after !== undefined && after > senderPower) {
      return deny(rv, ["powerLevels", "named"], `cannot set ${k} to ${after}: above the sender's power ${fmt(senderPower)}`);
    }
  }
  // 10.7 / 10.8: events and notifications entries. (v1–v5 did not check notifications; we
  // apply the v6+ rule everywhere.)
  for (const k of ["events", "notifications"] as const) {
    const oldMap = isObject(oldContent[k]) ? oldContent[k] : {};
    const newMap = isObject(content[k]) ? content[k] : {};
    for (const key of new Set([...Object.keys(oldMap), ...Object.keys(newMap)])) {
      const before = Object.hasOwn(oldMap, key) ? level(oldMap[key]) : undefined;
      const after = Object.hasOwn(newMap, key) ? level(newMap[key]) : undefined;
      if (before === after) continue;
      if (before !== undefined && before > senderPower) {
        return deny(rv, ["powerLevels", "mapsRemoved"], `cannot change ${k}[${key}] from ${before}: above the sender's power ${fmt(senderPower)}`);
      }
      if (after !== undefined && after > senderPower) {
        return deny(rv, ["powerLevels", "mapsAdded"], `cannot set ${k}[${key}] to ${after}: above the sender's power ${fmt(senderPower)}`);
      }
    }
  }
  // 10.9 / 10.10: users entries. Demoting or removing someone needs strictly more power than
  // they have (your own entry excepted); promoting caps at your own power.
  const oldUsers = isObject(oldContent.users) ? oldContent.users : {};
  const newUsers = isObject(users) ? users : {};
  for (const u of new Set([...Object.keys(oldUsers), ...Object.keys(newUsers)])) {
    const before = Object.hasOwn(oldUsers, u) ? level(oldUsers[u]) : undefined;
    const after = Object.hasOwn(newUsers, u) ? level(newUsers[u]) : undefined;
    if (before === after) continue;
    if (before !== undefined && u !== event.sender && before >= senderPower) {
      return deny(rv, ["powerLevels", "usersRemoved"], `cannot change ${u}'s power ${before}: not below the sender's power ${fmt(senderPower)}`);
    }
    if (after !== undefined && after > senderPower) {
      return deny(rv, ["powerLevels", "usersAdded"], `cannot give ${u} power ${after}: above the sender's power ${fmt(senderPower)}`);
    }
  }
  // 10.11
  return ALLOW;
}
