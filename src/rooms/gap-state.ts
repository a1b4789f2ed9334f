/**
 * The state at a gap get_missing_events could not close (rooms/missing-events.ts), taken from the
 * sending server as Synapse does (federation_event.py, _compute_event_context_with_maybe_missing_prevs
 * and _get_state_ids_after_missing_prev_event; spec, server-server API "Retrieving events"):
 *
 * for each prev event P still unknown,
 *   1. GET /state_ids/{roomId}?event_id=P: the state BEFORE P (pdu_ids) and its auth chain
 *      (auth_chain_ids);
 *   2. the events of those lists this server does not hold, and P itself, are fetched: in bulk
 *      with GET /state/{roomId}?event_id=P when 10 % or more are missing (Synapse's heuristic),
 *      else one by one with GET /event/{id} (5 at a time);
 *   3. every fetched event is checked: format, signatures and content hash (a hash mismatch keeps
 *      the redacted copy), in this room, and allowed by the auth rules against its own auth
 *      events (fetched or stored; none rejected), auth events first;
 *   4. the state after P is the state before it plus P when P is a state event; it must hold
 *      the room's create event and one event per key.
 *
 * Unlike Synapse (which stores a fetched event that fails the auth rules as rejected and goes on
 * with incomplete state when an event cannot be fetched), any failure here fails the whole
 * fallback: nothing is written, and the gap is left to the caller's policy. A fallback fetches at
 * most `maxEvents` events (GATEHOUSE_GAP_STATE_MAX_EVENTS).
 *
 * What it returns is written by the caller: the fetched events as outliers (one atomic write,
 * store/lua/persist-backfill.lua with no timeline events), and the states after each P are handed
 * to the persist path (PersistOptions.gapStates), which resolves them with the states of the prev
 * events it holds (room-state.ts stateBefore). P itself is not stored as a timeline event (a
 * non-state P is not stored at all): the event on the gap keeps unknown prev events, a backward
 * extremity.
 */
import { checkEventAuth, type EventLike } from "../protocol/auth/index.js";
import { serverOfUserId } from "../protocol/ids.js";
import { isPlainObject, type Pdu } from "../protocol/pdu.js";
import type { RoomVersion } from "../protocol/room-versions.js";
import { authEdges, createEventIdOfRoom } from "../protocol/state-res/index.js";
import { authEventIds, stateField, type RoomStore } from "../store/room-store.js";
import type { FederationClient } from "../net/federation-client.js";
import type { RoomService } from "./room-service.js";

/** /event requests under way at once (Synapse's concurrently_execute(…, 5)). */
const FETCH_CONCURRENCY = 5;

/** Why a fallback failed (logged by the caller; nothing was written). */
export class GapStateError extends Error {}

export interface GapStateDeps {
  rooms: Pick<RoomService, "verifyRemoteEvent">;
  store: Pick<RoomStore, "getEvents" | "eventStatuses">;
  client: Pick<FederationClient, "call">;
}

export interface GapStateResult {
  /** Per prev event asked for: the state after it, field → event ID. */
  states: Map<string, Map<string, string>>;
  /** The events fetched (checked), to store as outliers. */
  fetched: Map<string, Pdu>;
}

/** The auth rules' restricted-join check: the authorising server's signature is present (verified before). */
function signedByServerOf(event: EventLike, via: string): boolean {
  const server = serverOfUserId(via);
  const sigs = event.signatures as Record<string, unknown> | undefined;
  return server !== undefined && isPlainObject(sigs?.[server]);
}

function stringList(v: unknown, what: string): string[] {
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) throw new GapStateError(`${what} is not a list of event IDs`);
  return v as string[];
}

export class GapState {
  constructor(private readonly deps: GapStateDeps) {}

