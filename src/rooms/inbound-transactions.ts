/**
 * Inbound PUT /_matrix/federation/v1/send/{txnId}: de-duplicated on (origin, txnId) for 24 h
 * (Synapse's window), one transaction per origin at a time, each PDU checked on its own (ACL,
 * format, signatures, auth) with its result in the 200 response. A bad PDU never fails the
 * transaction.
 *
 * EDUs: Gatehouse hosts rooms but has no clients, so typing, receipts and presence have nowhere
 * to go; they are accepted (ACL-filtered where room-scoped, for the count) and dropped.
 */
import type { Redis } from "ioredis";
import { MatrixError, badJson } from "../protocol/errors.js";
import { ACL_DENIED_MESSAGE } from "../protocol/server-acl.js";
import { isPlainObject, type Pdu } from "../protocol/pdu.js";
import { computeEventId } from "../protocol/event-hashing.js";
import type { RedisKeys } from "../store/redis-keys.js";
import type { RoomService, RoomSnapshot } from "./room-service.js";
import { authEventIds, prevEventIds, type RoomStore } from "../store/room-store.js";
import type { Logger } from "../logger.js";
import type { MissingEvents } from "./missing-events.js";
import type { Participation } from "./participation.js";
import type { PartialStateResync } from "./partial-state.js";

export const MAX_TXN_PDUS = 50;
export const MAX_TXN_EDUS = 100;
const TXN_TTL_SECONDS = 24 * 3600;

export type PduOutcome = "accepted" | "duplicate" | "soft_failed" | "rejected" | "acl_denied" | "unknown_room" | "rate_limited";

const isServerAcl = (pdu: Pdu): boolean => pdu.type === "m.room.server_acl" && pdu.state_key === "";

const isKnock = (pdu: { type: string; state_key?: unknown; content: Record<string, unknown> }): boolean =>
  pdu.type === "m.room.member" && typeof pdu.state_key === "string" && pdu.content.membership === "knock";

export interface InboundTransactionDeps {
  rooms: RoomService;
  store: RoomStore;
  redis: Redis;
  keys: RedisKeys;
  logger: Logger;
  onPdu?: (outcome: PduOutcome) => void;
  /**
   * The per-room knock limit that make_knock / send_knock pass through: milliseconds until a
   * token is free (0: taken). Knocks relayed in /send count against the same bucket, else a
   * server could fill a room's knock list by skipping the handshake.
   */
  knockLimit?: (roomId: string) => Promise<number>;
  /** Fills a gap before a PDU whose prev or auth events are missing (get_missing_events from its origin). */
  missingEvents?: Pick<MissingEvents, "fill">;
  /** Rooms hosted elsewhere (rooms/participation.ts): whether PDUs are taken. */
  participation?: Pick<Participation, "acceptsPdus">;
  /** Fetches the missing auth events of PDUs in partial-state rooms (rooms/partial-state.ts). */
  partialState?: Pick<PartialStateResync, "fillAuthEvents">;
  /** Before the 200: waits for what must hold when it is sent (derived records, replicas of the rooms written: GATEHOUSE_REDIS_WAIT_REPLICAS, store/replica-wait.ts). */
  afterWrites?: (roomIds: Iterable<string>) => Promise<void>;
}

export class InboundTransactions {
  private readonly inflight = new Map<string, { txnId: string; promise: Promise<Record<string, unknown>> }>();

  constructor(private readonly deps: InboundTransactionDeps) {}

  async receive(origin: string, txnId: string, body: unknown): Promise<Record<string, unknown>> {
    if (!isPlainObject(body)) throw badJson("Transaction body must be an object");
    const pdus = body.pdus ?? [];
    const edus = body.edus ?? [];
    if (!Array.isArray(pdus)) throw badJson("pdus must be a list");
    if (!Array.isArray(edus)) throw badJson("edus must be a list");
    if (pdus.length > MAX_TXN_PDUS || edus.length > MAX_TXN_EDUS)
      throw new MatrixError(400, "M_BAD_JSON", `A transaction holds at most ${MAX_TXN_PDUS} PDUs and ${MAX_TXN_EDUS} EDUs`);

    const running = this.inflight.get(origin);
    if (running) {
      // A retry of the transaction being processed waits for its answer; a different one is refused.
      if (running.txnId === txnId) return running.promise;
      throw new MatrixError(429, "M_UNKNOWN", "Too many concurrent transactions", { retry_after_ms: 1000 });
    }
    const cacheKey = this.deps.keys.inboundTxn(origin, txnId);
    const cached = await this.deps.redis.get(cacheKey);
    if (cached) return JSON.parse(cached) as Record<string, unknown>;

    const promise = this.process(origin, pdus).then(async (response) => {
      await this.deps.redis.set(cacheKey, JSON.stringify(response), "EX", TXN_TTL_SECONDS);
      return response;
    });
    this.inflight.set(origin, { txnId, promise });
    try {
      return await promise;
    } finally {
      this.inflight.delete(origin);
    }
  }

