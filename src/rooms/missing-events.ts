/**
 * Gaps in a room Gatehouse hosts. A PDU can arrive over /send whose prev_events or auth_events
 * Gatehouse does not hold: Synapse keeps unsent PDUs in memory only, and after a restart (or an
 * outage long enough for its retry interval to pass an hour) it "catches up" a destination by
 * sending only its newest event in each room. Checked as it is, such a PDU is rejected (unknown
 * auth events) or accepted on the wrong state (unknown prev_events), and the room splits for good.
 *
 * As Synapse does (federation_event.py, _get_missing_events_for_pdu), the events in between are
 * asked from the sending server first — POST /get_missing_events with our forward extremities as
 * `earliest_events` and the PDU as `latest_events` — and each one returned is verified and
 * persisted, oldest (lowest depth) first, through the same checks as any PDU. What cannot be
 * filled (the server does not answer, the gap is longer than the limit) leaves the PDU to those
 * checks unchanged. Synapse then also asks /state_ids at the gap; that is not done here.
 */
import { MatrixError } from "../protocol/errors.js";
import { isPlainObject, type Pdu } from "../protocol/pdu.js";
import type { RoomVersion } from "../protocol/room-versions.js";
import { authEventIds, prevEventIds, type RoomStore } from "../store/room-store.js";
import type { FederationClient } from "../net/federation-client.js";
import type { Logger } from "../logger.js";
import type { RoomService } from "./room-service.js";

/** Synapse asks for at most 10; a little more closes a longer gap in one request. */
export const MISSING_EVENTS_LIMIT = 20;

export interface MissingEventsDeps {
  rooms: Pick<RoomService, "snapshot" | "verifyRemoteEvent" | "persistEvent">;
  store: Pick<RoomStore, "eventStateGroups">;
  client: Pick<FederationClient, "call">;
  logger: Logger;
}

export class MissingEvents {
  constructor(private readonly deps: MissingEventsDeps) {}

  /**
   * The prev_events and auth_events of `pdu` this server holds none of. `extremities` (the room's
   * forward extremities, when at hand) answers the usual case with no read: a PDU built on them
   * has no gap (its auth events, if unknown, are refused by the auth checks as before).
   */
  async missing(roomId: string, pdu: Pdu, extremities?: readonly string[]): Promise<string[]> {
    const prevs = prevEventIds(pdu);
    if (extremities && prevs.length > 0 && prevs.every((p) => extremities.includes(p))) return [];
    const ids = [...new Set([...prevs, ...authEventIds(pdu)])];
    const held = await this.deps.store.eventStateGroups(roomId, ids);
    return ids.filter((id) => !held.has(id));
  }

  /**
   * Fetches from `origin` and persists the events between the room's forward extremities and
   * `pdu` when some of its prev or auth events are missing. Resolves to the number of events
   * persisted; never throws for what the remote server sends or fails to send.
   */
  async fill(
    origin: string,
    roomId: string,
    eventId: string,
    pdu: Pdu,
    version: RoomVersion,
    opts: { extremities?: readonly string[]; deferWake?: Set<string> } = {},
  ): Promise<number> {
    const missing = await this.missing(roomId, pdu, opts.extremities);
    if (missing.length === 0) return 0;
    const snap = await this.deps.rooms.snapshot(roomId);
    let raw: unknown;
    try {
      raw = await this.deps.client.call("POST", origin, `/_matrix/federation/v1/get_missing_events/${encodeURIComponent(roomId)}`, {
        earliest_events: snap.extremities,
        latest_events: [eventId],
        limit: MISSING_EVENTS_LIMIT,
        min_depth: 0,
      });
    } catch (e) {
      this.deps.logger.info({ origin, roomId, eventId, missing, err: (e as Error).message }, "get_missing_events failed; the PDU is checked with its gap");
      return 0;
    }
    const events = isPlainObject(raw) && Array.isArray(raw.events) ? raw.events : [];
    const verified: { eventId: string; pdu: Pdu }[] = [];
    for (const ev of events) {
      if (!isPlainObject(ev) || ev.room_id !== roomId) continue;
      try {
        const v = await this.deps.rooms.verifyRemoteEvent(ev, version);
        if (v.eventId !== eventId) verified.push({ eventId: v.eventId, pdu: v.pdu });
      } catch (e) {
        if (!(e instanceof MatrixError)) throw e;
        this.deps.logger.info({ origin, roomId, err: e.message }, "get_missing_events returned an event that fails verification");
      }
    }
    // Oldest first: parents before children (depth grows along prev_events), ties by ID for a stable order.
    verified.sort((a, b) => a.pdu.depth - b.pdu.depth || (a.eventId < b.eventId ? -1 : a.eventId > b.eventId ? 1 : 0));
    let persisted = 0;
    for (const v of verified) {
      try {
        const out = await this.deps.rooms.persistEvent(roomId, v.eventId, v.pdu, {
          origin,
          rejectIfSoftFailed: false,
          ...(opts.deferWake ? { deferWake: opts.deferWake } : {}),
        });
        if (out.outcome !== "duplicate") persisted++;
      } catch (e) {
        if (!(e instanceof MatrixError)) throw e;
        this.deps.logger.info({ origin, roomId, eventId: v.eventId, reason: e.message }, "rejected an event from get_missing_events");
      }
    }
    this.deps.logger.info({ origin, roomId, eventId, missing: missing.length, returned: events.length, persisted }, "filled a gap before a PDU");
    return persisted;
  }
}
