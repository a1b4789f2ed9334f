/**
 * Reads of a hosted room's history: the federation reads a joined peer makes (event, state,
 * state_ids, get_missing_events, backfill, event_auth) and the use case the client API calls for
 * a user (`visibleEventsForUser`). Every read applies redactions (redactions.ts) and history
 * visibility (protocol/visibility.ts), as Synapse does:
 *
 * | read | who may ask | what is filtered |
 * | --- | --- | --- |
 * | /event, /backfill, /get_missing_events | a server with a joined member now (403) | each event the server may not see is redacted (`filter_events_for_server`, redact=True) |
 * | /state, /state_ids, /event_auth | a server with a joined member now (403) | nothing withheld (state and auth events are what a server needs to check the room), redactions applied |
 * | client reads (`visibleEventsForUser`) | any user | events the user may not see are left out |
 *
 * Every read checks the room's server ACL first. "Now" is the current state, as Synapse's
 * `assert_host_in_room`: a server is not asked to have been in the room at the event; history
 * visibility then decides what it sees in full.
 */
import { forbidden, invalidParam, notFound } from "../protocol/errors.js";
import { serverOfUserId } from "../protocol/ids.js";
import type { Pdu } from "../protocol/pdu.js";
import { redactEvent } from "../protocol/redaction.js";
import { serverVerdict, userMaySee, type HistoryVisibility, type Membership } from "../protocol/visibility.js";
import { prevEventIds, type RoomStore } from "../store/room-store.js";
import type { VisibilityLog, VisibilityLogEntry } from "../store/visibility-log.js";
import { applyRedactions, type ServedEvent, type StoredEvent } from "./redactions.js";
import { DUMMY_EVENT_TYPE, type RoomContext, type RoomService, type RoomSnapshot } from "./room-service.js";

/** The state history visibility reads at one event: after it, and before it. */
export interface VisibilityAtEvent {
  visibility: HistoryVisibility;
  visibilityBefore: HistoryVisibility;
  /** Memberships after the event of the users selected (others are not tracked). */
  members: ReadonlyMap<string, Membership | undefined>;
  membersBefore: ReadonlyMap<string, Membership | undefined>;
}

/**
 * The visibility state at each position of `streams` (null: the event is not in the timeline),
 * from the room's log, in one pass. Only members for whom `keep(userId)` holds are tracked.
 */
export function visibilityAtStreams(
  entries: readonly VisibilityLogEntry[],
  streams: readonly (number | null)[],
  keep: (userId: string) => boolean,
): (VisibilityAtEvent | null)[] {
  const out: (VisibilityAtEvent | null)[] = streams.map(() => null);
  const order = streams.map((s, i) => [s, i] as const).filter((x): x is readonly [number, number] => x[0] !== null);
  order.sort((a, b) => a[0] - b[0]);
  let visibility: HistoryVisibility = "shared";
  const members = new Map<string, Membership | undefined>();
  let p = 0;
  const apply = (e: VisibilityLogEntry) => {
    if (e.kind === "visibility") visibility = e.visibility ?? "shared";
    else if (keep(e.stateKey)) members.set(e.stateKey, e.membership);
  };
  let previous = null as { stream: number; at: VisibilityAtEvent } | null;
  for (const [stream, index] of order) {
    // The same event asked for twice: the same answer (its own entry is already applied).
    if (previous?.stream === stream) {
      out[index] = previous.at;
      continue;
    }
    while (p < entries.length && entries[p]!.stream < stream) apply(entries[p++]!);
    const visibilityBefore = visibility;
    const membersBefore = new Map(members);
    while (p < entries.length && entries[p]!.stream === stream) apply(entries[p++]!);
    out[index] = { visibility, visibilityBefore, members: new Map(members), membersBefore };
    previous = { stream, at: out[index]! };
  }
  return out;
}

export class RoomHistory {
  private readonly rooms: RoomService;
  private readonly store: RoomStore;

  constructor(
    ctx: RoomContext,
    private readonly log: VisibilityLog,
  ) {
    this.rooms = ctx.rooms;
    this.store = ctx.store;
  }

  /** ACL, then the requesting server must have a joined member now (Synapse's assert_host_in_room). */
  private async joinedSnapshot(roomId: string, origin: string): Promise<RoomSnapshot> {
    const snap = await this.rooms.snapshot(roomId);
    this.rooms.requireAclAllows(snap, origin);
    if (!snap.joinedServers.has(origin)) throw forbidden(`Host ${origin} not in room ${roomId}`);
    return snap;
  }

