/** Rule 5.6 (v12) / 4.6 (v8–v11): `ban`. */
import { namedLevel } from "../power-levels.js";
import { ALLOW, deny } from "../rules.js";
import type { AuthResult } from "../types.js";
import { fmt } from "../util.js";
import type { MemberContext } from "./context.js";

export function checkBan(ctx: MemberContext): AuthResult {
  const { rv, plContent, sender, target, senderMembership, senderPower, targetPower } = ctx;
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
