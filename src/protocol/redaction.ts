/**
 * The redaction algorithm (spec: room versions, "Redactions"; digest hashing-redaction.md §5).
 * Redaction is not only for m.room.redaction: the redacted copy is what gets signed and what the
 * reference hash (v3+ event ID) covers, so a wrong keep-list breaks every signature and ID.
 *
 * Keep-lists are driven by `roomVersion.redaction` flags only, never by version strings.
 * The result is a deep copy: callers may mutate it without touching the input.
 */
import type { RoomVersion } from "./room-versions.js";
import { isPlainObject, type Pdu } from "./pdu.js";

export class RedactionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RedactionError";
  }
}

export interface RedactOptions {
  /**
   * What to do with an event that has no `content` object. `content` is a required PDU field, so
   * the default is to refuse (as Synapse does): such an event is malformed and must not be
   * hashed into an event ID or accepted. "insert-empty" behaves like gomatrixserverlib and
   * treats it as `content: {}`; it exists only because a historical spec vector (still used by
   * gomatrixserverlib's tests) was signed that way, and must never be used for inbound traffic.
   */
  missingContent?: "refuse" | "insert-empty";
}

/** Top-level keys every room version keeps. */
const BASE_TOP_LEVEL = [
  "event_id",
  "type",
  "room_id",
  "sender",
  "state_key",
  "content",
  "hashes",
  "signatures",
  "depth",
  "prev_events",
  "auth_events",
  "origin_server_ts",
] as const;
/** Kept by v1–v10 only; v11 (MSC2176/MSC3989) stopped protecting them. */
const LEGACY_TOP_LEVEL = ["origin", "membership", "prev_state"] as const;

const POWER_LEVELS_KEYS = ["ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"];

/** Deep copy of a JSON value. `__proto__` keys are defined as own data properties, never as prototypes. */
function cloneJson(value: unknown): unknown {
  if (typeof value !== "object" || value === null) return value;
  if (Array.isArray(value)) return value.map(cloneJson);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) setOwn(out, k, cloneJson(v));
  return out;
}

function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  if (key === "__proto__") Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
  else target[key] = value;
}

function pick(source: Record<string, unknown>, keys: readonly string[], into: Record<string, unknown> = {}): Record<string, unknown> {
  for (const k of keys) if (Object.hasOwn(source, k)) setOwn(into, k, cloneJson(source[k]));
  return into;
}

function redactContent(type: unknown, content: Record<string, unknown>, roomVersion: RoomVersion): Record<string, unknown> {
  const rules = roomVersion.redaction;
  switch (type) {
    case "m.room.member": {
      const out = pick(content, rules.keepJoinAuthorisedVia ? ["membership", "join_authorised_via_users_server"] : ["membership"]);
      if (rules.keepThirdPartyInviteSigned && Object.hasOwn(content, "third_party_invite")) {
        // Only the `signed` sub-object is protected. A non-object third_party_invite is dropped
        // and an object without `signed` becomes {} (Synapse behaviour; redaction.json covers both).
        const tpi = content.third_party_invite;
        if (isPlainObject(tpi)) out.third_party_invite = pick(tpi, ["signed"]);
      }
      return out;
    }
    case "m.room.create":
      return rules.keepAllCreateContent ? (cloneJson(content) as Record<string, unknown>) : pick(content, ["creator"]);
    case "m.room.join_rules":
      return pick(content, rules.keepJoinRulesAllow ? ["join_rule", "allow"] : ["join_rule"]);
    case "m.room.power_levels":
      return pick(content, rules.keepPowerLevelsInvite ? [...POWER_LEVELS_KEYS, "invite"] : POWER_LEVELS_KEYS);
    case "m.room.history_visibility":
      return pick(content, ["history_visibility"]);
    case "m.room.aliases":
      return rules.keepAliases ? pick(content, ["aliases"]) : {};
    case "m.room.redaction":
      return rules.keepRedactionRedacts ? pick(content, ["redacts"]) : {};
    default:
      return {};
  }
}

/**
 * The redacted copy of an event under the room version's rules. Never mutates `event`.
 * Throws RedactionError for an event without an object `content` unless told to insert `{}`.
 */
export function redactEvent(event: Pdu, roomVersion: RoomVersion, options?: RedactOptions): Pdu;
export function redactEvent(event: Record<string, unknown>, roomVersion: RoomVersion, options?: RedactOptions): Record<string, unknown>;
export function redactEvent(event: Record<string, unknown>, roomVersion: RoomVersion, options: RedactOptions = {}): Record<string, unknown> {
  let content = event.content;
  if (!isPlainObject(content)) {
    if (content === undefined && options.missingContent === "insert-empty") content = {};
    else throw new RedactionError(content === undefined ? "event has no content" : "event content is not an object");
  }
  const topLevel: readonly string[] = roomVersion.redaction.keepOriginMembershipPrevState
    ? [...BASE_TOP_LEVEL, ...LEGACY_TOP_LEVEL]
    : BASE_TOP_LEVEL;
  const out = pick(event, topLevel.filter((k) => k !== "content"));
  out.content = redactContent(event.type, content as Record<string, unknown>, roomVersion);
  return out;
}