  /** The visibility state at each event, tracking the members `keep` selects (two or three round trips). */
  private async visibilityAt(roomId: string, eventIds: readonly string[], keep: (userId: string) => boolean) {
    const [streams, first] = await Promise.all([this.store.streamsOf(roomId, eventIds), this.log.entries(roomId)]);
    let log = first;
    // An event persisted between the two reads is newer than the log: read the log again.
    if (streams.some((s) => s !== null && s > log.stream)) log = await this.log.entries(roomId);
    return { streams, entries: log.entries, states: visibilityAtStreams(log.entries, streams, keep) };
  }

  /**
   * Events as `origin` may have them over federation: redactions applied, and every event its
   * users could not see at the time redacted (Synapse `filter_events_for_server`, redact=True).
   */
  async forServer(snap: RoomSnapshot, origin: string, events: readonly StoredEvent[]): Promise<Pdu[]> {
    const roomId = snap.room.roomId;
    const [served, { states }] = await Promise.all([
      applyRedactions(this.store, roomId, snap.version, events),
      this.visibilityAt(roomId, events.map((e) => e.eventId), (userId) => serverOfUserId(userId) === origin),
    ]);
    return served.map((e, i) => {
      const at = states[i];
      // Not in the timeline (cannot happen for stored events): redacted, the safe side.
      const verdict = at ? serverVerdict({ visibility: at.visibility, memberships: [...at.members.values()] }) : "redacted";
      return verdict === "full" || e.redactedBy ? e.pdu : redactEvent(e.pdu, snap.version);
    });
  }

  /**
   * The client API's use case: the events `userId` may see, in the given order, with redactions
   * applied (`redactedBy` set), the others left out (spec "Room History Visibility"). Also left
   * out, as Synapse does for clients: events that are not part of the room (rejected,
   * soft-failed, outliers) and dummy events that merge forward extremities.
   */
  async visibleEventsForUser(roomId: string, userId: string, events: readonly StoredEvent[]): Promise<ServedEvent[]> {
    const { version } = await this.rooms.requireRoom(roomId);
    const ids = events.map((e) => e.eventId);
    const [served, { streams, entries, states }, statuses] = await Promise.all([
      applyRedactions(this.store, roomId, version, events),
      this.visibilityAt(roomId, ids, (u) => u === userId),
      this.store.eventStatuses(roomId, ids),
    ]);
    let lastJoin = -1;
    for (const e of entries) if (e.kind === "member" && e.stateKey === userId && e.membership === "join") lastJoin = e.stream;
    return served.filter((e, i) => {
      const at = states[i];
      const stream = streams[i];
      if (!at || stream === null || stream === undefined || statuses.has(e.eventId) || e.pdu.type === DUMMY_EVENT_TYPE) return false;
      const own = e.pdu.type === "m.room.member" && e.pdu.state_key === userId;
      return userMaySee({
        visibility: at.visibility,
        ...(e.pdu.type === "m.room.history_visibility" && e.pdu.state_key === "" ? { visibilityBefore: at.visibilityBefore } : {}),
        membership: at.members.get(userId),
        ...(own ? { ownMemberEvent: { membershipBefore: at.membersBefore.get(userId) } } : {}),
        joinedLater: lastJoin >= stream,
      });
    });
  }

  async event(eventId: string, origin: string): Promise<Pdu> {
    const roomId = await this.store.roomOfEvent(eventId);
    if (!roomId) throw notFound(`Event ${eventId} not found`);
    // Joined servers only, like the other reads (and Synapse's is_host_in_room). Allowing "any
    // member" let a server with only a knocking, invited, left or banned user read every event:
    // make_knock/make_leave templates hand out the latest event IDs as prev_events, and
    // prev_events lead to the rest of the history.
    const snap = await this.joinedSnapshot(roomId, origin);
    const pdu = await this.store.getEvent(roomId, eventId);
    if (!pdu) throw notFound(`Event ${eventId} not found`);
    return (await this.forServer(snap, origin, [{ eventId, pdu }]))[0]!;
  }

