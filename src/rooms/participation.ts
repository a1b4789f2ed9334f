/**
 * Rooms hosted elsewhere, as a participant: after a local user's send_join, Gatehouse keeps the
 * room in the same structures as the rooms it hosts (events in the room's slot, state groups,
 * current state, forward extremities), flagged `hostedElsewhere`, so that the room service,
 * the client API, the admin API and application-service pushes work there unchanged.
 *
 * What differs from a hosted room (and is decided here or by that flag):
 * - the room arrives from a send_join response that is checked first (checkSendJoin): whole, or
 *   without most member events when we asked for partial state (then completed in the background:
 *   rooms/partial-state.ts);
 * - Gatehouse sends only its own events there, to every server with a joined member
 *   (RoomService.persist): events of other servers are never relayed;
 * - PDUs over /send are taken only while a local user is joined (acceptsPdus); otherwise they
 *   are left out of the answer, as Synapse does for a room it is not in;
 * - prev_events Gatehouse lacks are fetched from the sending server with /get_missing_events
 *   by the gap filler all rooms share (rooms/missing-events.ts; never below the depth of our own
 *   join, the oldest event of the timeline); a gap that leaves open is bridged with the state at
 *   it from the same server (/state_ids; rooms/gap-state.ts, fetched events kept as outliers).
 *   An event whose prev events are still missing after both is REFUSED with a logged reason
 *   (policy "refuse", chosen by inbound-transactions.ts from `hostedElsewhere`);
 * - history before our join is fetched on demand (backfill: a client's /messages reached the
 *   start of what is stored) with /backfill from a server in the room, each event stored before
 *   the timeline's start with the state at it (from its prev event's, or /state_ids when that is
 *   not known) and checked against its auth events and that state.
 */
import { checkEventAuth, type EventLike } from "../protocol/auth/index.js";
import { MatrixError } from "../protocol/errors.js";
import { roomIdFromCreateEvent } from "../protocol/event-hashing.js";
import { parseServerName, serverOfUserId } from "../protocol/ids.js";
import { isPlainObject, type Pdu } from "../protocol/pdu.js";
import type { RoomVersion } from "../protocol/room-versions.js";
import { authEdges, createEventIdOfRoom } from "../protocol/state-res/index.js";
import { authEventIds, prevEventIds, stateField, type RoomStore, type StateGroupWrite } from "../store/room-store.js";
import { joinedServerOf } from "../store/state-cache.js";
import { FederationRequestError, type FederationClient } from "../net/federation-client.js";
import type { EventVerifier } from "./event-verifier.js";
import type { RoomService, RoomSnapshot } from "./room-service.js";
import type { Logger } from "../logger.js";

/** Events asked for per /backfill call at most. */
export const MAX_BACKFILL = 50;
/** State events fetched one by one (/event) per backfill at most; beyond, the backfill stops. */
const MAX_BACKFILL_FETCHES = 500;

/** servers_in_room entries taken at most (a room's servers; beyond, the answer is refused). */
export const MAX_SERVERS_IN_ROOM = 100_000;

/** A send_join response that failed a check: 502, nothing stored. */
export function badSendJoin(server: string, why: string): MatrixError {
  return new MatrixError(502, "M_UNKNOWN", `refused the send_join response of ${server}: ${why}`);
}

export interface CheckedJoin {
  /** The state before the join: field → event ID. */
  stateIds: Map<string, string>;
  /** State and auth chain events by ID (kept copies: redacted where the content hash failed). */
  events: Map<string, Pdu>;
  create: Pdu;
  /** Our join: the resident's countersigned copy when it sent one (restricted joins), else ours. */
  join: { eventId: string; pdu: Pdu };
  /** A members_omitted answer (asked for with omit_members=true): its servers_in_room. */
  partial?: { servers: string[] };
}