  /**
   * The states after `prevIds` (events of `roomId` this server holds no state for), from
   * `origin`. Throws GapStateError (or the FederationRequestError of a request that failed) when
   * any step fails; nothing is written here either way.
   */
  async statesAfter(origin: string, roomId: string, version: RoomVersion, createEventId: string | undefined, prevIds: readonly string[], maxEvents: number): Promise<GapStateResult> {
    const { client } = this.deps;
    const room = encodeURIComponent(roomId);
    const fetched = new Map<string, Pdu>();
    const lists = new Map<string, string[]>();
    /** Stored events by ID (as stored: the auth rules read redacted copies the same way). */
    const stored = new Map<string, Pdu>();
    const take = async (raw: unknown, wanted: ReadonlySet<string>): Promise<void> => {
      let checked: { eventId: string; pdu: Pdu };
      try {
        checked = await this.deps.rooms.verifyRemoteEvent(raw, version);
      } catch (e) {
        throw new GapStateError(`a fetched event failed its checks: ${(e as Error).message}`);
      }
      if (!wanted.has(checked.eventId) || fetched.has(checked.eventId)) return;
      const inRoom = checked.pdu.room_id === roomId || (version.roomIdIsCreateEventHash && checked.eventId === createEventIdOfRoom(roomId));
      if (!inRoom) throw new GapStateError(`fetched event ${checked.eventId} is not in ${roomId}`);
      fetched.set(checked.eventId, checked.pdu);
    };
    const have = async (ids: readonly string[]): Promise<Set<string>> => {
      const rest = ids.filter((id) => !stored.has(id) && !fetched.has(id));
      for (const [id, ev] of await this.deps.store.getEvents(roomId, rest)) stored.set(id, ev);
      return new Set(ids.filter((id) => stored.has(id) || fetched.has(id)));
    };

    for (const prev of prevIds) {
      const r = await client.call<{ pdu_ids?: unknown; auth_chain_ids?: unknown }>("GET", origin, `/_matrix/federation/v1/state_ids/${room}?event_id=${encodeURIComponent(prev)}`);
      if (!isPlainObject(r)) throw new GapStateError("the state_ids answer is not an object");
      const stateIds = stringList(r.pdu_ids, "pdu_ids");
      const chainIds = stringList(r.auth_chain_ids, "auth_chain_ids");
      lists.set(prev, stateIds);
      const desired = [...new Set([...stateIds, ...chainIds, prev])];
      const held = await have(desired);
      const missing = desired.filter((id) => !held.has(id));
      if (fetched.size + missing.length > maxEvents) {
        throw new GapStateError(`the state at ${prev} needs ${missing.length} more events, over the limit of ${maxEvents} (GATEHOUSE_GAP_STATE_MAX_EVENTS)`);
      }
      const wanted = new Set(missing);
      if (missing.length * 10 >= desired.length && missing.length > 1) {
        // Most is missing: the whole state and auth chain in one answer (Synapse's heuristic).
        const s = await client.call<{ pdus?: unknown; auth_chain?: unknown }>("GET", origin, `/_matrix/federation/v1/state/${room}?event_id=${encodeURIComponent(prev)}`);
        if (!isPlainObject(s) || !Array.isArray(s.pdus) || !Array.isArray(s.auth_chain)) throw new GapStateError("the state answer has no pdus and auth_chain lists");
        // The state and its auth chain (they may overlap): each at most what state_ids named.
        if (s.pdus.length + s.auth_chain.length > 2 * desired.length) throw new GapStateError("the state answer holds more events than state_ids named");
        for (const raw of [...s.pdus, ...s.auth_chain]) await take(raw, wanted);
      }
      // One by one: what is still missing (P itself is not in /state's answer).
      const queue = missing.filter((id) => !fetched.has(id));
      const worker = async (): Promise<void> => {
        for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
          const e = await client.call<{ pdus?: unknown }>("GET", origin, `/_matrix/federation/v1/event/${encodeURIComponent(id)}`);
          const raw = isPlainObject(e) && Array.isArray(e.pdus) ? e.pdus[0] : undefined;
          await take(raw, new Set([id]));
          if (!fetched.has(id)) throw new GapStateError(`the answer for event ${id} is another event`);
        }
      };
      await Promise.all(Array.from({ length: Math.min(FETCH_CONCURRENCY, queue.length) }, worker));
    }

    // P's own auth events may lie outside the state before it and its auth chain: fetched too.
    const extra = [...new Set(prevIds.flatMap((p) => authEdges(fetched.get(p) ?? stored.get(p) ?? ({} as Pdu), version)))];
    const heldExtra = await have(extra);
    const missingExtra = extra.filter((id) => !heldExtra.has(id));
    if (fetched.size + missingExtra.length > maxEvents) throw new GapStateError(`over the limit of ${maxEvents} events (GATEHOUSE_GAP_STATE_MAX_EVENTS)`);
    for (const id of missingExtra) {
      const e = await client.call<{ pdus?: unknown }>("GET", origin, `/_matrix/federation/v1/event/${encodeURIComponent(id)}`);
      await take(isPlainObject(e) && Array.isArray(e.pdus) ? e.pdus[0] : undefined, new Set([id]));
      if (!fetched.has(id)) throw new GapStateError(`the answer for event ${id} is another event`);
    }

    await this.authorise(roomId, version, createEventId, fetched, stored);

