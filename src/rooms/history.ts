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
 *
 * The state at an event that history visibility reads (history_visibility and memberships) is
 * the event's state group (rooms/room-state.ts): the state after it, and the state before it for
 * the boundary rules (a history_visibility event, the user's own member event). One mechanism for
 * "state at an event", the one the auth rules use; events stored before state groups existed fall
 * back to a replay of the timeline.
 */
import { forbidden, invalidParam, notFound } from "../protocol/errors.js";
import { serverOfUserId } from "../protocol/ids.js";
import type { Pdu } from "../protocol/pdu.js";
import { redactEvent } from "../protocol/redaction.js";
import { historyVisibilityOf, membershipOfContent, serverVerdict, userMaySee, type HistoryVisibility, type Membership } from "../protocol/visibility.js";
import { authEventIds, parseStateField, prevEventIds, stateField, type RoomStore } from "../store/room-store.js";
import { applyRedactions, type ServedEvent, type StoredEvent } from "./redactions.js";
import { partialStateFederationRefusal } from "./partial-state.js";
import { jsonObjectChunks, jsonStringBatches } from "./json-chunks.js";
import { keyBytes, MAP_ENTRY, type ByteLru } from "../store/byte-lru.js";
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
 * A change of history visibility or of a membership, at a stream position: the fallback replay
 * for events stored before state groups existed.
 */
export interface VisibilityChange {
  stream: number;
  /** "" for m.room.history_visibility, the user ID for m.room.member. */
  stateKey: string;
  kind: "visibility" | "member";
  visibility?: HistoryVisibility;
  membership?: Membership | undefined;
}

/**
 * The visibility state at each position of `streams` (null: the event is not in the timeline),
 * from the room's changes in stream order, in one pass. Only members for whom `keep(userId)` holds
 * are tracked. Used for events without state groups (Gatehouse then linearised its rooms).
 */
export function visibilityAtStreams(
  entries: readonly VisibilityChange[],
  streams: readonly (number | null)[],
  keep: (userId: string) => boolean,
): (VisibilityAtEvent | null)[] {
  const out: (VisibilityAtEvent | null)[] = streams.map(() => null);
  const order = streams.map((s, i) => [s, i] as const).filter((x): x is readonly [number, number] => x[0] !== null);
  order.sort((a, b) => a[0] - b[0]);
  let visibility: HistoryVisibility = "shared";
  const members = new Map<string, Membership | undefined>();
  let p = 0;
  const apply = (e: VisibilityChange) => {
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

const VISIBILITY_FIELD = stateField("m.room.history_visibility", "");
const MEMBER_FIELD_PREFIX = stateField("m.room.member", "").slice(0, -2); // `["m.room.member",`
/** Servers whose member fields are remembered per state (memberFieldsMemo). */
const MEMBER_FIELDS_SERVERS = 32;
/**
 * serverMemberFields by state and server: a state (a snapshot's, a loaded group's) never changes,
 * and a new version is another object, so the scan of a big room's state (10,000 fields) is done
 * once per state and server, not per /backfill, /event or /get_missing_events. Kept as long as
 * the state object is (a cached group or snapshot), for the last few servers asking.
 */
const memberFieldsMemo = new WeakMap<ReadonlyMap<string, string>, Map<string, readonly string[]>>();

/** The member fields (`stateField("m.room.member", user)`) of `server`'s users in `state`. */
function serverMemberFields(state: ReadonlyMap<string, string>, server: string): readonly string[] {
  let byServer = memberFieldsMemo.get(state);
  const known = byServer?.get(server);
  if (known) return known;
  // A cheap test on the field's text first (a member field ends with `:server"]`), then the parse.
  const suffix = `:${server}"]`;
  const out: string[] = [];
  state.forEach((_, field) => {
    if (field.startsWith(MEMBER_FIELD_PREFIX) && field.endsWith(suffix) && serverOfUserId(parseStateField(field)[1]) === server) out.push(field);
  });
  if (!byServer) memberFieldsMemo.set(state, (byServer = new Map()));
  if (byServer.size >= MEMBER_FIELDS_SERVERS) byServer.delete(byServer.keys().next().value!);
  byServer.set(server, out);
  return out;
}

/** What a Buffer costs beside its bytes: the JS object and its backing store's record (estimated). */
const BUFFER_OVERHEAD = 96;

/** How far back the user's membership events are followed to find their last join. */
const MAX_MEMBERSHIP_HOPS = 50;
/** Timeline entries read per batch by the replay fallback. */
const REPLAY_BATCH = 500;

/** Which events need the state before them as well as after (users' boundary rules). */
type NeedsBefore = (pdu: Pdu) => boolean;

export class RoomHistory {
  private readonly rooms: RoomService;
  private readonly store: RoomStore;

  /**
   * /state_ids's `pdu_ids` per state group, serialised (Buffers, outside V8's heap), by room,
   * state epoch and group: a stored group's state never changes (RoomStore.groupAuthChainIds).
   * Bounded by bytes (share `state_ids`); a room's answer over a quarter of the share (~15,000
   * members at the default budget) is serialised again each time.
   */
  private readonly stateIdsJson: ByteLru<string, readonly Buffer[]>;

  constructor(ctx: RoomContext) {
    this.rooms = ctx.rooms;
    this.store = ctx.store;
    this.stateIdsJson = ctx.store.cacheBudget.cache("state_ids", (k: string, batches: readonly Buffer[]) => {
      let n = MAP_ENTRY + keyBytes(k) + 16 + 8 * batches.length;
      for (const b of batches) n += BUFFER_OVERHEAD + b.length;
      return n;
    });
  }

  /** ACL, then the requesting server must have a joined member now (Synapse's assert_host_in_room). */
  private async joinedSnapshot(roomId: string, origin: string): Promise<RoomSnapshot> {
    const snap = await this.rooms.snapshot(roomId);
    if (snap.room.partialState) throw partialStateFederationRefusal(roomId);
    this.rooms.requireAclAllows(snap, origin);
    if (!snap.joinedServers.has(origin)) throw forbidden(`Host ${origin} not in room ${roomId}`);
    return snap;
  }

  /**
   * The visibility state at each event (null: not in the room's timeline): history_visibility and
   * the memberships of the users `members` selects, in the state after the event, and before it
   * for events `needsBefore` picks; read from the events' state groups (rooms/room-state.ts), the
   * same state the auth rules used. Round trips: the events' groups (one HMGET), their metadata
   * where not cached (HGETs sent together), the first group's state when not in the store's group
   * cache and any group not derived from an earlier one (a load each), the state events named
   * (one MGET, mostly from the event cache). Events stored before state groups existed have none: for
   * them the room's timeline is replayed (`replay`).
   */
  private async visibilityAt(
    roomId: string,
    events: readonly StoredEvent[],
    members: { user: string } | { server: string; serverFields: Iterable<string> },
    needsBefore: NeedsBefore = () => false,
  ): Promise<(VisibilityAtEvent | null)[]> {
    const store = this.store;
    const ids = events.map((e) => e.eventId);
    const groups = await store.eventStateGroups(roomId, ids);
    const wanted = new Set<string>();
    events.forEach((e) => {
      const g = groups.get(e.eventId);
      if (!g) return;
      wanted.add(g.after);
      if (needsBefore(e.pdu)) wanted.add(g.before);
    });
    const keep = "user" in members ? (u: string) => u === members.user : (u: string) => serverOfUserId(u) === members.server;
    // The member fields looked up in each group: the user's; or the server's users' fields, found
    // by a scan of the current state (`serverFields`) and of the first group loaded, then looked
    // up in the others (a scan of each group was O(members) per event: /backfill of 100 joins in
    // a 10,000-member room walked 1,000,000 fields). A field in neither (state resolution dropped
    // it since) is not found: that member counts as absent, and absent members can only make
    // the server see less (serverVerdict), never more.
    const fields = "user" in members ? new Set([stateField("m.room.member", members.user)]) : new Set(members.serverFields);
    // Per group: the history_visibility event and the selected members' events, by ID. The groups
    // one at a time, the events' oldest first. The first is loaded (RoomStore.loadStateGroup; in
    // the store's group cache after the first read), and in server mode its state is scanned for
    // the server's member fields (remembered per state: serverMemberFields). A later group whose
    // parent (or the ancestor its delta is on) was picked here is that one's fields with its
    // delta applied: the groups of consecutive events, no state loaded or cached for them. Loading
    // each (as LayeredMap layers) had the 100 groups of a /backfill flush the group cache (64
    // entries), so every request loaded the oldest one's chain whole again (a 10,000-member room:
    // ~40 ms of a warm /backfill limit=100).
    const depthOf = new Map<string, number>();
    events.forEach((e) => {
      const g = groups.get(e.eventId);
      if (!g) return;
      for (const x of [g.after, g.before]) if (wanted.has(x)) depthOf.set(x, Math.min(depthOf.get(x) ?? Infinity, e.pdu.depth));
    });
    const order = [...wanted].sort((x, y) => depthOf.get(x)! - depthOf.get(y)!);
    // The groups' metadata (parent and delta), read together where not cached.
    const metas = new Map(await Promise.all(order.map(async (g) => [g, g === "" ? undefined : await store.stateGroupMeta(roomId, g)] as const)));
    /** Per group picked: the tracked fields (history visibility and `fields`) → event ID. */
    const tracked = new Map<string, Map<string, string | undefined>>();
    const picked = new Map<string, { visibility: string | undefined; members: [string, string][] }>();
    for (const g of order) {
      const meta = metas.get(g);
      const from = tracked.size > 0 && meta?.up != null && meta.delta ? tracked.get(meta.up) : undefined;
      let values: Map<string, string | undefined>;
      if (from && meta?.delta) {
        values = new Map(from);
        for (const [field, id] of Object.entries(meta.delta)) if (values.has(field)) values.set(field, id ?? undefined);
      } else {
        const state = await store.loadStateGroup(roomId, g);
        if ("server" in members && picked.size === 0) for (const field of serverMemberFields(state, members.server)) fields.add(field);
        values = new Map([[VISIBILITY_FIELD, state.get(VISIBILITY_FIELD)]]);
        for (const field of fields) values.set(field, state.get(field));
      }
      tracked.set(g, values);
      const found: [string, string][] = [];
      for (const field of fields) {
        const id = values.get(field);
        if (id !== undefined) found.push([parseStateField(field)[1], id]);
      }
      picked.set(g, { visibility: values.get(VISIBILITY_FIELD), members: found });
    }
    const stateIds = new Set<string>();
    for (const p of picked.values()) {
      if (p.visibility !== undefined) stateIds.add(p.visibility);
      for (const [, id] of p.members) stateIds.add(id);
    }
    const ungrouped = events.filter((e) => !groups.has(e.eventId));
    const [stateEvents, replayed] = await Promise.all([
      store.getEvents(roomId, [...stateIds]),
      ungrouped.length > 0 ? this.replay(roomId, ungrouped, keep) : Promise.resolve(new Map<string, VisibilityAtEvent | null>()),
    ]);
    const memo = new Map<string, { visibility: HistoryVisibility; members: Map<string, Membership | undefined> }>();
    const at = (g: string) => {
      let out = memo.get(g);
      if (!out) {
        const p = picked.get(g)!;
        const hv = p.visibility === undefined ? undefined : stateEvents.get(p.visibility);
        const ms = new Map<string, Membership | undefined>();
        for (const [user, id] of p.members) {
          const ev = stateEvents.get(id);
          if (ev) ms.set(user, membershipOfContent(ev.content));
        }
        out = { visibility: historyVisibilityOf(hv?.content), members: ms };
        memo.set(g, out);
      }
      return out;
    };
    return events.map((e) => {
      const g = groups.get(e.eventId);
      if (!g) return replayed.get(e.eventId) ?? null;
      const after = at(g.after);
      const before = needsBefore(e.pdu) ? at(g.before) : after;
      return { visibility: after.visibility, visibilityBefore: before.visibility, members: after.members, membersBefore: before.members };
    });
  }

  /**
   * The fallback for events stored before state groups existed: the room's accepted
   * history_visibility and member events replayed in stream order up to the latest of them (what
   * Gatehouse applied then: it linearised rooms). Reads the timeline up to there on every call;
   * such events are only in rooms created before state groups, and only their old part.
   */
  private async replay(roomId: string, events: readonly StoredEvent[], keep: (userId: string) => boolean): Promise<Map<string, VisibilityAtEvent | null>> {
    const store = this.store;
    const streams = await store.streamsOf(roomId, events.map((e) => e.eventId));
    const upTo = Math.max(0, ...streams.filter((s): s is number => s !== null));
    const changes: VisibilityChange[] = [];
    for (let from = 0; from <= upTo; ) {
      const page = (await store.timeline(roomId, from, REPLAY_BATCH)).filter((e) => e.stream <= upTo);
      if (page.length === 0) break;
      const pageIds = page.map((e) => e.eventId);
      const [statuses, pdus] = await Promise.all([store.eventStatuses(roomId, pageIds), store.getEvents(roomId, pageIds)]);
      for (const { eventId, stream } of page) {
        const ev = pdus.get(eventId);
        if (!ev || statuses.has(eventId) || typeof ev.state_key !== "string") continue; // not in state
        if (ev.type === "m.room.history_visibility" && ev.state_key === "") changes.push({ stream, stateKey: "", kind: "visibility", visibility: historyVisibilityOf(ev.content) });
        else if (ev.type === "m.room.member") changes.push({ stream, stateKey: ev.state_key, kind: "member", membership: membershipOfContent(ev.content) });
      }
      from = page[page.length - 1]!.stream + 1;
    }
    const states = visibilityAtStreams(changes, streams, keep);
    return new Map(events.map((e, i) => [e.eventId, states[i] ?? null]));
  }

  /**
   * The stream position of `userId`'s last join (-1: never joined): their member event in the
   * current state, then back through the member event each one lists in its auth_events (the
   * auth rules put the target's previous membership there), to the first join.
   */
  private async lastJoinStream(snap: RoomSnapshot, userId: string): Promise<number> {
    const roomId = snap.room.roomId;
    const field = stateField("m.room.member", userId);
    let id = snap.stateIds.get(field);
    let pdu = snap.state.get(field);
    for (let hop = 0; id !== undefined && pdu !== undefined && hop < MAX_MEMBERSHIP_HOPS; hop++) {
      if (membershipOfContent(pdu.content) === "join") return (await this.store.streamsOf(roomId, [id]))[0] ?? -1;
      const auth = await this.store.getEvents(roomId, authEventIds(pdu));
      const previous = [...auth].find(([, ev]) => ev.type === "m.room.member" && ev.state_key === userId);
      [id, pdu] = previous ?? [undefined, undefined];
    }
    return -1;
  }

  /**
   * Events as `origin` may have them over federation: redactions applied, and every event its
   * users could not see at the time redacted (Synapse `filter_events_for_server`, redact=True).
   */
  async forServer(snap: RoomSnapshot, origin: string, events: readonly StoredEvent[]): Promise<Pdu[]> {
    const roomId = snap.room.roomId;
    const [served, states] = await Promise.all([
      applyRedactions(this.store, roomId, snap.version, events),
      this.visibilityAt(roomId, events, { server: origin, serverFields: serverMemberFields(snap.stateIds, origin) }),
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
    const snap = await this.rooms.snapshot(roomId);
    const ids = events.map((e) => e.eventId);
    const isVisibilityEvent = (pdu: Pdu) => pdu.type === "m.room.history_visibility" && pdu.state_key === "";
    const isOwnMemberEvent = (pdu: Pdu) => pdu.type === "m.room.member" && pdu.state_key === userId;
    const [served, states, streams, statuses, lastJoin] = await Promise.all([
      applyRedactions(this.store, roomId, snap.version, events),
      this.visibilityAt(roomId, events, { user: userId }, (pdu) => isVisibilityEvent(pdu) || isOwnMemberEvent(pdu)),
      this.store.streamsOf(roomId, ids),
      this.store.eventStatuses(roomId, ids),
      this.lastJoinStream(snap, userId),
    ]);
    return served.filter((e, i) => {
      const at = states[i];
      const stream = streams[i];
      if (!at || stream === null || stream === undefined || statuses.has(e.eventId) || e.pdu.type === DUMMY_EVENT_TYPE) return false;
      const pdu = events[i]!.pdu;
      return userMaySee({
        visibility: at.visibility,
        ...(isVisibilityEvent(pdu) ? { visibilityBefore: at.visibilityBefore } : {}),
        membership: at.members.get(userId),
        ...(isOwnMemberEvent(pdu) ? { ownMemberEvent: { membershipBefore: at.membersBefore.get(userId) } } : {}),
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
   * /state_ids's answer (`pdu_ids`: the state before `eventId`, what /state_ids means by "state
   * at"; `auth_chain_ids`) as JSON chunks (rooms/json-chunks.ts): the checks and the auth chain
   * walk happen here, before the first chunk; the IDs are then serialised 1,000 at a time
   * (~4.5 MB in a 100,000-member room, never one string).
   */
  async stateIdsAnswer(roomId: string, eventId: string, origin: string): Promise<AsyncGenerator<Buffer>> {
    const { stateIds, chainIds, groupKey } = await this.stateBeforeWithChain(roomId, eventId, origin);
    // A state group's IDs serialised once (stateIdsJson): the answer at any event of that group.
    let pduIds = groupKey === undefined ? undefined : this.stateIdsJson.get(groupKey);
    if (!pduIds) {
      const batches: Buffer[] = [];
      for await (const batch of jsonStringBatches(stateIds())) batches.push(...batch);
      if (groupKey !== undefined) this.stateIdsJson.set(groupKey, batches);
      pduIds = batches;
    }
    const served = pduIds;
    return jsonObjectChunks({}, [
      ["pdu_ids", (async function* () { for (const b of served) yield [b]; })()],
      ["auth_chain_ids", jsonStringBatches(chainIds)],
    ]);
  }

  /**
   * /state's answer (`pdus`: the state before `eventId`; `auth_chain`), redactions applied, as
   * JSON chunks (rooms/json-chunks.ts): the checks and the auth chain walk happen here, before the
   * first chunk; the events are then read from Redis 500 at a time and sent as stored
   * (RoomStore.servedEventJson). Synapse asks it after a partial-state join: in a
   * 100,000-member room it is ~58 MB, never built whole.
   */
  async stateAnswer(roomId: string, eventId: string, origin: string): Promise<AsyncGenerator<Buffer>> {
    const { version, stateIds, chainIds } = await this.stateBeforeWithChain(roomId, eventId, origin);
    return jsonObjectChunks({}, [
      ["pdus", this.store.servedEventJson(roomId, version, stateIds())],
      ["auth_chain", this.store.servedEventJson(roomId, version, chainIds)],
    ]);
  }

  /**
   * The state before `eventId` (its event IDs) and its auth chain's IDs, after the checks (403,
   * 404). The walk starts from the state's events: those the current state holds too come from
   * the snapshot in memory (only their auth_events are read: redaction keeps them), the others
   * are read. /state at a recent event of a 100,000-member room reads ~none.
   */
  private async stateBeforeWithChain(
    roomId: string,
    eventId: string,
    origin: string,
  ): Promise<{ version: RoomSnapshot["version"]; stateIds: () => string[]; chainIds: readonly string[]; groupKey: string | undefined }> {
    const snap = await this.joinedSnapshot(roomId, origin);
    const at = await this.store.readStateGroupAt(roomId, eventId, "before");
    if (!at) throw notFound(`Event ${eventId} not found in ${roomId}`);
    const before = at.state;
    const stateIds = () => {
      const ids: string[] = [];
      before.forEach((id) => ids.push(id)); // a LayeredMap's fast path (no generator step per entry)
      return ids;
    };
    function* starts(): Generator<string | Pdu> {
      for (const [field, id] of before) yield (snap.stateIds.get(field) === id ? snap.state.get(field) : undefined) ?? id;
    }
    // The chain of a state group is remembered by group (RoomStore.groupAuthChainIds): a peer
    // resyncing after a join asks /state_ids and /state at the same event, and the next joins'
    // groups extend it.
    const chainIds = at.group === undefined ? await this.store.authChainIds(roomId, starts()) : await this.store.groupAuthChainIds(roomId, snap.room.stateEpoch ?? "", at.group, before, starts);
    const epoch = snap.room.stateEpoch ?? "";
    return { version: snap.version, stateIds, chainIds, groupKey: at.group === undefined ? undefined : `${roomId} ${epoch} ${at.group}` };
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

  /**
   * /event_auth's answer (`auth_chain`: the event's auth events, recursively, redactions applied)
   * as JSON chunks, the checks (403, 404) and the walk before the first chunk: an event's chain
   * holds every power levels event before it and the memberships its auth rules named, so it
   * grows with the room's history; the events are streamed as /state's are.
   */
  async eventAuthAnswer(roomId: string, eventId: string, origin: string): Promise<AsyncGenerator<Buffer>> {
    const snap = await this.joinedSnapshot(roomId, origin);
    if (!(await this.store.getEvent(roomId, eventId))) throw notFound(`Event ${eventId} not found`);
    const chainIds = await this.store.authChainIds(roomId, [eventId]);
    return jsonObjectChunks({}, [["auth_chain", this.store.servedEventJson(roomId, snap.version, chainIds)]]);
  }
}
