/**
 * Gaps before an inbound PDU, in every room Gatehouse keeps (hosted here or elsewhere). A PDU can
 * arrive over /send whose prev_events or auth_events Gatehouse does not hold: Synapse keeps unsent
 * PDUs in memory only, and after a restart (or an outage long enough for its retry interval to
 * pass an hour) it "catches up" a destination by sending only its newest event in each room.
 * Checked as it is, such a PDU is rejected (unknown auth events) or accepted on the wrong state
 * (unknown prev_events), and the room splits for good.
 *
 * As Synapse does (federation_event.py, _get_missing_events_for_pdu), the events in between are
 * asked from the sending server with POST /get_missing_events: our forward extremities as
 * `earliest_events`, the PDU as `latest_events`, at most GAP_LIMIT events per call and never below
 * `min_depth`, the depth of the oldest event of the room's timeline (in a hosted room its create
 * event, in a room hosted elsewhere our join). While fetched events still have prev events we hold
 * neither stored nor fetched, those events are the next call's `latest_events`, for at most
 * MAX_GAP_ROUNDS calls (a call that brings nothing new ends it). Each fetched event is verified,
 * and persisted oldest (lowest depth) first through the same checks as any PDU, only on known
 * ground: an event whose prev events are still unknown is left out.
 *
 * When the gap is still open after that (longer than GAP_LIMIT × MAX_GAP_ROUNDS events, events
 * withheld, or a server that did not answer), the state at the gap is taken from the sending
 * server, as Synapse does for the oldest event it pulled (rooms/gap-state.ts): for each prev
 * event still unknown of an event on the gap (the oldest fetched events, or the PDU itself when
 * nothing was fetched), the state after it from /state_ids and the events it lacks. They are
 * checked, and written as outliers in one atomic write only when all of them pass (any failure
 * writes nothing); the events on the gap are then persisted through the same checks as any PDU,
 * against the resolution of their prev events' states (the ones held and the ones taken:
 * PersistOptions.gapStates), soft-failed against the current state resolved with that state
 * (as Synapse's _check_for_soft_fail with missing prev events). Their unknown prev events are not
 * stored as timeline events. At most `gapStateMaxEvents` events are fetched per fallback.
 *
 * What happens when prev events of the PDU are still missing afterwards is the caller's policy
 * (`ifGapLeft`): "check" leaves the PDU to the checks unchanged (rooms hosted here, as before);
 * "refuse" throws a MatrixError naming the missing events (rooms hosted elsewhere: Gatehouse has
 * no state to authorise it against). Outcomes are counted in gatehouse_missing_events_total{outcome}.
 */
import { MatrixError, forbidden } from "../protocol/errors.js";
import { isPlainObject, type Pdu } from "../protocol/pdu.js";
import { authEventIds, prevEventIds, type RoomStore } from "../store/room-store.js";
import type { FederationClient } from "../net/federation-client.js";
import type { Logger } from "../logger.js";
import { createEventIdOf, type RoomService, type RoomSnapshot } from "./room-service.js";
import { GapState, GapStateError } from "./gap-state.js";
import { FederationRequestError } from "../net/federation-client.js";

/** Events asked for per /get_missing_events call (Synapse asks for 10). */
export const GAP_LIMIT = 10;
/** Calls per gap: a gap longer than GAP_LIMIT × MAX_GAP_ROUNDS events is left. */
export const MAX_GAP_ROUNDS = 5;

/** What happens to a PDU whose prev events are still missing after the gap filling. */
export type GapLeftPolicy = "check" | "refuse";

/**
 * gatehouse_missing_events_total's outcomes: fetched events persisted or refused, PDUs left with
 * a gap; state_taken: a gap whose state was taken from the sender (/state_ids), state_failed: a
 * fallback that failed (nothing written).
 */
export type MissingEventOutcome = "persisted" | "refused" | "gap_left" | "state_taken" | "state_failed" | "state_backoff";

/**
 * After a state fallback from a sender fails in a room, that sender's next gaps in the room do
 * not try it again for a while (as Synapse backs off pulling events it failed to get): 1 minute,
 * doubled on each failure in a row up to an hour, cleared by a success. Without it, a sender
 * that answers badly could make every PDU it sends cost a whole (bounded) fallback.
 */
export const STATE_FALLBACK_BACKOFF_MS = { first: 60_000, max: 3_600_000 } as const;
/** Senders × rooms whose backoff is remembered (the oldest is forgotten first). */
const STATE_FALLBACK_BACKOFF_ENTRIES = 10_000;

export interface MissingEventsDeps {
  rooms: Pick<RoomService, "snapshot" | "verifyRemoteEvent" | "persistEvent">;
  store: Pick<RoomStore, "eventStateGroups" | "timeline" | "getEvent" | "getEvents" | "eventStatuses" | "persistBackfill">;
  client: Pick<FederationClient, "call">;
  logger: Logger;
  onOutcome?: (outcome: MissingEventOutcome) => void;
  /** Events one state fallback may fetch (GATEHOUSE_GAP_STATE_MAX_EVENTS); 0 turns it off. */
  gapStateMaxEvents?: number;
  /** Milliseconds since the epoch (the state fallback's backoff); Date.now by default. */
  clock?: () => number;
}

