/**
 * Read-only use cases over hosted rooms, for the admin and client APIs: room lists and
 * summaries, state, members, pending knocks, single events, timelines and aliases. Routes call
 * these; they never read the store themselves.
 */
import { notFound } from "../protocol/errors.js";
import { serverOfUserId } from "../protocol/ids.js";
import type { Pdu } from "../protocol/pdu.js";
import { computeEventId } from "../protocol/event-hashing.js";
import { parseStateField, stateField, type EventStatus, type RoomStore } from "../store/room-store.js";
import type { RoomContext, RoomService, RoomSnapshot } from "./room-service.js";

export interface RoomSummary {
  room_id: string;
  room_version: string;
  creator: string;
  created_ts: number;
  name?: string;
  topic?: string;
  join_rule: string;
  membership_counts: Record<string, number>;
  joined_servers: string[];
  forward_extremities: number;
  depth: number;
  aliases: string[];
  replacement_room?: string;
}

export interface PendingKnock {
  user_id: string;
  event_id: string | undefined;
  reason: string | null;
  displayname: string | null;
  ts: number;
}

/** An event with its ID (v3+ PDUs do not carry their own), in acceptance order. */
export interface StoredEvent {
  eventId: string;
  pdu: Pdu;
  stream: number;
}

/** State content is whatever senders put there; summaries only pass on strings. */
const text = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);

export class RoomQueries {
  private readonly rooms: RoomService;
  private readonly store: RoomStore;

  constructor(ctx: RoomContext) {
    this.rooms = ctx.rooms;
    this.store = ctx.store;
  }

  listRooms(): Promise<string[]> {
    return this.store.listRooms();
  }

  async summary(roomId: string): Promise<RoomSummary> {
    const snap = await this.rooms.snapshot(roomId);
    const members = await this.store.getMembers(snap.room.roomId);
    const counts: Record<string, number> = {};
    for (const m of Object.values(members)) counts[m] = (counts[m] ?? 0) + 1;
    const servers = new Set<string>();
    for (const [u, m] of Object.entries(members)) if (m === "join") servers.add(serverOfUserId(u) ?? "");
    const content = (type: string) => snap.state.get(stateField(type, ""))?.content as Record<string, unknown> | undefined;
    const replacement = text(content("m.room.tombstone")?.replacement_room);
    return {
      room_id: snap.room.roomId,
      room_version: snap.version.id,
      creator: snap.room.creator,
      created_ts: snap.room.createdTs,
      name: text(content("m.room.name")?.name),
      topic: text(content("m.room.topic")?.topic),
      join_rule: text(content("m.room.join_rules")?.join_rule) ?? "invite",
      membership_counts: counts,
      joined_servers: [...servers].sort(),
      forward_extremities: snap.extremities.length,
      depth: snap.depth,
      aliases: await this.store.aliasesOf(snap.room.roomId),
      ...(replacement ? { replacement_room: replacement } : {}),
    };
  }

  /** Current state as [event ID, PDU] pairs. */
  async state(roomId: string): Promise<{ snap: RoomSnapshot; events: { eventId: string; pdu: Pdu }[] }> {
    const snap = await this.rooms.snapshot(roomId);
    const events = [];
    for (const [field, pdu] of snap.state) events.push({ eventId: snap.stateIds.get(field)!, pdu });
    return { snap, events };
  }

  /** One current state event (404 for an unknown room; null when the room has no such state). */
  async stateEvent(roomId: string, type: string, stateKey: string): Promise<Pdu | null> {
    await this.rooms.requireRoom(roomId);
    return this.store.getStateEvent(roomId, type, stateKey);
  }

  /** user ID → membership, for every member event in current state. */
  async members(roomId: string): Promise<Record<string, string>> {
    await this.rooms.requireRoom(roomId);
    return this.store.getMembers(roomId);
  }

  membershipOf(roomId: string, userId: string): Promise<string | null> {
    return this.store.getMembership(roomId, userId);
  }

  async knocks(roomId: string): Promise<{ knocks: PendingKnock[]; replacement_room?: string }> {
    const snap = await this.rooms.snapshot(roomId);
    const knocks: PendingKnock[] = [];
    for (const [field, pdu] of snap.state) {
      if (pdu.type !== "m.room.member" || (pdu.content as { membership?: unknown }).membership !== "knock") continue;
      const c = pdu.content as Record<string, unknown>;
      knocks.push({
        user_id: parseStateField(field)[1],
        event_id: snap.stateIds.get(field),
        reason: typeof c.reason === "string" ? c.reason : null,
        displayname: typeof c.displayname === "string" ? c.displayname : null,
        ts: pdu.origin_server_ts,
      });
    }
    knocks.sort((a, b) => a.ts - b.ts);
    const tombstone = snap.state.get(stateField("m.room.tombstone", ""))?.content as { replacement_room?: unknown } | undefined;
    return { knocks, ...(typeof tombstone?.replacement_room === "string" ? { replacement_room: tombstone.replacement_room } : {}) };
  }

  /** One event of a hosted room with its ID and Gatehouse status (soft_failed, rejected…), or 404. */
  async event(roomId: string, eventId: string): Promise<{ eventId: string; pdu: Pdu; status: EventStatus | null }> {
    const { version } = await this.rooms.requireRoom(roomId);
    const pdu = await this.store.getEvent(roomId, eventId);
    if (!pdu) throw notFound("Event not found");
    const status = await this.store.eventStatus(roomId, eventId);
    return { eventId: computeEventId(pdu, version), pdu, status };
  }

  /**
   * Accepted timeline events in acceptance order: forwards from stream position `from`
   * (exclusive) or backwards before it. `next` is the position to continue from, when there may be more.
   */
  async timeline(roomId: string, opts: { dir: "f" | "b"; from: number | null; limit: number }): Promise<{ events: StoredEvent[]; next: number | null }> {
    await this.rooms.requireRoom(roomId);
    const page =
      opts.dir === "f"
        ? await this.store.timeline(roomId, (opts.from ?? 0) + 1, opts.limit)
        : await this.store.timelineBefore(roomId, opts.from, opts.limit);
    const found = await this.store.getEvents(roomId, page.map((e) => e.eventId));
    const events: StoredEvent[] = [];
    for (const { eventId, stream } of page) {
      const pdu = found.get(eventId);
      if (pdu) events.push({ eventId, pdu, stream });
    }
    const last = page.at(-1);
    return { events, next: page.length === opts.limit && last ? last.stream : null };
  }

  /** The hosted room a local alias points to, or null. */
  resolveAlias(alias: string): Promise<string | null> {
    return this.store.aliasTarget(alias);
  }

  aliasesOf(roomId: string): Promise<string[]> {
    return this.store.aliasesOf(roomId);
  }
}