  private async process(origin: string, pdus: unknown[]): Promise<Record<string, unknown>> {
    const results: Record<string, unknown> = {};
    // One sender wake-up per transaction: its accepted PDUs leave together, one outbound
    // transaction per destination rather than one per PDU.
    const destinations = new Set<string>();
    // The rooms' snapshots for the ACL check and the room version, read once per room per
    // transaction (persistEvents reads its own, under the room lock, for everything else); an
    // accepted m.room.server_acl in the transaction makes the next PDU of its room read again.
    const snapshots = new Map<string, RoomSnapshot | null>();
    // Consecutive checked PDUs of one room, persisted together (RoomService.persistEvents: one
    // write per run of them). A PDU of another room, or an m.room.server_acl (the PDUs after it
    // are checked against it), ends the run.
    let run: { roomId: string; events: { eventId: string; pdu: Pdu }[] } | undefined;
    // Event IDs this transaction has taken so far, per room: a PDU built on them, or on the
    // room's forward extremities, has no gap to fill (the usual case costs no read).
    const taken = new Map<string, Set<string>>();
    // States taken from the origin at gaps get_missing_events left, by prev event (missing-events.ts).
    const gapStates = new Map<string, ReadonlyMap<string, string>>();
    const reject = (roomId: string, eventId: string, error: MatrixError): void => {
      results[eventId] = { error: error.message };
      this.deps.logger.info({ origin, roomId, eventId, reason: error.message }, "rejected PDU in transaction");
      this.deps.onPdu?.("rejected");
    };
    const flush = async (): Promise<void> => {
      if (!run) return;
      const { roomId, events } = run;
      run = undefined;
      const outcomes = await this.deps.rooms.persistEvents(roomId, events, { origin, rejectIfSoftFailed: false, deferWake: destinations, ...(gapStates.size > 0 ? { gapStates } : {}) });
      for (const out of outcomes) {
        if ("error" in out) {
          reject(roomId, out.eventId, out.error);
          continue;
        }
        results[out.eventId] = {};
        if (out.outcome === "persisted" && isServerAcl(out.pdu)) snapshots.delete(roomId);
        this.deps.onPdu?.(out.outcome === "persisted" ? "accepted" : out.outcome);
      }
    };
    try {
      for (const raw of pdus) {
        const checked = await this.checkPdu(origin, raw, results, snapshots);
        if (typeof checked === "string") {
          this.deps.onPdu?.(checked);
          continue;
        }
        if (run && run.roomId !== checked.roomId) await flush();
        const known = taken.get(checked.roomId) ?? new Set<string>();
        taken.set(checked.roomId, known);
        if (prevEventIds(checked.pdu).some((p) => !known.has(p) && !checked.snap.extremities.includes(p))) {
          // A possible gap: what is pending is written first, so that the gap filler sees the
          // room as it is; the events it fills in are persisted before this PDU. They may change
          // the room (an ACL among them): the next PDU reads it again.
          await flush();
          if (this.deps.missingEvents) {
            // A gap left (not even the state at it could be had) refuses the PDU in a room hosted
            // elsewhere (no state to authorise it against, rooms/participation.ts); in a room
            // hosted here it is checked as it is. A PDU on the gap itself is persisted with the
            // state taken there (gapStates).
            try {
              const filled = await this.deps.missingEvents.fill(origin, checked.roomId, checked.eventId, checked.pdu, {
                ifGapLeft: checked.snap.room.hostedElsewhere ? "refuse" : "check",
                deferWake: destinations,
                gapStates,
              });
              if (filled) snapshots.delete(checked.roomId);
            } catch (e) {
              if (!(e instanceof MatrixError)) throw e;
              snapshots.delete(checked.roomId);
              reject(checked.roomId, checked.eventId, e);
              continue;
            }
          }
        }
        if (checked.snap.room.partialState && this.deps.partialState && authEventIds(checked.pdu).some((id) => !known.has(id))) {
          // A partial-state room lacks most member events, which PDUs name as auth events: those
          // not held are fetched from the origin and checked first (rooms/partial-state.ts).
          // Pending PDUs are written first (they may be the auth events).
          await flush();
          await this.deps.partialState.fillAuthEvents(origin, checked.roomId, checked.pdu);
        }
        known.add(checked.eventId);
        run ??= { roomId: checked.roomId, events: [] };
        run.events.push({ eventId: checked.eventId, pdu: checked.pdu });
        if (isServerAcl(checked.pdu)) await flush();
      }
      await flush();
    } finally {
      this.deps.rooms.wakeSender(destinations);
    }
    // The rooms this transaction wrote to or tried to (a WAIT where nothing was written returns
    // at once). Not the snapshots' keys: an ACL or a filled gap drops a room's snapshot.
    await this.deps.afterWrites?.(taken.keys());
    return { pdus: results };
  }

