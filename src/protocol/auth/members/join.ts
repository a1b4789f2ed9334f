/** Rule 5.3 (v12) / 4.3 (v8–v11): `join`. */
import { currentMembership } from "../membership.js";
import { namedLevel, powerLevelOf } from "../power-levels.js";
import { ALLOW, deny } from "../rules.js";
import type { AuthResult } from "../types.js";
import { contentOf, refIds } from "../util.js";
import type { MemberContext } from "./context.js";

export function checkJoin(ctx: MemberContext): AuthResult {
  const { event, rv, state, create, createId, plContent, sender, target, via, senderMembership, joinRule } = ctx;
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
