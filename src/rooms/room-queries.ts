/**
 * Read-only use cases over hosted rooms, for the admin and client APIs: room lists and
 * summaries, state, members, pending knocks, single events, timelines and aliases. Routes call
 * these; they never read the store themselves. Everything served passes through
 * applyRedactions (rooms/redactions.ts): a redacted name, topic, knock reason or event is gone.
 */
import { notFound } from "../protocol/errors.js";
import { serverOfUserId } from "../protocol/ids.js";
import type { Pdu } from "../protocol/pdu.js";
import { computeEventId } from "../protocol/event-hashing.js";
import { parseStateField, stateField, type EventStatus, type RoomStore } from "../store/room-store.js";
import type { RoomContext, RoomService, RoomSnapshot } from "./room-service.js";
import { applyRedactions, type ServedEvent } from "./redactions.js";
import { partialStateClientRefusal } from "./partial-state.js";

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
  /**
   * A room hosted elsewhere joined with partial state whose resync is not done
   * (rooms/partial-state.ts): membership_counts covers the members held so far, and
   * joined_servers adds the send_join answer's servers_in_room.
   */
  partial_state?: true;
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
    const partial = snap.room.partialState;
    if (partial) for (const s of partial.servers) servers.add(s);
    // Summary fields from state as served (a redacted name or topic is gone).
    const summaryTypes = ["m.room.name", "m.room.topic", "m.room.join_rules", "m.room.tombstone"];
    const stored = summaryTypes.flatMap((type) => {
      const field = stateField(type, "");
      const pdu = snap.state.get(field);
      return pdu ? [{ eventId: snap.stateIds.get(field)!, pdu }] : [];
    });
    const served = new Map((await applyRedactions(this.store, snap.room.roomId, snap.version, stored)).map((e) => [e.pdu.type, e.pdu]));
    const content = (type: string) => served.get(type)?.content as Record<string, unknown> | undefined;
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
      ...(partial ? { partial_state: true as const } : {}),
    };
  }

  /** Current state as served: redactions applied (`redactedBy` set). `snap` is the state as stored. */
  async state(roomId: string): Promise<{ snap: RoomSnapshot; events: ServedEvent[] }> {
    const snap = await this.rooms.snapshot(roomId);
    // Partial state (rooms/partial-state.ts): the member list is incomplete, so refused, never short.
    if (snap.room.partialState) throw partialStateClientRefusal(roomId);
    const stored = [...snap.state].map(([field, pdu]) => ({ eventId: snap.stateIds.get(field)!, pdu }));
    return { snap, events: await applyRedactions(this.store, snap.room.roomId, snap.version, stored) };
  }

  /** One current state event as served (404 for an unknown room; null when the room has no such state). */
  async stateEvent(roomId: string, type: string, stateKey: string): Promise<Pdu | null> {
    const snap = await this.rooms.snapshot(roomId);
    const field = stateField(type, stateKey);
    const pdu = snap.state.get(field);
    // Partial state holds every event but members: a member event not held may exist.
    if (!pdu && snap.room.partialState && type === "m.room.member") throw partialStateClientRefusal(roomId);
    if (!pdu) return null;
    const [served] = await applyRedactions(this.store, snap.room.roomId, snap.version, [{ eventId: snap.stateIds.get(field)!, pdu }]);
    return served!.pdu;
  }

  /** user ID → membership, for every member event in current state. */
  async members(roomId: string): Promise<Record<string, string>> {
    const { room } = await this.rooms.requireRoom(roomId);
    if (room.partialState) throw partialStateClientRefusal(roomId);
    return this.store.getMembers(roomId);
  }

  membershipOf(roomId: string, userId: string): Promise<string | null> {
    return this.store.getMembership(roomId, userId);
  }

  async knocks(roomId: string): Promise<{ knocks: PendingKnock[]; replacement_room?: string }> {
    const snap = await this.rooms.snapshot(roomId);
    const pending = [...snap.state].filter(([, pdu]) => pdu.type === "m.room.member" && (pdu.content as { membership?: unknown }).membership === "knock");
    // As served: a redacted knock has no reason or display name left.
    const served = await applyRedactions(this.store, snap.room.roomId, snap.version, pending.map(([field, pdu]) => ({ eventId: snap.stateIds.get(field)!, pdu })));
    const knocks: PendingKnock[] = [];
    for (const [i, [field]] of pending.entries()) {
      const pdu = served[i]!.pdu;
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

  /**
   * One event of a hosted room with its ID and Gatehouse status (soft_failed, rejected…), or 404;
   * redacted when a redaction applies (`redactedBy` set). The client API filters it further
   * (RoomHistory.visibleEventsForUser); the admin API shows it as it is.
   */
  async event(roomId: string, eventId: string): Promise<ServedEvent & { status: EventStatus | null }> {
    const { version } = await this.rooms.requireRoom(roomId);
    const pdu = await this.store.getEvent(roomId, eventId);
    if (!pdu) throw notFound("Event not found");
    const status = await this.store.eventStatus(roomId, eventId);
    const [served] = await applyRedactions(this.store, roomId, version, [{ eventId: computeEventId(pdu, version), pdu }]);
    return { ...served!, status };
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
