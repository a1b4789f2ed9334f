/**
 * Partial-state joins (spec v1.19, `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`
 * with `omit_members=true`; MSC3706 and MSC3943): which events of the state before the join a
 * resident server keeps in `state` when the joining server accepts a reduced answer.
 *
 * - `m.room.member` events may be omitted from `state` (then `members_omitted` is true and
 *   `servers_in_room` is required); every other state event is kept.
 * - The joining user's own membership before the join (an invite, a knock, a leave) is kept:
 *   the join's auth events name it, and the joining server must know it.
 * - If the room has no `m.room.name` nor `m.room.canonical_alias` event, the memberships of the
 *   room's heroes (the `m.heroes` of the client-server /sync room summary: the first 5 members
 *   by stream ordering that are joined or invited, never the user themself; the left and banned
 *   members when there are none) are kept too, so the joining server can name the room.
 * - Events returned in `state` may be left out of `auth_chain` (the caller drops them).
 *
 * Pure: the caller supplies the state and, for the heroes, the stream order of their memberships.
 */
import type { Pdu } from "./pdu.js";

export interface StateEntry {
  eventId: string;
  pdu: Pdu;
}

/** Heroes in the /sync room summary (spec: "the first 5 members of the room"). */
export const MAX_HEROES = 5;

const membershipOf = (pdu: Pdu): unknown => (pdu.content as { membership?: unknown }).membership;

/**
 * Whether the state names the room itself, so no heroes are needed. The send_join text asks for
 * heroes when the room has neither event; the /sync text calls for heroes when they are "unset
 * or empty", so an event whose name or alias is empty (a removed name) does not count either.
 */
export function namesItself(state: Iterable<StateEntry>): boolean {
  for (const { pdu } of state) {
    if (pdu.state_key !== "") continue;
    if (pdu.type === "m.room.name" && typeof pdu.content.name === "string" && pdu.content.name !== "") return true;
    if (pdu.type === "m.room.canonical_alias" && typeof pdu.content.alias === "string" && pdu.content.alias !== "") return true;
  }
  return false;
}

/**
 * The membership events heroes are picked from, before ordering: the joined and invited
 * members', or, when there are none, the left and banned members'; never `joiner`'s.
 */
export function heroCandidates(state: Iterable<StateEntry>, joiner: string): StateEntry[] {
  const present: StateEntry[] = [];
  const gone: StateEntry[] = [];
  for (const e of state) {
    if (e.pdu.type !== "m.room.member" || typeof e.pdu.state_key !== "string" || e.pdu.state_key === joiner) continue;
    const m = membershipOf(e.pdu);
    if (m === "join" || m === "invite") present.push(e);
    else if (m === "leave" || m === "ban") gone.push(e);
  }
  return present.length > 0 ? present : gone;
}

/**
 * The heroes' membership event IDs: the candidates ordered by the stream position of their
 * membership event (`streamOf`; an event without one goes last), ties by user ID, first 5.
 */
export function pickHeroes(candidates: readonly StateEntry[], streamOf: ReadonlyMap<string, number>): string[] {
  const pos = (e: StateEntry) => streamOf.get(e.eventId) ?? Number.POSITIVE_INFINITY;
  return [...candidates]
    .sort((a, b) => pos(a) - pos(b) || (a.pdu.state_key! < b.pdu.state_key! ? -1 : a.pdu.state_key! > b.pdu.state_key! ? 1 : 0))
    .slice(0, MAX_HEROES)
    .map((e) => e.eventId);
}

/**
 * The state a partial-state send_join answers, in the order given: every non-member event,
 * `joiner`'s own membership, and the memberships whose event IDs are in `heroes`.
 */
export function partialJoinState(state: readonly StateEntry[], joiner: string, heroes: ReadonlySet<string>): StateEntry[] {
  return state.filter((e) => e.pdu.type !== "m.room.member" || e.pdu.state_key === joiner || heroes.has(e.eventId));
}