/** The auth rules' restricted-join check: the authorising server's signature is present (verified before). */
function signedByServerOf(event: EventLike, via: string): boolean {
  const server = serverOfUserId(via);
  const sigs = event.signatures as Record<string, unknown> | undefined;
  return server !== undefined && isPlainObject(sigs?.[server]);
}

/**
 * Checks a v2 send_join response before anything is stored: partial state (members_omitted) only
 * when we asked for it (`partial`), then with a servers_in_room list of server names; every event of
 * `state` and `auth_chain` in this room, well-formed for the room version, signed by the servers
 * that must sign it (its origin, and the authorising server of a restricted join), with its
 * content hash checked (a mismatch keeps the redacted copy, as the spec says); one create event
 * of the version make_join named (in v12, the one the room ID is the hash of); no two state
 * events for one key; the auth chain complete for every event; every event allowed by the auth
 * rules against its auth events; and our join allowed against the returned state.
 */
export async function checkSendJoin(
  verifier: EventVerifier,
  input: { server: string; roomId: string; version: RoomVersion; joinEventId: string; joinPdu: Pdu; response: unknown; partial?: boolean },
): Promise<CheckedJoin> {
  const { server, roomId, version } = input;
  const refuse = (why: string) => badSendJoin(server, why);
  const r = input.response;
  if (!isPlainObject(r)) throw refuse("the answer is not an object");
  // Partial state only when we asked for it (omit_members=true): a server that omits members
  // otherwise gives a state we would take for whole.
  let partial: { servers: string[] } | undefined;
  if (r.members_omitted === true) {
    if (!input.partial) throw refuse("members_omitted, but we did not send omit_members=true");
    const servers = r.servers_in_room;
    // Spec v1.19: servers_in_room is required when members_omitted is true.
    if (!Array.isArray(servers) || servers.length === 0 || servers.some((x) => typeof x !== "string" || parseServerName(x) === null))
      throw refuse("members_omitted without servers_in_room, a non-empty list of server names");
    if (servers.length > MAX_SERVERS_IN_ROOM) throw refuse(`servers_in_room names more than ${MAX_SERVERS_IN_ROOM} servers`);
    partial = { servers: [...new Set(servers as string[])].sort() };
  } else if (r.members_omitted !== undefined && r.members_omitted !== false) throw refuse("members_omitted must be a boolean");
  if (!Array.isArray(r.state) || !Array.isArray(r.auth_chain)) throw refuse("state and auth_chain must be lists");

  const events = new Map<string, Pdu>();
  const stateIds = new Map<string, string>();
  let create: { id: string; pdu: Pdu } | undefined;
  const take = async (raw: unknown, inState: boolean): Promise<void> => {
    const checked = await verifier.verify(raw, version);
    if (!checked.ok) {
      const id = isPlainObject(raw) && typeof raw.type === "string" ? `a ${raw.type} event` : "an event";
      throw refuse(`${id} in ${inState ? "state" : "auth_chain"} failed its checks: ${checked.reason}`);
    }
    const { eventId, pdu } = checked;
    const isCreate = pdu.type === "m.room.create" && pdu.state_key === "";
    if (isCreate && version.roomIdIsCreateEventHash) {
      let derived: string | undefined;
      try {
        derived = roomIdFromCreateEvent(pdu, version);
      } catch {
        derived = undefined;
      }
      if (derived !== roomId) throw refuse(`create event ${eventId} is not the create event of ${roomId}`);
    } else if (pdu.room_id !== roomId) {
      throw refuse(`event ${eventId} belongs to ${String(pdu.room_id)}, not ${roomId}`);
    }
    if (isCreate) {
      if (create && create.id !== eventId) throw refuse(`two create events (${create.id}, ${eventId})`);
      create = { id: eventId, pdu };
    }
    events.set(eventId, pdu);
    if (inState) {
      if (typeof pdu.state_key !== "string") throw refuse(`state holds ${eventId}, which is not a state event`);
      const field = stateField(pdu.type, pdu.state_key);
      const other = stateIds.get(field);
      if (other !== undefined && other !== eventId) throw refuse(`state holds two events for ${pdu.type} "${pdu.state_key}" (${other}, ${eventId})`);
      stateIds.set(field, eventId);
    }
  };
  for (const raw of r.state) await take(raw, true);
  for (const raw of r.auth_chain) await take(raw, false);

  if (!create) throw refuse("no m.room.create event");
  if (stateIds.get(stateField("m.room.create", "")) !== create.id) throw refuse("the create event is not in state");
  const createVersion = (create.pdu.content as { room_version?: unknown }).room_version ?? "1";
  if (createVersion !== version.id) throw refuse(`the create event says room version ${String(createVersion)}, make_join said ${version.id}`);
  const createId = create.id;

  // Our join: the resident may return it countersigned (restricted joins); it must be the same event.
  let join = { eventId: input.joinEventId, pdu: input.joinPdu };
  if (r.event !== undefined) {
    const checked = await verifier.verify(r.event, version);
    if (!checked.ok) throw refuse(`the returned join event failed its checks: ${checked.reason}`);
    if (checked.eventId !== input.joinEventId) throw refuse(`the returned join event is ${checked.eventId}, not ours (${input.joinEventId})`);
    join = { eventId: checked.eventId, pdu: checked.pdu };
  }

  // The auth chain is complete, and every event passes the auth rules against its auth events
  // (auth events first; a cycle is refused).
  const allowed = new Set<string>();
  const visiting = new Set<string>();
  const authorise = (eventId: string, pdu: Pdu): void => {
    if (allowed.has(eventId)) return;
    if (visiting.has(eventId)) throw refuse(`the auth chain of ${eventId} has a cycle`);
    visiting.add(eventId);
    const authState = new Map<string, Pdu>();
    const listed: Pdu[] = [];
    for (const id of authEdges(pdu, version)) {
      const auth = events.get(id);
      if (!auth) throw refuse(`the auth chain is incomplete: ${eventId} has auth event ${id}, which the response does not hold`);
      authorise(id, auth);
      if (typeof auth.state_key === "string") authState.set(stateField(auth.type, auth.state_key), auth);
      if (authEventIds(pdu).includes(id)) listed.push(auth);
    }
    const verdict = checkEventAuth(pdu, version, (t, k) => authState.get(stateField(t, k)), {
      createEventId: createId,
      authEvents: listed,
      verifyJoinAuthorisedVia: signedByServerOf,
    });
    if (!verdict.allowed) throw refuse(`${pdu.type} event ${eventId} fails the auth rules against its auth events: ${verdict.reason}`);
    visiting.delete(eventId);
    allowed.add(eventId);
  };
  for (const [id, pdu] of events) authorise(id, pdu);
  authorise(join.eventId, join.pdu);

  // The returned state must let our join in. A partial state may lack a member event the join
  // needs (the authorising user of a restricted join): the join's own auth events stand in for
  // the member events the state omits (they passed the auth rules above).
  const byField = new Map<string, Pdu>();
  for (const [field, id] of stateIds) byField.set(field, events.get(id)!);
  const joinAuth = new Map<string, Pdu>();
  if (partial) {
    for (const id of authEventIds(join.pdu)) {
      const ev = events.get(id)!;
      if (ev.type === "m.room.member" && typeof ev.state_key === "string") joinAuth.set(stateField(ev.type, ev.state_key), ev);
    }
  }
  const lookup = (t: string, k: string): Pdu | undefined => byField.get(stateField(t, k)) ?? joinAuth.get(stateField(t, k));
  const verdict = checkEventAuth(join.pdu, version, lookup, { createEventId: createId, verifyJoinAuthorisedVia: signedByServerOf });
  if (!verdict.allowed) throw refuse(`the returned state does not allow our join: ${verdict.reason}`);
  return { stateIds, events, create: create.pdu, join, ...(partial ? { partial } : {}) };
}

