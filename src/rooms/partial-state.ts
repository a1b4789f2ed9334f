/**
 * Rooms hosted elsewhere joined with partial state (spec v1.19 send_join `omit_members=true`,
 * `members_omitted`, `servers_in_room`; MSC3706, MSC3902; Synapse's "faster joins"): the
 * send_join answer left out most member events, so the room is stored flagged partial-state
 * (room record `partial_state`: servers_in_room, the answering server, our join) and its state is
 * completed here, in the background, as Synapse's _resync_state_following_partial_state_join does:
 *
 * 1. the state at our join is taken with the gap-state fetcher all rooms share (gap-state.ts):
 *    /state_ids at the join, the events this server lacks with /state or /event, each checked
 *    (format, signatures, content hash, in this room, the auth rules against its auth events);
 *    the server that answered send_join first, then the others of servers_in_room;
 * 2. that state must agree with what we hold: every field of the partial state holds the same
 *    event, and every field it lacked is a member event (the spec lets only those be omitted);
 *    otherwise that server's answer is refused and the next server asked;
 * 3. one atomic write (store/lua/complete-partial-state.lua) stores the fetched events as
 *    outliers, adds the omitted member events to the room's state groups, current state and
 *    members mirror (where no later event set the field) and clears the flag.
 *
 * A failure on every server is retried with exponential backoff; the rooms still partial are
 * listed in Redis (`partial-state-rooms`), so `resume()` at startup takes up a resync a restart
 * interrupted. Nothing is written by a failed attempt.
 *
 * While a room is partial (decided where each applies, and said in the README settings table):
 * - Gatehouse's own events go to servers_in_room as well as the servers of the members it knows
 *   (room-service.ts planAccepted);
 * - inbound events are checked against their own auth events only (as Synapse does; the state
 *   before them lacks members), not against the state before them nor the current state
 *   (room-service.ts planEvent). After the resync, the events accepted that way are checked again
 *   against the now complete state before them; one that fails is logged (recheck below);
 * - reads that need the member list are refused until the resync completes: client /members,
 *   /joined_members, /state and member state events not held (room-queries.ts), and the
 *   federation reads of the room (history.ts).
 */
import { checkEventAuth, type EventLike } from "../protocol/auth/index.js";
import { MatrixError, notFound } from "../protocol/errors.js";
import { serverOfUserId } from "../protocol/ids.js";
import { isPlainObject, type Pdu } from "../protocol/pdu.js";
import { getRoomVersion } from "../protocol/room-versions.js";
import { authEdges, createEventIdOfRoom } from "../protocol/state-res/index.js";
import { parseStateField, stateField, type RoomStore } from "../store/room-store.js";
import { FederationRequestError } from "../net/federation-client.js";
import { GapStateError, type GapState } from "./gap-state.js";
import type { Logger } from "../logger.js";

/** Backoff after a failed attempt: doubles from `initialMs` up to `maxMs`. */
export interface ResyncBackoff {
  initialMs: number;
  maxMs: number;
}

export const DEFAULT_RESYNC_BACKOFF: ResyncBackoff = { initialMs: 2_000, maxMs: 10 * 60_000 };

/**
 * Events one resync may fetch. The state of the room is what we joined: its size is the room's
 * (Synapse fetches it whole too); the cap only stops an answer naming absurdly many events.
 */
export const MAX_RESYNC_EVENTS = 2_000_000;

/** Auth events fetched for one inbound PDU at most (with their own auth events). */
const MAX_AUTH_FETCH = 100;

/** Why a server's answer was refused (logged; nothing written). */
export class ResyncError extends Error {}

export interface PartialStateDeps {
  store: RoomStore;
  gapState: Pick<GapState, "statesAfter" | "fetchWithAuth">;
  serverName: string;
  logger: Logger;
  backoff?: ResyncBackoff;
  onOutcome?: (outcome: "completed" | "failed" | "not_partial" | "recheck_failed") => void;
}

/** The auth rules' restricted-join check: the authorising server's signature is present (verified before). */
function signedByServerOf(event: EventLike, via: string): boolean {
  const server = serverOfUserId(via);
  const sigs = event.signatures as Record<string, unknown> | undefined;
  return server !== undefined && isPlainObject(sigs?.[server]);
}

export class PartialStateResync {
  private readonly running = new Map<string, Promise<void>>();
  private readonly sleeping = new Set<() => void>();
  private closed = false;
  private readonly backoff: ResyncBackoff;

  constructor(private readonly d: PartialStateDeps) {
    this.backoff = d.backoff ?? DEFAULT_RESYNC_BACKOFF;
  }

  /** Starts the resync of a room (once per process at a time; retried until done or closed). */
  start(roomId: string): void {
    if (this.closed || this.running.has(roomId)) return;
    const run = this.loop(roomId).finally(() => this.running.delete(roomId));
    this.running.set(roomId, run);
  }

  /** Takes up the resyncs of every room still listed as partial (after a restart). Returns how many. */
  async resume(): Promise<number> {
    const rooms = await this.d.store.partialStateRooms();
    for (const roomId of rooms) this.start(roomId);
    return rooms.length;
  }