  /**
   * State before `eventId` (what /state_ids and /state mean by "state at"), plus its auth chain;
   * with `withPdus`, the events too, redactions applied.
   */
  async stateAt(
    roomId: string,
    eventId: string,
    origin: string,
    withPdus = false,
  ): Promise<{ stateIds: string[]; authChainIds: string[]; state: Pdu[]; chain: Pdu[] }> {
    const snap = await this.joinedSnapshot(roomId, origin);
    const before = await this.store.stateAt(roomId, eventId, "before");
    if (!before) throw notFound(`Event ${eventId} not found in ${roomId}`);
    const stateIds = [...before.values()];
    const chain = await this.store.authChain(roomId, stateIds);
    if (!withPdus) return { stateIds, authChainIds: [...chain.keys()], state: [], chain: [] };
    const stateEvents = await this.store.getEvents(roomId, stateIds);
    const stored = (m: Map<string, Pdu>, ids: Iterable<string>) => [...ids].flatMap((id) => (m.has(id) ? [{ eventId: id, pdu: m.get(id)! }] : []));
    const [state, chainServed] = await Promise.all([
      applyRedactions(this.store, roomId, snap.version, stored(stateEvents, stateIds)),
      applyRedactions(this.store, roomId, snap.version, stored(chain, chain.keys())),
    ]);
    return { stateIds, authChainIds: [...chain.keys()], state: state.map((e) => e.pdu), chain: chainServed.map((e) => e.pdu) };
  }

  /** Walks prev_events back from `latest` (exclusive), stopping at `earliest`, depth ≥ minDepth. */
  async missingEvents(roomId: string, origin: string, body: unknown): Promise<Pdu[]> {
    const snap = await this.joinedSnapshot(roomId, origin);
    const b = (body ?? {}) as { earliest_events?: unknown; latest_events?: unknown; limit?: unknown; min_depth?: unknown };
    if (!Array.isArray(b.latest_events) || !b.latest_events.every((x) => typeof x === "string")) throw invalidParam("latest_events must be a list of event IDs");
    const earliest = new Set(Array.isArray(b.earliest_events) ? (b.earliest_events as string[]) : []);
    const limit = Math.min(Math.max(typeof b.limit === "number" ? b.limit : 10, 0), 100);
    const minDepth = typeof b.min_depth === "number" ? b.min_depth : 0;
    const out: StoredEvent[] = [];
    const seen = new Set<string>(b.latest_events as string[]);
    let frontier: string[] = [];
    const latest = await this.store.getEvents(roomId, b.latest_events as string[]);
    for (const ev of latest.values()) frontier.push(...prevEventIds(ev));
    while (frontier.length > 0 && out.length < limit) {
      const ids = [...new Set(frontier)].filter((id) => !seen.has(id) && !earliest.has(id));
      ids.forEach((id) => seen.add(id));
      frontier = [];
      const found = await this.store.getEvents(roomId, ids);
      for (const id of ids) {
        const ev = found.get(id);
        if (!ev || ev.depth < minDepth) continue;
        out.push({ eventId: id, pdu: ev });
        if (out.length >= limit) break;
        frontier.push(...prevEventIds(ev));
      }
    }
    // Oldest first, as Synapse returns them.
    out.sort((a, b2) => a.pdu.depth - b2.pdu.depth);
    return this.forServer(snap, origin, out);
  }

  async backfill(roomId: string, origin: string, from: string[], limit: number): Promise<Pdu[]> {
    const snap = await this.joinedSnapshot(roomId, origin);
    const out: StoredEvent[] = [];
    const seen = new Set<string>();
    let frontier = [...from];
    while (frontier.length > 0 && out.length < limit) {
      const ids = [...new Set(frontier)].filter((id) => !seen.has(id));
      ids.forEach((id) => seen.add(id));
      frontier = [];
      const found = await this.store.getEvents(roomId, ids);
      for (const id of ids) {
        const ev = found.get(id);
        if (!ev) continue;
        out.push({ eventId: id, pdu: ev });
        if (out.length >= limit) break;
        frontier.push(...prevEventIds(ev));
      }
    }
    return this.forServer(snap, origin, out);
  }

  /** The auth chain of the event (its auth events, recursively), redactions applied. */
  async eventAuth(roomId: string, eventId: string, origin: string): Promise<Pdu[]> {
    const snap = await this.joinedSnapshot(roomId, origin);
    if (!(await this.store.getEvent(roomId, eventId))) throw notFound(`Event ${eventId} not found`);
    const chain = await this.store.authChain(roomId, [eventId]);
    const served = await applyRedactions(this.store, roomId, snap.version, [...chain].map(([id, pdu]) => ({ eventId: id, pdu })));
    return served.map((e) => e.pdu);
  }
}
