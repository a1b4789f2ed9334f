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
import { isPlainObject } from "../protocol/pdu.js";
import { computeEventId } from "../protocol/event-hashing.js";
import type { RedisKeys } from "../store/redis-keys.js";
import type { RoomService, RoomSnapshot } from "./room-service.js";
import type { RoomStore } from "../store/room-store.js";
import type { Logger } from "../logger.js";

export const MAX_TXN_PDUS = 50;
export const MAX_TXN_EDUS = 100;
const TXN_TTL_SECONDS = 24 * 3600;

export type PduOutcome = "accepted" | "duplicate" | "soft_failed" | "rejected" | "acl_denied" | "unknown_room" | "rate_limited";

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
  /** Before the 200: waits for replicas of the rooms written (GATEHOUSE_REDIS_WAIT_REPLICAS; store/replica-wait.ts). */
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
    // transaction (persistEvent reads its own, under the room lock, for everything else); an
    // accepted m.room.server_acl in the transaction makes the next PDU of its room read again.
    const snapshots = new Map<string, RoomSnapshot | null>();
    try {
      for (const raw of pdus) {
        const outcome = await this.processPdu(origin, raw, results, destinations, snapshots);
        this.deps.onPdu?.(outcome);
      }
    } finally {
      this.deps.rooms.wakeSender(destinations);
    }
    // The hosted rooms this transaction touched (a WAIT where nothing was written returns at once).
    await this.deps.afterWrites?.([...snapshots].filter(([, s]) => s !== null).map(([roomId]) => roomId));
    return { pdus: results };
  }

  private async processPdu(
    origin: string,
    raw: unknown,
    results: Record<string, unknown>,
    destinations: Set<string>,
    snapshots: Map<string, RoomSnapshot | null>,
  ): Promise<PduOutcome> {
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
      const out = await rooms.persistEvent(roomId, verified.eventId, verified.pdu, { origin, rejectIfSoftFailed: false, deferWake: destinations });
      results[verified.eventId] = {};
      if (out.outcome === "persisted" && verified.pdu.type === "m.room.server_acl" && verified.pdu.state_key === "") snapshots.delete(roomId);
      return out.outcome === "persisted" ? "accepted" : out.outcome;
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