  /**
   * The checks of one PDU before it is persisted (room, ACL, format, signatures, hash, knock
   * limit): the PDU to persist, or the outcome of a PDU refused here (its answer in `results`).
   */
  private async checkPdu(
    origin: string,
    raw: unknown,
    results: Record<string, unknown>,
    snapshots: Map<string, RoomSnapshot | null>,
  ): Promise<PduOutcome | { roomId: string; eventId: string; pdu: Pdu; snap: RoomSnapshot }> {
    const { rooms } = this.deps;
    if (!isPlainObject(raw) || typeof raw.room_id !== "string") return "rejected";
    const roomId = raw.room_id;
    let snap = snapshots.get(roomId);
    if (snap === undefined) {
      snap = (await this.deps.store.getRoom(roomId)) ? await rooms.snapshot(roomId) : null;
      snapshots.set(roomId, snap);
    }
    // Like Synapse: PDUs for rooms we do not host are left out of the response.
    if (!snap) return "unknown_room";
    // A room hosted elsewhere that no local user is in any more: as unknown (Synapse's answer too).
    if (this.deps.participation && !this.deps.participation.acceptsPdus(snap)) return "unknown_room";
    // The event ID keys a refusal in the answer; an accepted PDU's comes from the verifier (it
    // computes it anyway), so it is computed here only on the refusal paths. One the ID cannot
    // be computed for is left out of the answer.
    const idOrNull = (): string | null => {
      try {
        return computeEventId(raw, snap.version);
      } catch {
        return null;
      }
    };
    try {
      rooms.requireAclAllows(snap, origin);
    } catch {
      const eventId = idOrNull();
      if (eventId === null) return "rejected";
      results[eventId] = { errcode: "M_FORBIDDEN", error: ACL_DENIED_MESSAGE };
      return "acl_denied";
    }
    try {
      const verified = await rooms.verifyRemoteEvent(raw, snap.version);
      const wait = isKnock(verified.pdu) ? await this.deps.knockLimit?.(roomId).catch(() => 0) : 0;
      if (wait) {
        // The answer send_knock would give (429), for this PDU only; nothing is written.
        results[verified.eventId] = { errcode: "M_LIMIT_EXCEEDED", error: "Too many knocks on this room", retry_after_ms: wait };
        this.deps.logger.info({ origin, roomId, eventId: verified.eventId }, "knock in transaction over the room's knock limit");
        return "rate_limited";
      }
      return { roomId, eventId: verified.eventId, pdu: verified.pdu, snap };
    } catch (e) {
      if (e instanceof MatrixError) {
        const eventId = idOrNull();
        if (eventId === null) return "rejected";
        results[eventId] = { error: e.message };
        this.deps.logger.info({ origin, roomId, eventId, reason: e.message }, "rejected PDU in transaction");
        return "rejected";
      }
      throw e;
    }
  }
}