export interface ParticipationDeps {
  rooms: RoomService;
  store: RoomStore;
  client: Pick<FederationClient, "call">;
  verifier: EventVerifier;
  serverName: string;
  logger: Logger;
  /** Application services interested in an event (as RoomService's). */
  appserviceDestinations?: (pdu: Pdu, roomId: string, stateBefore: ReadonlyMap<string, Pdu> | null) => Promise<string[]>;
  onQueued?: (destinations: readonly string[]) => void;
  /** A room was stored with partial state: its resync starts (rooms/partial-state.ts). */
  onPartialState?: (roomId: string) => void;
}

export class Participation {
  constructor(private readonly d: ParticipationDeps) {}

  /**
   * Checks a send_join response (checkSendJoin) and stores the room: refused with 502 and nothing
   * written when a check fails; 409 when the room is hosted here.
   */
  async storeJoin(input: { server: string; roomId: string; version: RoomVersion; joinEventId: string; joinPdu: Pdu; response: unknown; partial?: boolean }): Promise<void> {
    const checked = await checkSendJoin(this.d.verifier, input);
    const { roomId } = input;
    const members = new Map<string, string>();
    const stateEvents = new Map<string, Pdu>();
    for (const [field, id] of checked.stateIds) {
      const pdu = checked.events.get(id)!;
      stateEvents.set(field, pdu);
      if (pdu.type === "m.room.member") members.set(pdu.state_key as string, String((pdu.content as { membership?: unknown }).membership ?? ""));
    }
    members.set(checked.join.pdu.state_key as string, "join");
    const destinations = (await this.d.appserviceDestinations?.(checked.join.pdu, roomId, stateEvents)) ?? [];
    const result = await this.d.store.persistJoinedRoom({
      roomId,
      version: input.version.id,
      creator: checked.create.sender,
      createdTs: checked.create.origin_server_ts,
      stateBefore: checked.stateIds,
      members,
      outliers: [...checked.events].map(([eventId, pdu]) => ({ eventId, pdu })),
      join: checked.join,
      destinations,
      ...(checked.partial ? { partialState: { servers: checked.partial.servers, via: input.server, joinEventId: checked.join.eventId } } : {}),
    });
    if (result === "hosted") throw new MatrixError(409, "M_UNKNOWN", `${roomId} is hosted here`);
    if (result === "persisted" && destinations.length > 0) this.d.onQueued?.(destinations);
    this.d.logger.info({ roomId, server: input.server, stateEvents: checked.stateIds.size, events: checked.events.size, result, partialState: checked.partial !== undefined }, "stored a room hosted elsewhere after send_join");
    if (result === "persisted" && checked.partial) this.d.onPartialState?.(roomId);
  }

