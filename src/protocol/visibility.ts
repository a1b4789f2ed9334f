/**
 * History visibility: who may see an event, decided from the room state at that event. Pure: the
 * caller supplies the `m.room.history_visibility` value and the memberships; src/rooms/history.ts
 * finds them in the store.
 *
 * Spec: Client-Server API, "Room History Visibility" (server behaviour): the rules depend on the
 * state of the room *at that event*; a missing or unknown value counts as `shared`.
 *   1. `world_readable`: allow.
 *   2. The user's membership was `join`: allow.
 *   3. `shared`, and the user joined the room at any point after the event was sent: allow.
 *   4. The user's membership was `invite` and the visibility `invited`: allow.
 *   5. Otherwise deny.
 * For `m.room.history_visibility` events themselves, the visibility before *or* after the event
 * may allow; for the user's own `m.room.member` events, the membership before *or* after.
 *
 * "At the event" is the state *after* the event, as Synapse reads it (its state group of an event
 * includes the event): a user sees their own join, and a server sees its own user's join.
 *
 * Servers (Synapse `filter_events_for_server` / `event_visible_to_server`; the spec's
 * Server-Server API only says servers "may not" see events their users could not): a server may
 * see an event in full when any of its users' membership at the event is `join`, or `invite` with
 * `invited`; with `shared` or `world_readable` (or an unknown value) every server in the room may.
 * Otherwise the event is served *redacted*, not withheld, so that the requesting server can still
 * build the room graph and check signatures. Synapse also redacts events whose sender asked for
 * erasure (GDPR); Gatehouse has no erasure, so there is no such input here.
 */

/** The four values, least restrictive first (Synapse's VISIBILITY_PRIORITY). */
export const HISTORY_VISIBILITIES = ["world_readable", "shared", "invited", "joined"] as const;
export type HistoryVisibility = (typeof HISTORY_VISIBILITIES)[number];

/** The memberships (spec `m.room.member`); `undefined` means the user has no membership event. */
export type Membership = "join" | "invite" | "leave" | "ban" | "knock";
const MEMBERSHIPS: readonly string[] = ["join", "invite", "leave", "ban", "knock"];

/** The visibility an `m.room.history_visibility` content sets: `shared` when absent or not understood (spec). */
export function historyVisibilityOf(content: unknown): HistoryVisibility {
  const v = typeof content === "object" && content !== null ? (content as { history_visibility?: unknown }).history_visibility : undefined;
  return typeof v === "string" && (HISTORY_VISIBILITIES as readonly string[]).includes(v) ? (v as HistoryVisibility) : "shared";
}

/** The membership an `m.room.member` content sets, or undefined when it is not one of the five. */
export function membershipOfContent(content: unknown): Membership | undefined {
  const m = typeof content === "object" && content !== null ? (content as { membership?: unknown }).membership : undefined;
  return typeof m === "string" && MEMBERSHIPS.includes(m) ? (m as Membership) : undefined;
}

/** What a requesting server gets for an event it asked for. */
export type ServerVerdict = "full" | "redacted";

export interface ServerVisibilityInput {
  /** The history visibility at the event (after it). */
  visibility: HistoryVisibility;
  /** The memberships at the event (after it) of every user of the requesting server that has one. */
  memberships: readonly (Membership | undefined)[];
}

/** Synapse `event_visible_to_server`: full, or redacted (never hidden: the graph must stay whole). */
export function serverVerdict(input: ServerVisibilityInput): ServerVerdict {
  const { visibility, memberships } = input;
  if (visibility !== "invited" && visibility !== "joined") return "full";
  for (const m of memberships) {
    if (m === "join") return "full";
    if (m === "invite" && visibility === "invited") return "full";
  }
  return "redacted";
}

export interface UserVisibilityInput {
  /** The history visibility at the event (after it). */
  visibility: HistoryVisibility;
  /** For an `m.room.history_visibility` event only: the visibility before it. */
  visibilityBefore?: HistoryVisibility;
  /** The user's membership at the event (after it); undefined when they have none. */
  membership: Membership | undefined;
  /** For the user's own `m.room.member` event only: their membership before it. */
  ownMemberEvent?: { membershipBefore: Membership | undefined };
  /** Whether the user's membership is `join` at some point at or after the event (spec rule 3). */
  joinedLater: boolean;
}

function allowedBy(visibility: HistoryVisibility, membership: Membership | undefined, joinedLater: boolean): boolean {
  if (visibility === "world_readable") return true; // rule 1
  if (membership === "join") return true; // rule 2
  if (visibility === "shared" && joinedLater) return true; // rule 3
  if (visibility === "invited" && membership === "invite") return true; // rule 4
  return false; // rule 5
}

/**
 * May a user see an event (spec algorithm, with its two "before or after" boundary rules)? Also,
 * as Synapse does, a user always sees their own leave that ends a join or an invite (a rejected
 * invite, a kick), so that a client sees the room go away.
 */
export function userMaySee(input: UserVisibilityInput): boolean {
  const visibilities = [input.visibility, ...(input.visibilityBefore !== undefined ? [input.visibilityBefore] : [])];
  const own = input.ownMemberEvent;
  const memberships = [input.membership, ...(own ? [own.membershipBefore] : [])];
  if (own && input.membership === "leave" && (own.membershipBefore === "join" || own.membershipBefore === "invite")) return true;
  for (const v of visibilities) for (const m of memberships) if (allowedBy(v, m, input.joinedLater)) return true;
  return false;
}
