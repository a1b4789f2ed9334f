/** Rule 5.7 (v12) / 4.7 (v8–v11) / 4.6 (v7): `knock` (v7+; members/index.ts sends older versions to 5.8). */
import { joinRuleAllowsKnock } from "../membership.js";
import { ALLOW, deny } from "../rules.js";
import type { AuthResult } from "../types.js";
import type { MemberContext } from "./context.js";

export function checkKnock(ctx: MemberContext): AuthResult {
  const { rv, sender, target, senderMembership, joinRule } = ctx;
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