  /** The room's snapshot when it is a room hosted elsewhere that Gatehouse stores, else null. */
  async snapshotIfElsewhere(roomId: string): Promise<RoomSnapshot | null> {
    const room = await this.d.store.getRoom(roomId);
    return room?.hostedElsewhere ? this.d.rooms.snapshot(roomId) : null;
  }

  /** Whether a local user is joined: only then does Gatehouse take PDUs for (and send into) the room. */
  localUserJoined(snap: RoomSnapshot): boolean {
    return snap.joinedServers.has(this.d.serverName);
  }

  /** Whether /send PDUs for this room are taken: hosted here, or hosted elsewhere with a local user joined. */
  acceptsPdus(snap: RoomSnapshot): boolean {
    return !snap.room.hostedElsewhere || this.localUserJoined(snap);
  }

  /**
   * Fetches up to `limit` events older than the start of the room's timeline with /backfill from
   * a server in the room and stores them before it (see the module comment). Returns how many were
   * stored; 0 when the room is not hosted elsewhere, no local user is in it, the timeline starts
   * with the create event, or no server answered.
   */
  async backfill(roomId: string, limit: number): Promise<number> {
    const snap = await this.snapshotIfElsewhere(roomId);
    if (!snap || !this.localUserJoined(snap)) return 0;
    const { store } = this.d;
    const version = snap.version;
    const start = await store.timelineStart(roomId);
    if (!start) return 0;
    const first = await store.getEvent(roomId, start.eventId);
    if (!first || first.type === "m.room.create") return 0;
    const wanted = Math.max(1, Math.min(limit, MAX_BACKFILL));
    for (const server of this.otherServers(snap)) {
      let answer: { pdus?: unknown };
      try {
        answer = await this.d.client.call<{ pdus?: unknown }>("GET", server, `/_matrix/federation/v1/backfill/${encodeURIComponent(roomId)}?v=${encodeURIComponent(start.eventId)}&limit=${wanted + 1}`);
      } catch (e) {
        this.d.logger.info({ roomId, server, err: (e as Error).message }, "backfill failed");
        continue;
      }
      const pdus = Array.isArray(answer.pdus) ? answer.pdus.slice(0, wanted * 2) : [];
      const got = new Map<string, Pdu>();
      for (const raw of pdus) {
        const checked = await this.d.verifier.verify(raw, version);
        // In the room: its room_id, or (a v12 create event has none) the room ID is its hash.
        const inRoom = checked.ok && (checked.pdu.room_id === roomId || (version.roomIdIsCreateEventHash && checked.eventId === createEventIdOfRoom(roomId)));
        if (!checked.ok || !inRoom || checked.eventId === start.eventId) continue;
        got.set(checked.eventId, checked.pdu);
      }
      // Events already in the timeline are left out.
      const inTimeline = await store.streamsOf(roomId, [...got.keys()]);
      [...got.keys()].forEach((id, i) => inTimeline[i] !== null && got.delete(id));
      if (got.size === 0) continue;
      return this.storeBackfill(server, snap, start.stream, got);
    }
    return 0;
  }

