/**
 * Rule 5 (v12) / 4 (≤v11): `m.room.member`. Rules 5.1 (fields) and 5.2 (v8+
 * join_authorised_via_users_server signature) run here; each membership has its own module,
 * as in ruma's `room_member` rules.
 */
import type { RoomVersion } from "../../room-versions.js";
import { currentMembership, joinRuleOf } from "../membership.js";
import { powerLevelOf } from "../power-levels.js";
import { deny } from "../rules.js";
import type { AuthCheckOptions, AuthResult, EventLike, StateLookup } from "../types.js";
import { contentOf, isValidUserId } from "../util.js";
import { checkBan } from "./ban.js";
import type { MemberContext } from "./context.js";
import { checkInvite } from "./invite.js";
import { checkJoin } from "./join.js";
import { checkKnock } from "./knock.js";
import { checkLeave } from "./leave.js";

export function checkMember(
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

  const ctx: MemberContext = {
    event,
    rv,
    state,
    create,
    createId,
    plContent,
    options,
    content,
    sender,
    target,
    via,
    senderMembership: currentMembership(state, sender) ?? "leave",
    targetMembership: currentMembership(state, target) ?? "leave",
    senderPower: powerLevelOf(sender, plContent, create, rv),
    targetPower: powerLevelOf(target, plContent, create, rv),
    joinRule: joinRuleOf(state),
  };

  switch (membership) {
    case "join":
      return checkJoin(ctx);
    case "invite":
      return checkInvite(ctx);
    case "leave":
      return checkLeave(ctx);
    case "ban":
      return checkBan(ctx);
    case "knock":
      // Before v7 `knock` is just an unknown membership (5.8).
      if (rv.knock) return checkKnock(ctx);
      break;
  }
  // 5.8
  return deny(rv, ["member", "unknown"], `unknown membership ${JSON.stringify(membership)} in room v${rv.id}`);
}