export class MissingEvents {
  private readonly gapState: GapState;
  /** `origin NUL roomId` → when the state fallback may be tried again, and the failures in a row. */
  private readonly stateBackoff = new Map<string, { until: number; failures: number }>();

  constructor(private readonly deps: MissingEventsDeps) {
    this.gapState = new GapState(deps);
  }

  /** The IDs among `ids` this server holds no state for (neither stored nor persisted). */
  private async unknown(roomId: string, ids: readonly string[]): Promise<string[]> {
    if (ids.length === 0) return [];
    const held = await this.deps.store.eventStateGroups(roomId, ids);
    return ids.filter((id) => !held.has(id));
  }

  /** The depth of the oldest event of the room's timeline: the floor of the gap (min_depth). */
  private async minDepth(roomId: string): Promise<number> {
    const [first] = await this.deps.store.timeline(roomId, 0, 1);
    const ev = first ? await this.deps.store.getEvent(roomId, first.eventId) : null;
    return typeof ev?.depth === "number" ? ev.depth : 0;
  }

  /**
   * Fetches from `origin` and persists the events between the room's forward extremities and
   * `pdu` when some of its prev or auth events are missing (see the module comment). Resolves to
   * the number of events persisted. Never throws for what the remote server sends or fails to
   * send, except the MatrixError of the "refuse" policy when prev events are still missing.
   */
  async fill(
    origin: string,
    roomId: string,
    eventId: string,
    pdu: Pdu,
    opts: {
      ifGapLeft: GapLeftPolicy;
      deferWake?: Set<string>;
      /**
       * Filled with the states taken at the PDU's own unknown prev events (when it is on the gap):
       * the caller persists the PDU with them (PersistOptions.gapStates).
       */
      gapStates?: Map<string, ReadonlyMap<string, string>>;
    },
  ): Promise<number> {
    const { rooms, logger } = this.deps;
    const missing = await this.unknown(roomId, [...new Set([...prevEventIds(pdu), ...authEventIds(pdu)])]);
    if (missing.length === 0) return 0;
    const snap = await rooms.snapshot(roomId);
    const minDepth = await this.minDepth(roomId);
    const fetched = new Map<string, Pdu>();
    let latest = [eventId];
    for (let round = 0; round < MAX_GAP_ROUNDS && latest.length > 0; round++) {
      let raw: unknown;
      try {
        raw = await this.deps.client.call("POST", origin, `/_matrix/federation/v1/get_missing_events/${encodeURIComponent(roomId)}`, {
          earliest_events: snap.extremities,
          latest_events: latest,
          limit: GAP_LIMIT,
          min_depth: minDepth,
        });
      } catch (e) {
        logger.info({ origin, roomId, eventId, round, err: (e as Error).message }, "get_missing_events failed");
        break;
      }
      const events = isPlainObject(raw) && Array.isArray(raw.events) ? raw.events.slice(0, GAP_LIMIT) : [];
      let added = 0;
      for (const ev of events) {
        if (!isPlainObject(ev) || ev.room_id !== roomId) continue;
        try {
          const v = await rooms.verifyRemoteEvent(ev, snap.version);
          if (v.eventId === eventId || fetched.has(v.eventId)) continue;
          fetched.set(v.eventId, v.pdu);
          added++;
        } catch (e) {
          if (!(e instanceof MatrixError)) throw e;
          logger.info({ origin, roomId, err: e.message }, "get_missing_events returned an event that fails verification");
        }
      }
      // Asked again, the server would answer the same.
      if (added === 0) break;
      // The next round: the events (the PDU or fetched ones) with a prev event neither stored nor fetched.
      const candidates: [string, Pdu][] = [[eventId, pdu], ...fetched];
      const prevs = [...new Set(candidates.flatMap(([, ev]) => prevEventIds(ev)).filter((p) => !fetched.has(p)))];
      const lacking = new Set(await this.unknown(roomId, prevs));
      latest = candidates.filter(([, ev]) => prevEventIds(ev).some((p) => lacking.has(p))).map(([id]) => id);
    }

    // Oldest first: parents before children (depth grows along prev_events), ties by ID for a stable order.
    const order = [...fetched].sort(([a, x], [b, y]) => x.depth - y.depth || (a < b ? -1 : a > b ? 1 : 0));
    // The gap: prev events of the fetched events and the PDU that are neither fetched nor held.
    const beyond = new Set(await this.unknown(roomId, [...new Set([...order.map(([, ev]) => ev), pdu].flatMap((ev) => prevEventIds(ev)).filter((p) => !fetched.has(p)))]));
    const gapStates = beyond.size > 0 ? await this.stateAtGap(origin, snap, eventId, [...beyond].sort()) : new Map<string, ReadonlyMap<string, string>>();
    const ground = new Set<string>();
    let persisted = 0;
    for (const [id, ev] of order) {
      // Only on known ground (or on the state taken at the gap): an event whose own prev events
      // are still unknown is left out.
      const unknownPrevs = await this.unknown(roomId, prevEventIds(ev).filter((p) => !ground.has(p)));
      if (unknownPrevs.some((p) => !gapStates.has(p))) continue;
      try {
        const out = await rooms.persistEvent(roomId, id, ev, {
          origin,
          rejectIfSoftFailed: false,
          ...(opts.deferWake ? { deferWake: opts.deferWake } : {}),
          ...(unknownPrevs.length > 0 ? { gapStates } : {}),
        });
        ground.add(id);
        if (out.outcome !== "duplicate") {
          persisted++;
          this.deps.onOutcome?.("persisted");
        }
      } catch (e) {
        if (!(e instanceof MatrixError)) throw e;
        this.deps.onOutcome?.("refused");
        logger.info({ origin, roomId, eventId: id, reason: e.message }, "refused an event fetched with get_missing_events");
      }
    }
    const unknownPrevs = await this.unknown(roomId, prevEventIds(pdu).filter((p) => !ground.has(p)));
    const left = unknownPrevs.filter((p) => !gapStates.has(p));
    if (left.length === 0) for (const p of unknownPrevs) opts.gapStates?.set(p, gapStates.get(p)!);
    logger.info({ origin, roomId, eventId, missing: missing.length, fetched: fetched.size, persisted, stateTaken: gapStates.size, left: left.length }, "filled a gap before a PDU");
    if (left.length > 0) {
      this.deps.onOutcome?.("gap_left");
      if (opts.ifGapLeft === "refuse") {
        logger.warn({ origin, roomId, eventId, missing: left }, "refused a PDU whose prev events are still missing after get_missing_events");
        throw forbidden(`prev events ${left.join(", ")} are unknown and could not be fetched with get_missing_events`);
      }
      logger.info({ origin, roomId, eventId, missing: left }, "the PDU is checked with its gap");
    }
    return persisted;
  }