  private async storeBackfill(server: string, snap: RoomSnapshot, startStream: number, got: Map<string, Pdu>): Promise<number> {
    const { store } = this.d;
    const roomId = snap.room.roomId;
    const version = snap.version;
    const createId = version.roomIdIsCreateEventHash ? createEventIdOfRoom(roomId) : snap.stateIds.get(stateField("m.room.create", ""));
    const fetched = new Map<string, Pdu>();
    let fetches = 0;
    /** Events by ID: fetched now, backfilled now, or stored (redacted state events served redacted). */
    const eventsOf = async (ids: readonly string[]): Promise<Map<string, Pdu>> => {
      const out = new Map<string, Pdu>();
      const rest: string[] = [];
      for (const id of ids) {
        const ev = got.get(id) ?? fetched.get(id);
        if (ev) out.set(id, ev);
        else rest.push(id);
      }
      for (const [id, ev] of await store.getStateEvents(roomId, version, rest)) out.set(id, ev);
      for (const id of rest.filter((x) => !out.has(x))) {
        if (++fetches > MAX_BACKFILL_FETCHES) throw new MatrixError(502, "M_UNKNOWN", `backfill of ${roomId} needs more than ${MAX_BACKFILL_FETCHES} state events`);
        const r = await this.d.client.call<{ pdus?: unknown }>("GET", server, `/_matrix/federation/v1/event/${encodeURIComponent(id)}`);
        const raw = Array.isArray(r.pdus) ? r.pdus[0] : undefined;
        const checked = await this.d.verifier.verify(raw, version);
        if (!checked.ok || checked.eventId !== id) continue;
        fetched.set(id, checked.pdu);
        out.set(id, checked.pdu);
      }
      return out;
    };
    const groups: StateGroupWrite[] = [];
    const ids = await store.allocateStateGroups(roomId, got.size * 2);
    const after = new Map<string, { group: string; ids: Map<string, string> }>();
    const written: { eventId: string; pdu: Pdu; before: string; after: string }[] = [];
    const order = [...got].sort(([a, x], [b, y]) => (x.depth ?? 0) - (y.depth ?? 0) || (a < b ? -1 : 1));
    try {
      for (const [eventId, pdu] of order) {
        // The state before it: after its one prev event when we built that, else /state_ids.
        const prevs = prevEventIds(pdu);
        let before = prevs.length === 1 ? after.get(prevs[0]!) : undefined;
        if (!before) {
          const r = await this.d.client.call<{ pdu_ids?: unknown }>("GET", server, `/_matrix/federation/v1/state_ids/${encodeURIComponent(roomId)}?event_id=${encodeURIComponent(eventId)}`);
          const list = Array.isArray(r.pdu_ids) ? r.pdu_ids.filter((x): x is string => typeof x === "string") : [];
          const events = await eventsOf(list);
          const state = new Map<string, string>();
          // (A v12 create event has no room_id: it is the room's by its ID.)
          for (const [id, ev] of events) if (typeof ev.state_key === "string" && (ev.room_id === roomId || id === createId)) state.set(stateField(ev.type, ev.state_key), id);
          const id = ids.shift()!;
          groups.push({ id, parent: null, delta: Object.fromEntries(state), depth: 0 });
          before = { group: id, ids: state };
        }
        // The auth rules: against its auth events, then against the state before it.
        const authIds = authEventIds(pdu);
        const auth = await eventsOf(authEdges(pdu, version));
        const authState = new Map<string, Pdu>();
        for (const ev of auth.values()) if (typeof ev.state_key === "string") authState.set(stateField(ev.type, ev.state_key), ev);
        const listed = authIds.map((id) => auth.get(id)).filter((e): e is Pdu => e !== undefined);
        const opts = { createEventId: createId, verifyJoinAuthorisedVia: signedByServerOf };
        let verdict = listed.length === authIds.length ? checkEventAuth(pdu, version, (t, k) => authState.get(stateField(t, k)), { ...opts, authEvents: listed }) : { allowed: false, reason: "unknown auth events" };
        if (verdict.allowed) {
          const stateEvents = await eventsOf([...before.ids.values()]);
          verdict = checkEventAuth(pdu, version, (t, k) => stateEvents.get(before!.ids.get(stateField(t, k)) ?? ""), opts);
        }
        if (!verdict.allowed) {
          this.d.logger.info({ roomId, eventId, reason: verdict.reason }, "refused a backfilled event");
          continue;
        }
        let afterState = before;
        if (typeof pdu.state_key === "string") {
          const field = stateField(pdu.type, pdu.state_key);
          const id = ids.shift()!;
          const parent = groups.find((g) => g.id === before!.group);
          groups.push({ id, parent: before.group, delta: { [field]: eventId }, depth: (parent?.depth ?? (await store.stateGroupDepth(roomId, before.group))) + 1 });
          afterState = { group: id, ids: new Map(before.ids).set(field, eventId) };
        }
        after.set(eventId, afterState);
        written.push({ eventId, pdu, before: before.group, after: afterState.group });
      }
    } catch (e) {
      if (!(e instanceof MatrixError) && !(e instanceof FederationRequestError)) throw e;
      this.d.logger.info({ roomId, server, err: (e as Error).message }, "backfill stopped");
    }
    if (written.length === 0) return 0;
    // Just before the timeline's start, oldest first.
    const events = written.map((w, i) => ({ ...w, score: startStream - (written.length - i) }));
    const stored = await store.persistBackfill(roomId, {
      groups,
      outliers: [...fetched].filter(([id]) => !got.has(id)).map(([eventId, pdu]) => ({ eventId, pdu })),
      events,
    });
    this.d.logger.info({ roomId, server, stored }, "backfilled a room hosted elsewhere");
    return stored;
  }

  /** Servers with a joined member in the room's current state, but ours. */
  otherServers(snap: RoomSnapshot): string[] {
    const out = new Set<string>();
    for (const ev of snap.state.values()) {
      const s = joinedServerOf(ev);
      if (s && s !== this.d.serverName) out.add(s);
    }
    return [...out].sort();
  }
}
