/** Membership and join-rule helpers (spec: `m.room.member`, `m.room.join_rules`). */
import type { RoomVersion } from "../room-versions.js";
import type { EventLike, StateLookup } from "./types.js";
import { contentOf } from "./util.js";

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