  /** The run of a room under way, if any (tests, shutdown). */
  settled(roomId: string): Promise<void> {
    return this.running.get(roomId) ?? Promise.resolve();
  }

  /** Stops: no new attempt starts, backoff waits end now (an attempt under way ends by itself; it writes at most once, atomically). */
  async close(): Promise<void> {
    this.closed = true;
    for (const wake of this.sleeping) wake();
  }

  private async loop(roomId: string): Promise<void> {
    for (let attempt = 0; !this.closed; attempt++) {
      try {
        const outcome = await this.resyncOnce(roomId);
        this.d.onOutcome?.(outcome);
        return;
      } catch (e) {
        this.d.onOutcome?.("failed");
        const delay = Math.min(this.backoff.initialMs * 2 ** Math.min(attempt, 30), this.backoff.maxMs);
        this.d.logger.warn({ roomId, attempt, retryInMs: delay, err: (e as Error).message }, "partial-state resync failed");
        await this.sleep(delay);
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.sleeping.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      timer.unref();
      this.sleeping.add(wake);
    });
  }

  /**
   * One attempt: the state at our join from each server in turn until one answers a state that
   * checks and agrees (then written), or every one failed (throws; nothing written).
   */
  async resyncOnce(roomId: string): Promise<"completed" | "not_partial"> {
    const { store } = this.d;
    const room = await store.getRoom(roomId);
    const partial = room?.partialState;
    if (!room || !partial) {
      await store.completePartialState(roomId, { joinEventId: "", added: new Map(), members: new Map(), outliers: [] }).catch(() => undefined);
      return "not_partial";
    }
    const version = getRoomVersion(room.version);
    if (!version) throw new ResyncError(`room version ${room.version} is unknown`);
    const held = await store.stateAt(roomId, partial.joinEventId, "before");
    if (!held) throw new ResyncError(`our join ${partial.joinEventId} has no stored state`);
    const join = await store.getEvent(roomId, partial.joinEventId);
    if (!join || typeof join.state_key !== "string") throw new ResyncError(`our join ${partial.joinEventId} is not stored`);
    // What we hold after our join: the partial state and the join.
    const heldAfter = new Map(held).set(stateField(join.type, join.state_key), partial.joinEventId);
    const createEventId = version.roomIdIsCreateEventHash ? createEventIdOfRoom(roomId) : held.get(stateField("m.room.create", ""));
    const servers = [...new Set([partial.via, ...partial.servers])].filter((s) => s !== this.d.serverName);
    const failures: string[] = [];
    for (const server of servers) {
      try {
        const { states, fetched } = await this.d.gapState.statesAfter(server, roomId, version, createEventId, [partial.joinEventId], MAX_RESYNC_EVENTS);
        const full = states.get(partial.joinEventId)!;
        for (const [field, id] of heldAfter) {
          if (full.get(field) !== id) {
            const [type, key] = parseStateField(field);
            throw new ResyncError(`its state at our join holds ${full.get(field) ?? "nothing"} for ${type} "${key}", the send_join answer ${id}`);
          }
        }
        const added = new Map<string, string>();
        for (const [field, id] of full) {
          if (heldAfter.has(field)) continue;
          const [type] = parseStateField(field);
          if (type !== "m.room.member") throw new ResyncError(`its state at our join holds a ${type} event the send_join answer omitted (only member events may be)`);
          added.set(field, id);
        }
        const stored = await store.getEvents(roomId, [...added.values()].filter((id) => !fetched.has(id)));
        const members = new Map<string, string>();
        for (const [field, id] of added) {
          const ev = fetched.get(id) ?? stored.get(id);
          if (!ev) throw new ResyncError(`state event ${id} could not be had`);
          members.set(parseStateField(field)[1], String((ev.content as { membership?: unknown }).membership ?? ""));
        }
        const result = await store.completePartialState(roomId, {
          joinEventId: partial.joinEventId,
          added,
          members,
          outliers: [...fetched].map(([eventId, pdu]) => ({ eventId, pdu })),
        });
        if (result === "stale") throw new ResyncError("the room was joined again meanwhile (another resync runs for that join)");
        this.d.logger.info({ roomId, server, added: added.size, fetched: fetched.size, result }, "partial-state resync completed the room's state");
        if (result === "completed") await this.recheck(roomId, partial.joinEventId, createEventId);
        return result === "completed" ? "completed" : "not_partial";
      } catch (e) {
        if (!(e instanceof ResyncError || e instanceof GapStateError || e instanceof FederationRequestError)) throw e;
        failures.push(`${server}: ${e.message}`);
        this.d.logger.info({ roomId, server, err: e.message }, "partial-state resync: this server's answer was refused");
      }
    }
    throw new ResyncError(`no server gave the state at our join (${failures.join("; ") || "no server to ask"})`);
  }

