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
 * What happens when prev events of the PDU are still missing afterwards is the caller's policy
 * (`ifGapLeft`): "check" leaves the PDU to the checks unchanged (rooms hosted here, as before);
 * "refuse" throws a MatrixError naming the missing events (rooms hosted elsewhere: Gatehouse has
 * no state to authorise it against). Synapse then also asks /state_ids at the gap; that is not
 * done here. Outcomes are counted in gatehouse_missing_events_total{outcome}.
 */
import { MatrixError, forbidden } from "../protocol/errors.js";
import { isPlainObject, type Pdu } from "../protocol/pdu.js";
import { authEventIds, prevEventIds, type RoomStore } from "../store/room-store.js";
import type { FederationClient } from "../net/federation-client.js";
import type { Logger } from "../logger.js";
import type { RoomService } from "./room-service.js";

/** Events asked for per /get_missing_events call (Synapse asks for 10). */
export const GAP_LIMIT = 10;
/** Calls per gap: a gap longer than GAP_LIMIT × MAX_GAP_ROUNDS events is left. */
export const MAX_GAP_ROUNDS = 5;

/** What happens to a PDU whose prev events are still missing after the gap filling. */
export type GapLeftPolicy = "check" | "refuse";

/** gatehouse_missing_events_total's outcomes: fetched events persisted or refused, PDUs left with a gap. */
export type MissingEventOutcome = "persisted" | "refused" | "gap_left";

export interface MissingEventsDeps {
  rooms: Pick<RoomService, "snapshot" | "verifyRemoteEvent" | "persistEvent">;
  store: Pick<RoomStore, "eventStateGroups" | "timeline" | "getEvent">;
  client: Pick<FederationClient, "call">;
  logger: Logger;
  onOutcome?: (outcome: MissingEventOutcome) => void;
}

export class MissingEvents {
  constructor(private readonly deps: MissingEventsDeps) {}

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
    opts: { ifGapLeft: GapLeftPolicy; deferWake?: Set<string> },
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
    const ground = new Set<string>();
    let persisted = 0;
    for (const [id, ev] of order) {
      // Only on known ground: an event whose own prev events are still unknown is left out.
      if ((await this.unknown(roomId, prevEventIds(ev).filter((p) => !ground.has(p)))).length > 0) continue;
      try {
        const out = await rooms.persistEvent(roomId, id, ev, { origin, rejectIfSoftFailed: false, ...(opts.deferWake ? { deferWake: opts.deferWake } : {}) });
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
    const left = await this.unknown(roomId, prevEventIds(pdu).filter((p) => !ground.has(p)));
    logger.info({ origin, roomId, eventId, missing: missing.length, fetched: fetched.size, persisted, left: left.length }, "filled a gap before a PDU");
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
}
