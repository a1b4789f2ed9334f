/**
 * Rule numbering per room version, and the refusal that names the rule.
 *
 * Rule numbers: comments in this folder cite the v12 numbering and the v8–v11 numbering
 * ("v12 5.7.1 / v8–v11 4.7.1") because v12 inserted rule 2 and shifted everything after it.
 * Rejections carry `rule`, the number *as written for the room version being checked*, computed
 * from the same room-version flags that switch the rules on.
 */
import type { RoomVersion } from "../room-versions.js";
import type { AuthResult } from "./types.js";

function topRules(rv: RoomVersion): string[] {
  return [
    "create",
    ...(rv.roomIdIsCreateEventHash ? ["roomId"] : []),
    "authEvents",
    "federate",
    ...(rv.aliasesAuthRule ? ["aliases"] : []),
    "member",
    "senderJoined",
    "thirdPartyInvite",
    "requiredPower",
    "stateKeyUser",
    "powerLevels",
    ...(rv.redactionDomainAuthRule ? ["redaction"] : []),
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

export const ALLOW: AuthResult = Object.freeze({ allowed: true as const });

export function deny(rv: RoomVersion, path: readonly (string | number)[], reason: string): AuthResult {
  const rule = ruleNumber(rv, path);
  return { allowed: false, rule, reason: `${reason} (room v${rv.id} auth rule ${rule})` };
}
