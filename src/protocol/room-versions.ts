/**
 * Room versions as data: one frozen record per version, each written as a delta on the one
 * before it (like ruma's RoomVersionRules and Synapse's room_versions.rs). Code asks a record
 * for a capability; it never compares version strings.
 *
 * Spec: "Room Versions" (/rooms/v1 … /rooms/v12).
 */

/** How a PDU's event ID is obtained. */
export type EventIdFormat =
  /** v1–v2: chosen by the origin server, `$opaque:domain`, sent in the PDU. */
  | "server-chosen"
  /** v3: `$` + standard unpadded base64 of the reference hash. */
  | "reference-hash-base64"
  /** v4+: `$` + URL-safe unpadded base64 of the reference hash. */
  | "reference-hash-base64url";

/** Which keys the redaction algorithm keeps (spec: room versions, "Redactions"). */
export interface RedactionRules {
  /** v1–v10 keep top-level `origin`, `membership`, `prev_state`; v11 (MSC3989/MSC2176) drops them. */
  readonly keepOriginMembershipPrevState: boolean;
  /** v1–v5 keep `m.room.aliases` `aliases`; v6 (MSC2432) drops it. */
  readonly keepAliases: boolean;
  /** v8+ keep `m.room.join_rules` `allow` (restricted joins, MSC3083). */
  readonly keepJoinRulesAllow: boolean;
  /** v9+ keep `m.room.member` `join_authorised_via_users_server`. */
  readonly keepJoinAuthorisedVia: boolean;
  /** v11+ keep every key of `m.room.create` content (MSC2176). */
  readonly keepAllCreateContent: boolean;
  /** v11+ keep `m.room.power_levels` `invite`. */
  readonly keepPowerLevelsInvite: boolean;
  /** v11+ keep `m.room.redaction` `redacts` in content. */
  readonly keepRedactionRedacts: boolean;
  /** v11+ keep `m.room.member` `third_party_invite.signed`. */
  readonly keepThirdPartyInviteSigned: boolean;
}

export interface RoomVersion {
  readonly id: string;
  readonly eventIdFormat: EventIdFormat;
  /** v1–v2 PDUs list prev/auth events as `[event_id, {sha256}]` pairs; v3+ as plain IDs. */
  readonly eventRefsAreIds: boolean;
  /**
   * State resolution algorithm: v1 (room version 1), v2 (2–11), v2.1 (12, MSC4297: the
   * conflicted state subgraph joins the full conflicted set, and the iterative auth checks of
   * the power events start from empty state instead of the unconflicted state).
   */
  readonly stateResolution: "v1" | "v2" | "v2.1";
  /** v5+: a signing key is only valid for events up to its `valid_until_ts`. */
  readonly enforceKeyValidity: boolean;
  /** v6+: canonical JSON limits enforced (integers within ±(2^53−1), no floats). */
  readonly strictCanonicalJson: boolean;
  /** v7+: `knock` join rule and membership (MSC2403). */
  readonly knock: boolean;
  /** v8+: `restricted` join rule (MSC3083). */
  readonly restrictedJoins: boolean;
  /** v10+: `knock_restricted` join rule (MSC3787). */
  readonly knockRestricted: boolean;
  /** v10+: power level values must be integers, not strings (MSC3667). */
  readonly integerPowerLevels: boolean;
  /** v1–v10: `m.room.create` carries `content.creator`; v11+ uses the create event's `sender` (MSC2175). */
  readonly createHasCreator: boolean;
  /** v11+: `m.room.redaction` has `redacts` in content, not top level (MSC2174). */
  readonly redactsInContent: boolean;
  /** v12: room ID is `!` + the create event's reference hash; the create event has no `room_id` (MSC4291). */
  readonly roomIdIsCreateEventHash: boolean;
  /** v1–v11: `auth_events` of every other event include the create event; v12 must not. */
  readonly createEventInAuthEvents: boolean;
  /** v12: the create sender and `additional_creators` have infinite power (MSC4289). */
  readonly privilegedCreators: boolean;
  /** v1–v5: auth rule 4 special-cases `m.room.aliases` (only the server in its state_key may send it); v6 removed it (MSC2432). */
  readonly aliasesAuthRule: boolean;
  /** v1–v2: auth rule 11 lets a redaction through when its event ID's domain matches the target's; v3 removed it with server-chosen event IDs. */
  readonly redactionDomainAuthRule: boolean;
  readonly redaction: RedactionRules;
}

