/**
 * Event access for state resolution: a per-resolution cache over the injected fetcher, the
 * auth edges of an event (v12: the create event is implied by the room ID), and auth chains.
 */
import type { RoomVersion } from "../room-versions.js";
import type { IdSet, StateResEvent, StateResolutionInput } from "./types.js";

/** The event IDs an event's `auth_events` name (v1–v2 pairs or v3+ strings). */
function listedAuthIds(ev: StateResEvent): string[] {
  const refs = ev.auth_events;
  if (!Array.isArray(refs)) return [];
  const out: string[] = [];
  for (const r of refs) {
    const id = Array.isArray(r) ? r[0] : r;
    if (typeof id === "string") out.push(id);
  }
  return out;
}

/** The ID of the create event of a v12 room: `!x` → `$x` (MSC4291). */
export function createEventIdOfRoom(roomId: string): string {
  return `$${roomId.slice(1)}`;
}

/**
 * The auth events of `ev` as state resolution follows them: its `auth_events`, and in v12
 * (MSC4291) the room's create event, which every other event's `auth_events` must leave out
 * because the room ID names it (Synapse's `auth_event_ids()` does the same).
 */
export function authEdges(ev: StateResEvent, rv: RoomVersion): string[] {
  const ids = listedAuthIds(ev);
  if (rv.roomIdIsCreateEventHash && ev.type !== "m.room.create" && typeof ev.room_id === "string") {
    const create = createEventIdOfRoom(ev.room_id);
    if (!ids.includes(create)) ids.push(create);
  }
  return ids;
}

/** `origin_server_ts` as a number for the tie-breaks (a malformed value sorts as 0). */
export function originTs(ev: StateResEvent): number {
  const ts = ev.origin_server_ts;
  return typeof ts === "number" && Number.isFinite(ts) ? ts : 0;
}

/** The room an event is in (a v12 create event carries none: its ID defines the room). */
function roomOf(id: string, ev: StateResEvent, rv: RoomVersion): string | undefined {
  if (rv.roomIdIsCreateEventHash && ev.type === "m.room.create" && ev.room_id === undefined) return `!${id.slice(1)}`;
  return typeof ev.room_id === "string" ? ev.room_id : undefined;
}

export class EventCache {
  private readonly events = new Map<string, StateResEvent>();
  private readonly missing = new Set<string>();

  constructor(
    private readonly input: StateResolutionInput,
    readonly rv: RoomVersion,
  ) {}

  /** Fetches what is not cached yet. Events of another room are an error (as in Synapse). */
  async load(ids: Iterable<string>): Promise<void> {
    const want = [...new Set(ids)].filter((id) => !this.events.has(id) && !this.missing.has(id));
    if (want.length === 0) return;
    const got = await this.input.fetchEvents(want);
    for (const id of want) {
      const ev = got.get(id);
      if (!ev) {
        this.missing.add(id);
        continue;
      }
      const room = roomOf(id, ev, this.rv);
      if (room !== this.input.roomId) {
        throw new Error(`state resolution for room ${this.input.roomId} got event ${id} of room ${String(room)}`);
      }
      this.events.set(id, ev);
    }
  }

  /** Were all these asked for already (loaded, or known to be missing)? */
  loaded(ids: readonly string[]): boolean {
    return ids.every((id) => this.events.has(id) || this.missing.has(id));
  }

  /** A loaded event, or undefined when the source does not have it. */
  get(id: string): StateResEvent | undefined {
    return this.events.get(id);
  }

  /** `get`, loading first. */
  async fetch(id: string): Promise<StateResEvent | undefined> {
    await this.load([id]);
    return this.events.get(id);
  }

  authEdges(id: string): string[] {
    const ev = this.events.get(id);
    return ev ? authEdges(ev, this.rv) : [];
  }

  /**
   * The given events plus all their auth ancestors (loaded on the way, one fetch per level),
   * leaving out `known` and not walking past it. Unknown events end the walk on their branch.
   */
  async ancestorsInclusive(ids: Iterable<string>, known?: IdSet): Promise<Set<string>> {
    const seen = new Set([...ids].filter((id) => !known?.has(id)));
    let frontier = [...seen];
    while (frontier.length > 0) {
      await this.load(frontier);
      const next: string[] = [];
      for (const id of frontier) {
        for (const a of this.authEdges(id)) {
          if (!seen.has(a) && !known?.has(a)) {
            seen.add(a);
            next.push(a);
          }
        }
      }
      frontier = next;
    }
    return seen;
  }

  /**
   * The given events plus their auth chain, minus `known` — an auth-closed set (every
   * ancestor of its events is in it), which the walk does not enter. Uses the injected
   * `authChain` when there is one.
   */
  async chainInclusive(ids: readonly string[], known?: IdSet): Promise<Set<string>> {
    if (!this.input.authChain) return this.ancestorsInclusive(ids, known);
    if (ids.length === 0) return new Set();
    const chain = new Set(await this.input.authChain(ids));
    for (const id of ids) chain.add(id);
    if (known) for (const id of chain) if (known.has(id)) chain.delete(id);
    return chain;
  }
}
