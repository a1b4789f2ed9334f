/** Rule 10 (v12) / 9 (≤v11): `m.room.power_levels` changes. */
import type { RoomVersion } from "../room-versions.js";
import { parsePowerLevel, roomCreators } from "./power-levels.js";
import { ALLOW, deny } from "./rules.js";
import type { AuthResult, EventLike } from "./types.js";
import { contentOf, fmt, isObject, isValidUserId } from "./util.js";

const NAMED_LEVEL_KEYS = ["users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"] as const;

/** Rule 10 (v12) / 9 (≤v11): m.room.power_levels. */
export function checkPowerLevels(
  event: EventLike,
  rv: RoomVersion,
  create: EventLike,
  oldContent: Record<string, unknown> | undefined,
  senderPower: number,
): AuthResult {
  const content = contentOf(event);
  const level = (v: unknown) => parsePowerLevel(v, rv);

  // 10.1 / 10.2 (v10+, MSC3667): integers only. v1–v9 accept integer strings; we also refuse
  // values that are neither (the v1–v9 text is silent; Synapse's int() would fail on them).
  for (const k of NAMED_LEVEL_KEYS) {
    if (content[k] !== undefined && level(content[k]) === undefined) {
      return rv.integerPowerLevels
        ? deny(rv, ["powerLevels", "namedInt"], `${k} must be an integer`)
        : deny(rv, ["powerLevels", "users"], `${k} must be an integer or an integer string`);
    }
  }
  for (const k of ["events", "notifications"] as const) {
    const m = content[k];
    if (m === undefined) continue;
    if (!isObject(m) || !Object.values(m).every((v) => level(v) !== undefined)) {
      return rv.integerPowerLevels
        ? deny(rv, ["powerLevels", "mapsInt"], `${k} must be an object of integers`)
        : deny(rv, ["powerLevels", "users"], `${k} must be an object of integers or integer strings`);
    }
  }
  // 10.3: users maps valid user IDs to integers ("or a string that is an integer" before v10).
  const users = content.users;
  if (users !== undefined) {
    if (!isObject(users)) return deny(rv, ["powerLevels", "users"], "users must be an object");
    for (const [u, v] of Object.entries(users)) {
      if (!isValidUserId(u)) return deny(rv, ["powerLevels", "users"], `users key ${JSON.stringify(u)} is not a valid user ID`);
      if (level(v) === undefined) return deny(rv, ["powerLevels", "users"], `users[${u}] is not an integer`);
    }
  }
  // 10.4 (v12, MSC4289): creators' power is fixed at infinity; listing them would be a lie.
  if (rv.privilegedCreators && isObject(users)) {
    for (const c of roomCreators(create, rv)) {
      if (Object.hasOwn(users, c)) return deny(rv, ["powerLevels", "creatorsInUsers"], `room creator ${c} must not appear in users`);
    }
  }
  // 10.5: the first power-levels event needs only the required power level (rule 8).
  if (!oldContent) return ALLOW;

  // 10.6: changing a named level: neither its old nor its new value may exceed the sender's power.
  for (const k of NAMED_LEVEL_KEYS) {
    const before = level(oldContent[k]);
    const after = level(content[k]);
    if (before === after) continue;
    if (before !== undefined && before > senderPower) {
      return deny(rv, ["powerLevels", "named"], `cannot change ${k} from ${before}: above the sender's power ${fmt(senderPower)}`);
    }
    if (after !== undefined && after > senderPower) {
      return deny(rv, ["powerLevels", "named"], `cannot set ${k} to ${after}: above the sender's power ${fmt(senderPower)}`);
    }
  }
  // 10.7 / 10.8: events and notifications entries. (v1–v5 did not check notifications; we
  // apply the v6+ rule everywhere.)
  for (const k of ["events", "notifications"] as const) {
    const oldMap = isObject(oldContent[k]) ? oldContent[k] : {};
    const newMap = isObject(content[k]) ? content[k] : {};
    for (const key of new Set([...Object.keys(oldMap), ...Object.keys(newMap)])) {
      const before = Object.hasOwn(oldMap, key) ? level(oldMap[key]) : undefined;
      const after = Object.hasOwn(newMap, key) ? level(newMap[key]) : undefined;
      if (before === after) continue;
      if (before !== undefined && before > senderPower) {
        return deny(rv, ["powerLevels", "mapsRemoved"], `cannot change ${k}[${key}] from ${before}: above the sender's power ${fmt(senderPower)}`);
      }
      if (after !== undefined && after > senderPower) {
        return deny(rv, ["powerLevels", "mapsAdded"], `cannot set ${k}[${key}] to ${after}: above the sender's power ${fmt(senderPower)}`);
      }
    }
  }
  // 10.9 / 10.10: users entries. Demoting or removing someone needs strictly more power than
  // they have (your own entry excepted); promoting caps at your own power.
  const oldUsers = isObject(oldContent.users) ? oldContent.users : {};
  const newUsers = isObject(users) ? users : {};
  for (const u of new Set([...Object.keys(oldUsers), ...Object.keys(newUsers)])) {
    const before = Object.hasOwn(oldUsers, u) ? level(oldUsers[u]) : undefined;
    const after = Object.hasOwn(newUsers, u) ? level(newUsers[u]) : undefined;
    if (before === after) continue;
    if (before !== undefined && u !== event.sender && before >= senderPower) {
      return deny(rv, ["powerLevels", "usersRemoved"], `cannot change ${u}'s power ${before}: not below the sender's power ${fmt(senderPower)}`);
    }
    if (after !== undefined && after > senderPower) {
      return deny(rv, ["powerLevels", "usersAdded"], `cannot give ${u} power ${after}: above the sender's power ${fmt(senderPower)}`);
    }
  }
  // 10.11
  return ALLOW;
}