    const states = new Map<string, Map<string, string>>();
    for (const prev of prevIds) {
      const state = new Map<string, string>();
      for (const id of lists.get(prev)!) {
        const ev = fetched.get(id) ?? stored.get(id);
        if (!ev) throw new GapStateError(`state event ${id} could not be had`);
        if (typeof ev.state_key !== "string") throw new GapStateError(`the state at ${prev} names ${id}, which is not a state event`);
        const field = stateField(ev.type, ev.state_key);
        const other = state.get(field);
        if (other !== undefined && other !== id) throw new GapStateError(`the state at ${prev} holds two events for ${ev.type} "${ev.state_key}" (${other}, ${id})`);
        state.set(field, id);
      }
      if (createEventId === undefined || state.get(stateField("m.room.create", "")) !== createEventId) {
        throw new GapStateError(`the state at ${prev} does not hold the room's create event`);
      }
      // The state AFTER P: with P when it is a state event (it passed its auth events above).
      const p = fetched.get(prev) ?? stored.get(prev);
      if (!p) throw new GapStateError(`prev event ${prev} could not be had`);
      if (typeof p.state_key === "string") state.set(stateField(p.type, p.state_key), prev);
      states.set(prev, state);
    }
    return { states, fetched };
  }

  /**
   * Events of `roomId` by ID from `origin` with /event (5 at a time), with the auth events of
   * each that this server does not hold, recursively (a partial-state room lacks the member
   * events later events name: rooms/partial-state.ts), each checked as the events of a gap
   * (format, signatures, hash, in this room, the auth rules against its auth events). Throws
   * GapStateError (or the failed request's error) when any step fails; writes nothing.
   */
  async fetchWithAuth(origin: string, roomId: string, version: RoomVersion, createEventId: string | undefined, ids: readonly string[], maxEvents: number): Promise<Map<string, Pdu>> {
    const fetched = new Map<string, Pdu>();
    const stored = new Map<string, Pdu>();
    for (let wanted = [...new Set(ids)]; wanted.length > 0; ) {
      const rest = wanted.filter((id) => !fetched.has(id) && !stored.has(id));
      for (const [id, ev] of await this.deps.store.getEvents(roomId, rest)) stored.set(id, ev);
      const queue = rest.filter((id) => !stored.has(id));
      if (fetched.size + queue.length > maxEvents) throw new GapStateError(`the auth events need more than ${maxEvents} events`);
      const worker = async (): Promise<void> => {
        for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
          const e = await this.deps.client.call<{ pdus?: unknown }>("GET", origin, `/_matrix/federation/v1/event/${encodeURIComponent(id)}`);
          let checked: { eventId: string; pdu: Pdu };
          try {
            checked = await this.deps.rooms.verifyRemoteEvent(isPlainObject(e) && Array.isArray(e.pdus) ? e.pdus[0] : undefined, version);
          } catch (err) {
            throw new GapStateError(`a fetched event failed its checks: ${(err as Error).message}`);
          }
          if (checked.eventId !== id) throw new GapStateError(`the answer for event ${id} is another event`);
          const inRoom = checked.pdu.room_id === roomId || (version.roomIdIsCreateEventHash && checked.eventId === createEventIdOfRoom(roomId));
          if (!inRoom) throw new GapStateError(`fetched event ${checked.eventId} is not in ${roomId}`);
          fetched.set(id, checked.pdu);
        }
      };
      const took = queue.slice();
      await Promise.all(Array.from({ length: Math.min(FETCH_CONCURRENCY, queue.length) }, worker));
      wanted = [...new Set(took.flatMap((id) => authEdges(fetched.get(id)!, version)))];
    }
    await this.authorise(roomId, version, createEventId, fetched, stored);
    return fetched;
  }

  /**
   * Every fetched event passes the auth rules against its own auth events (fetched or stored,
   * none stored as rejected), auth events first; an auth event that cannot be had fails it.
   */
  private async authorise(roomId: string, version: RoomVersion, createEventId: string | undefined, fetched: Map<string, Pdu>, stored: Map<string, Pdu>): Promise<void> {
    const storedAuth = [...new Set([...fetched.values()].flatMap((ev) => authEdges(ev, version)).filter((id) => !fetched.has(id)))];
    const missing = storedAuth.filter((id) => !stored.has(id));
    for (const [id, ev] of await this.deps.store.getEvents(roomId, missing)) stored.set(id, ev);
    const statuses = await this.deps.store.eventStatuses(roomId, storedAuth);
    const allowed = new Set<string>();
    const visiting = new Set<string>();
    const check = (eventId: string, pdu: Pdu): void => {
      if (allowed.has(eventId)) return;
      if (visiting.has(eventId)) throw new GapStateError(`the auth chain of ${eventId} has a cycle`);
      visiting.add(eventId);
      const authState = new Map<string, Pdu>();
      const listed: Pdu[] = [];
      const own = new Set(authEventIds(pdu));
      for (const id of authEdges(pdu, version)) {
        const auth = fetched.get(id);
        if (auth) check(id, auth);
        const ev = auth ?? stored.get(id);
        if (!ev) throw new GapStateError(`auth event ${id} of ${eventId} could not be had`);
        if (!auth && statuses.get(id) === "rejected") throw new GapStateError(`auth event ${id} of ${eventId} was rejected`);
        if (typeof ev.state_key === "string") authState.set(stateField(ev.type, ev.state_key), ev);
        if (own.has(id)) listed.push(ev);
      }
      const verdict = checkEventAuth(pdu, version, (t, k) => authState.get(stateField(t, k)), { createEventId, authEvents: listed, verifyJoinAuthorisedVia: signedByServerOf });
      if (!verdict.allowed) throw new GapStateError(`${pdu.type} event ${eventId} fails the auth rules against its auth events: ${verdict.reason}`);
      visiting.delete(eventId);
      allowed.add(eventId);
    };
    for (const [id, pdu] of fetched) check(id, pdu);
  }
}