  /**
   * The state after each of `prevIds` (the gap's far side), taken from `origin` (gap-state.ts),
   * with the events fetched for it written as outliers in one atomic write. Empty (and nothing
   * written) when the fallback is off or fails.
   */
  private async stateAtGap(origin: string, snap: RoomSnapshot, eventId: string, prevIds: string[]): Promise<Map<string, ReadonlyMap<string, string>>> {
    const { logger, store } = this.deps;
    const roomId = snap.room.roomId;
    const max = this.deps.gapStateMaxEvents ?? 0;
    if (max <= 0) return new Map();
    const key = `${origin}\u0000${roomId}`;
    const now = (this.deps.clock ?? Date.now)();
    const backoff = this.stateBackoff.get(key);
    if (backoff && now < backoff.until) {
      this.deps.onOutcome?.("state_backoff");
      logger.info({ origin, roomId, eventId, retryInMs: backoff.until - now }, "not taking the state at a gap from this server again yet (its last answer failed)");
      return new Map();
    }
    try {
      const { states, fetched } = await this.gapState.statesAfter(origin, roomId, snap.version, createEventIdOf(snap), prevIds, max);
      // A non-state prev event is not needed (it is in no state); a state one is stored with the
      // state it is in. Neither enters the timeline.
      const outliers = [...fetched].filter(([id, ev]) => !prevIds.includes(id) || typeof ev.state_key === "string").map(([id, pdu]) => ({ eventId: id, pdu }));
      if (outliers.length > 0) await store.persistBackfill(roomId, { groups: [], outliers, events: [] });
      this.stateBackoff.delete(key);
      this.deps.onOutcome?.("state_taken");
      logger.info({ origin, roomId, eventId, prevEvents: prevIds, outliers: outliers.length }, "took the state at a gap from the sending server");
      return states;
    } catch (e) {
      if (!(e instanceof GapStateError) && !(e instanceof FederationRequestError) && !(e instanceof MatrixError)) throw e;
      this.deps.onOutcome?.("state_failed");
      const failures = (backoff?.failures ?? 0) + 1;
      this.stateBackoff.delete(key);
      this.stateBackoff.set(key, { until: now + Math.min(STATE_FALLBACK_BACKOFF_MS.first * 2 ** (failures - 1), STATE_FALLBACK_BACKOFF_MS.max), failures });
      if (this.stateBackoff.size > STATE_FALLBACK_BACKOFF_ENTRIES) this.stateBackoff.delete(this.stateBackoff.keys().next().value!);
      logger.warn({ origin, roomId, eventId, prevEvents: prevIds, err: e.message }, "could not take the state at a gap from the sending server; nothing written");
      return new Map();
    }
  }
}
