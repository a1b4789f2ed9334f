/** Rule 5.5 (v12) / 4.5 (v8–v11): `leave` — leaving, rejecting an invite, rescinding a knock, kicks and unbans. */
import { namedLevel } from "../power-levels.js";
import { ALLOW, deny } from "../rules.js";
import type { AuthResult } from "../types.js";
import { fmt } from "../util.js";
import type { MemberContext } from "./context.js";

export function checkLeave(ctx: MemberContext): AuthResult {
  const { rv, plContent, sender, target, senderMembership, targetMembership, senderPower, targetPower } = ctx;
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