  /**
   * Before an inbound PDU of a partial-state room is checked against its auth events: those this
   * server does not hold (typically its sender's membership, omitted by the send_join answer) are
   * fetched from `origin` with their own auth events, checked (gap-state.ts fetchWithAuth) and
   * stored as outliers, as Synapse fetches an event's missing auth events. A failure leaves them
   * missing (the PDU is then refused: "unknown auth events"); nothing is written for it.
   */
  async fillAuthEvents(origin: string, roomId: string, pdu: Pdu): Promise<void> {
    const { store } = this.d;
    const room = await store.getRoom(roomId);
    const version = room?.partialState ? getRoomVersion(room.version) : undefined;
    if (!version) return;
    const createEventId = version.roomIdIsCreateEventHash ? createEventIdOfRoom(roomId) : undefined;
    const ids = authEdges(pdu, version);
    const held = await store.getEvents(roomId, ids);
    const missing = ids.filter((id) => !held.has(id));
    if (missing.length === 0) return;
    try {
      const createId = createEventId ?? (await store.getStateIds(roomId)).get(stateField("m.room.create", ""));
      const fetched = await this.d.gapState.fetchWithAuth(origin, roomId, version, createId, missing, MAX_AUTH_FETCH);
      await store.persistBackfill(roomId, { groups: [], outliers: [...fetched].map(([eventId, ev]) => ({ eventId, pdu: ev })), events: [] });
    } catch (e) {
      if (!(e instanceof GapStateError || e instanceof FederationRequestError)) throw e;
      this.d.logger.info({ roomId, origin, err: e.message }, "could not fetch the auth events of a PDU in a partial-state room");
    }
  }

  /**
   * The events accepted while the room was partial were checked against their auth events only:
   * each is checked again against the complete state before it. Gatehouse does not rewrite an
   * accepted event's status after the fact (clients and application services may have it); one
   * that fails is logged with the rule, as a record for the operator. Returns how many failed.
   */
  private async recheck(roomId: string, joinEventId: string, createEventId: string | undefined): Promise<number> {
    const { store } = this.d;
    const room = await store.getRoom(roomId);
    const version = room ? getRoomVersion(room.version) : undefined;
    const from = await store.streamOf(roomId, joinEventId);
    if (!version || from === null) return 0;
    let failed = 0;
    for (let at = from; ; ) {
      const page = await store.timeline(roomId, at + 1, 500);
      if (page.length === 0) break;
      at = page[page.length - 1]!.stream;
      const statuses = await store.eventStatuses(roomId, page.map((e) => e.eventId));
      const groups = await store.eventStateGroups(roomId, page.map((e) => e.eventId));
      const events = await store.getEvents(roomId, page.map((e) => e.eventId));
      for (const { eventId } of page) {
        const pdu = events.get(eventId);
        const g = groups.get(eventId);
        if (!pdu || !g || statuses.has(eventId) || serverOfUserId(pdu.sender) === this.d.serverName) continue;
        const ids = await store.loadStateGroup(roomId, g.before);
        // The fields the auth rules read for this event (not the whole state: a big room's).
        const fields = [stateField("m.room.create", ""), stateField("m.room.power_levels", ""), stateField("m.room.join_rules", ""), stateField("m.room.member", pdu.sender)];
        const content = pdu.content as { join_authorised_via_users_server?: unknown; third_party_invite?: { signed?: { token?: unknown } } };
        if (pdu.type === "m.room.member" && typeof pdu.state_key === "string") fields.push(stateField("m.room.member", pdu.state_key));
        if (typeof content.join_authorised_via_users_server === "string") fields.push(stateField("m.room.member", content.join_authorised_via_users_server));
        if (typeof content.third_party_invite?.signed?.token === "string") fields.push(stateField("m.room.third_party_invite", content.third_party_invite.signed.token));
        const byId = await store.getStateEvents(roomId, version, fields.map((f) => ids.get(f)).filter((x): x is string => x !== undefined));
        const verdict = checkEventAuth(pdu, version, (t, k) => byId.get(ids.get(stateField(t, k)) ?? ""), { createEventId, verifyJoinAuthorisedVia: signedByServerOf });
        if (!verdict.allowed) {
          failed++;
          this.d.onOutcome?.("recheck_failed");
          this.d.logger.warn({ roomId, eventId, reason: verdict.reason }, "an event accepted while the room was partial fails the auth rules against the complete state before it");
        }
      }
    }
    return failed;
  }
}

/** Client reads that need the member list, while the room's state is partial: 503, retry later. */
export function partialStateClientRefusal(roomId: string): MatrixError {
  return new MatrixError(503, "M_UNKNOWN", `${roomId} was joined with partial state; its member list is still being fetched, try again later`, { retry_after_ms: 5_000 });
}

/**
 * Federation reads of a room whose state is partial: 404 M_NOT_FOUND, as for a room this server
 * cannot answer for (the state, and the membership that decides what a server may see, are
 * incomplete).
 */
export function partialStateFederationRefusal(roomId: string): MatrixError {
  return notFound(`${roomId} was joined with partial state; its state is not complete here yet`);
}