const V1: RoomVersion = Object.freeze({
  id: "1",
  eventIdFormat: "server-chosen",
  eventRefsAreIds: false,
  stateResolution: "v1",
  enforceKeyValidity: false,
  strictCanonicalJson: false,
  knock: false,
  restrictedJoins: false,
  knockRestricted: false,
  integerPowerLevels: false,
  createHasCreator: true,
  redactsInContent: false,
  roomIdIsCreateEventHash: false,
  createEventInAuthEvents: true,
  privilegedCreators: false,
  aliasesAuthRule: true,
  redactionDomainAuthRule: true,
  redaction: Object.freeze({
    keepOriginMembershipPrevState: true,
    keepAliases: true,
    keepJoinRulesAllow: false,
    keepJoinAuthorisedVia: false,
    keepAllCreateContent: false,
    keepPowerLevelsInvite: false,
    keepRedactionRedacts: false,
    keepThirdPartyInviteSigned: false,
  }),
});
const V2 = Object.freeze({ ...V1, id: "2", stateResolution: "v2" as const });
const V3 = Object.freeze({
  ...V2,
  id: "3",
  eventIdFormat: "reference-hash-base64" as const,
  eventRefsAreIds: true,
  redactionDomainAuthRule: false,
});
const V4 = Object.freeze({ ...V3, id: "4", eventIdFormat: "reference-hash-base64url" as const });
const V5 = Object.freeze({ ...V4, id: "5", enforceKeyValidity: true });
const V6 = Object.freeze({
  ...V5,
  id: "6",
  strictCanonicalJson: true,
  aliasesAuthRule: false,
  redaction: Object.freeze({ ...V5.redaction, keepAliases: false }),
});
const V7 = Object.freeze({ ...V6, id: "7", knock: true });
const V8 = Object.freeze({
  ...V7,
  id: "8",
  restrictedJoins: true,
  redaction: Object.freeze({ ...V7.redaction, keepJoinRulesAllow: true }),
});
const V9 = Object.freeze({ ...V8, id: "9", redaction: Object.freeze({ ...V8.redaction, keepJoinAuthorisedVia: true }) });
const V10 = Object.freeze({ ...V9, id: "10", knockRestricted: true, integerPowerLevels: true });
const V11 = Object.freeze({
  ...V10,
  id: "11",
  createHasCreator: false,
  redactsInContent: true,
  redaction: Object.freeze({
    ...V10.redaction,
    keepOriginMembershipPrevState: false,
    keepAllCreateContent: true,
    keepPowerLevelsInvite: true,
    keepRedactionRedacts: true,
    keepThirdPartyInviteSigned: true,
  }),
});
const V12 = Object.freeze({
  ...V11,
  id: "12",
  roomIdIsCreateEventHash: true,
  createEventInAuthEvents: false,
  privilegedCreators: true,
  stateResolution: "v2.1" as const,
});

export const ROOM_VERSIONS: ReadonlyMap<string, RoomVersion> = new Map(
  [V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12].map((v) => [v.id, v]),
);

/** The version the spec says new rooms SHOULD use. */
export const DEFAULT_ROOM_VERSION = "12";

export function getRoomVersion(id: string): RoomVersion | undefined {
  return ROOM_VERSIONS.get(id);
}

/** Versions in which a room can be knocked on. */
export function knockableVersions(): RoomVersion[] {
  return [...ROOM_VERSIONS.values()].filter((v) => v.knock);
}

/** Room version identifiers: 1–32 code points of [a-z0-9.-] (spec: "Room version grammar"). */
export function isValidRoomVersionId(id: string): boolean {
  return /^[a-z0-9.-]{1,32}$/.test(id);
}
