/**
 * Creators and power levels (spec: `m.room.power_levels` schema; v12 MSC4289 privileged
 * creators; v10 MSC3667 integer power levels).
 */
import type { RoomVersion } from "../room-versions.js";
import type { EventLike, StateLookup } from "./types.js";
import { contentOf, domainOf, isObject, isValidUserId } from "./util.js";

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
