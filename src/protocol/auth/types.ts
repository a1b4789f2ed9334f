/**
 * Types shared by the auth rules, the auth-events selection and state resolution.
 * Spec: Room Versions "Authorization rules"; Server-Server API "Checks performed on receipt of a PDU".
 */

/**
 * The parts of a PDU the auth rules read. Loose on purpose: a full `Pdu`, a stored event or a
 * half-built template all fit. Unknown fields are ignored.
 */
export interface EventLike {
  type: string;
  sender: string;
  state_key?: string;
  content?: Record<string, unknown>;
  /** Absent on a v12 `m.room.create` event. */
  room_id?: string;
  /** Only needed where a rule compares event IDs (v1–v2 redactions, creator's first join) — v3+ PDUs carry none, so callers may attach it. */
  event_id?: string;
  /** v3+: event IDs; v1–v2: `[event_id, hashes]` pairs. Both are accepted. */
  prev_events?: readonly unknown[];
  auth_events?: readonly unknown[];
  /** v1–v10 `m.room.redaction` target. */
  redacts?: string;
  [key: string]: unknown;
}

/** What the auth-events selection needs: an event being built, before prev/auth events exist. */
export type EventSkeleton = Pick<EventLike, "type" | "sender" | "state_key" | "content">;

/** The room state to authorise against: `(type, state_key)` → the event, or undefined. */
export type StateLookup = (type: string, stateKey: string) => EventLike | undefined;

/** A `(type, state_key)` key of room state. */
export type StateKey = readonly [type: string, stateKey: string];

export type AuthResult =
  | { readonly allowed: true }
  | {
      readonly allowed: false;
      /** Human-readable; ends with the room version and the rule number, safe to put in a 403 `error`. */
      readonly reason: string;
      /** The rejecting rule's number as written in this room version's spec text, e.g. "5.7.3" (v12) / "4.7.3" (v8–v11). */
      readonly rule: string;
    };

export interface AuthCheckOptions {
  /**
   * The event ID of the room's `m.room.create` event, when it is not on the create event as
   * `event_id` (v3+ PDUs carry no ID; callers usually know it from storage). Needed for v12
   * rule 2 (the room ID must be the create event's ID) and for the creator's first join
   * ("the only previous event is an `m.room.create`").
   */
  createEventId?: string;
  /**
   * The event's `auth_events`, resolved to events. When given, rule 3 (v12) / 2 (≤v11) runs
   * here in spec order via `checkAuthEventsList`; when omitted the caller has run it already.
   */
  authEvents?: readonly EventLike[];
  /** Rule 3.3: was this auth event itself rejected? Default: none are. */
  isRejected?: (event: EventLike) => boolean;
  /**
   * Rule 5.2 (v8+): is `event` validly signed by the homeserver of `authorisingUser` (the
   * `join_authorised_via_users_server` value)? Without this callback any event carrying that
   * key is rejected, because the rule cannot be evaluated.
   */
  verifyJoinAuthorisedVia?: (event: EventLike, authorisingUser: string) => boolean;
  /**
   * Rule 5.4.1.7: does any signature in a third-party invite's `signed` object verify with any
   * of `publicKeys` (unpadded base64 ed25519 keys from the `m.room.third_party_invite` event)?
   * Without this callback third-party invites are rejected as unsupported.
   */
  verifyThirdPartyInvite?: (signed: Record<string, unknown>, publicKeys: readonly string[]) => boolean;
}

export type Membership = "join" | "invite" | "leave" | "ban" | "knock";
