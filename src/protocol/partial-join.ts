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

/** Whether a membership makes its member a hero candidate ("present": joined or invited) or a stand-in ("gone": left or banned). */
export type HeroKind = "present" | "gone";

/**
 * Whether a state event makes its member a hero candidate: "present" for a joined or invited
 * member, "gone" for a left or banned one (heroes only when nobody is present); never `joiner`,
 * never a knock.
 */
export function heroKind(e: StateEntry, joiner: string): HeroKind | undefined {
  if (e.pdu.type !== "m.room.member" || typeof e.pdu.state_key !== "string" || e.pdu.state_key === joiner) return undefined;
  const m = membershipOf(e.pdu);
  return m === "join" || m === "invite" ? "present" : m === "leave" || m === "ban" ? "gone" : undefined;
}

/** The hero candidates of a state, by event ID (heroKind of each event). */
export function heroCandidates(state: Iterable<StateEntry>, joiner: string): Map<string, HeroKind> {
  const out = new Map<string, HeroKind>();
  for (const e of state) {
    const kind = heroKind(e, joiner);
    if (kind) out.set(e.eventId, kind);
  }
  return out;
}

/**
 * Picks heroes from the candidates as the room's events go by in stream order (`take`, page by
 * page, so a big room's timeline is read only until 5 present members were seen): the first 5
 * present members, or, when none is present at all, the first 5 gone ones.
 */
export class HeroPicker {
  private readonly present: string[] = [];
  private readonly gone: string[] = [];
  /** `kindOf`: an event ID's hero kind (heroKind; undefined for events not in the state). */
  constructor(private readonly kindOf: (eventId: string) => HeroKind | undefined) {}

  /** Takes the next event IDs in stream order; true once no later event can change the heroes. */
  take(eventIds: Iterable<string>): boolean {
    for (const id of eventIds) {
      const kind = this.kindOf(id);
      if (kind === "present") this.present.push(id);
      else if (kind === "gone" && this.gone.length < MAX_HEROES) this.gone.push(id);
      if (this.present.length >= MAX_HEROES) return true;
    }
    return false;
  }

  /** The heroes' membership event IDs. */
  heroes(): string[] {
    return this.present.length > 0 ? this.present.slice(0, MAX_HEROES) : this.gone;
  }
}

/**
 * The state a partial-state send_join answers, in the order given: every non-member event,
 * `joiner`'s own membership, and the memberships whose event IDs are in `heroes`.
 */
export function partialJoinState(state: readonly StateEntry[], joiner: string, heroes: ReadonlySet<string>): StateEntry[] {
  return state.filter((e) => e.pdu.type !== "m.room.member" || e.pdu.state_key === joiner || heroes.has(e.eventId));
}
