/** Rule 5.4 (v12) / 4.4 (v8–v11): `invite`, including third-party invites (5.4.1). */
import type { RoomVersion } from "../../room-versions.js";
import { namedLevel } from "../power-levels.js";
import { ALLOW, deny } from "../rules.js";
import type { AuthCheckOptions, AuthResult, EventLike, StateLookup } from "../types.js";
import { contentOf, fmt, isObject } from "../util.js";
import type { MemberContext } from "./context.js";

export function checkInvite(ctx: MemberContext): AuthResult {
  const { event, rv, state, plContent, options, content, sender, target, senderMembership, targetMembership, senderPower } = ctx;
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