/**
 * The Matrix authorization rules ("auth rules") as pure functions, for room versions 1–12
 * (7–12 are the ones Gatehouse hosts; 1–6 are covered where it costs a few lines), plus the
 * auth-events selection algorithm and the power-level / membership helpers handlers need.
 * Laid out as ruma's state-res crate: types, power levels, auth-event selection, rule
 * numbering, the rules, and one module per membership under members/.
 *
 * Spec: Room Versions v1…v12 "Authorization rules"; Server-Server API "Auth events selection",
 * "Checks performed on receipt of a PDU"; `m.room.power_levels` / `m.room.member` schemas.
 *
 * What this folder does NOT do (by design — the caller owns I/O and cryptography):
 *   - signature checks: the event's own signatures, `join_authorised_via_users_server` (rule 5.2)
 *     and third-party-invite `signed` blocks (rule 5.4.1.7) are delegated to callbacks in
 *     `AuthCheckOptions`; without a callback those rules fail closed;
 *   - event format / hash checks (pdu.ts, event-hashing.ts);
 *   - deciding which state to check against (auth_events, state before the event, current
 *     state): pass the matching `StateLookup` (see `stateLookupFromEvents`).
 */
export type { AuthCheckOptions, AuthResult, EventLike, EventSkeleton, Membership, StateKey, StateLookup } from "./types.js";
export { isValidUserId, stateLookupFromEvents } from "./util.js";
export { currentMembership, joinRuleAllowsKnock, joinRuleOf, membershipOf } from "./membership.js";
export {
  canApplyRedaction,
  canSendState,
  DEFAULT_POWER_LEVELS,
  isPrivilegedCreator,
  namedLevel,
  NO_POWER_LEVELS_EVENT_DEFAULTS,
  parsePowerLevel,
  powerLevelOf,
  requiredPowerLevel,
  roomCreators,
  type NamedLevel,
} from "./power-levels.js";
export { ruleNumber } from "./rules.js";
export { authEventKeys, checkAuthEventsList, selectAuthEvents } from "./auth-events.js";
export { checkEventAuth } from "./check.js";
