/**
 * Reads a joined peer needs: single events, the state at an event, missing prev events,
 * backfill and auth chains. Each checks the room's ACL and that the requesting server may see
 * the room (history visibility is treated as "shared": a server with members may read).
 */
import { forbidden, invalidParam, notFound } from "../protocol/errors.js";
import { serverOfUserId } from "../protocol/ids.js";
import type { Pdu } from "../protocol/pdu.js";
import { prevEventIds } from "../store/room-store.js";
import type { RoomContext, RoomService, RoomSnapshot } from "./room-service.js";
import type { RoomStore } from "../store/room-store.js";

export class RoomHistory {
  private readonly rooms: RoomService;
  private readonly store: RoomStore;

  constructor(ctx: RoomContext) {
    this.rooms = ctx.rooms;
    this.store = ctx.store;
  }

  private serverMembership(snap: RoomSnapshot, origin: string): { joined: boolean; any: boolean } {
    let joined = false;
    let any = false;
    for (const ev of snap.state.values()) {
      if (ev.type !== "m.room.member" || typeof ev.state_key !== "string" || serverOfUserId(ev.state_key) !== origin) continue;
      any = true;
      if ((ev.content as { membership?: unknown }).membership === "join") joined = true;
    }
    return { joined, any };
  }

  /** ACL, then the requesting server must have a joined member (or any member when `anyMember`). */
  private async readableSnapshot(roomId: string, origin: string, anyMember = false): Promise<RoomSnapshot> {
    const snap = await this.rooms.snapshot(roomId);
    this.rooms.requireAclAllows(snap, origin);
    const m = this.serverMembership(snap, origin);
    if (!(anyMember ? m.any : m.joined)) throw forbidden(`Host ${origin} not in room ${roomId}`);
    return snap;
  }

  async event(eventId: string, origin: string): Promise<Pdu> {
    const roomId = await this.store.roomOfEvent(eventId);
    if (!roomId) throw notFound(`Event ${eventId} not found`);
    // Joined servers only, like the other reads (and Synapse's is_host_in_room). Allowing "any
    // member" let a server with only a knocking, invited, left or banned user read every event:
    // make_knock/make_leave templates hand out the latest event IDs as prev_events, and
    // prev_events lead to the rest of the history.
    await this.readableSnapshot(roomId, origin);
    const pdu = await this.store.getEvent(roomId, eventId);
    if (!pdu) throw notFound(`Event ${eventId} not found`);
    return pdu;
  }

  /** State before `eventId` (what /state_ids and /state mean by "state at"), plus its auth chain. */
  async stateAt(roomId: string, eventId: string, origin: string): Promise<{ stateIds: string[]; authChainIds: string[]; state: Map<string, Pdu>; chain: Map<string, Pdu> }> {
    await this.readableSnapshot(roomId, origin);
    const before = await this.store.stateAt(roomId, eventId, "before");
    if (!before) throw notFound(`Event ${eventId} not found in ${roomId}`);
    const stateIds = [...before.values()];
    const chain = await this.store.authChain(roomId, stateIds);
    const state = await this.store.getEvents(roomId, stateIds);
    return { stateIds, authChainIds: [...chain.keys()], state, chain };
  }

  /** Walks prev_events back from `latest` (exclusive), stopping at `earliest`, depth ≥ minDepth. */
  async missingEvents(roomId: string, origin: string, body: unknown): Promise<Pdu[]> {
    await this.readableSnapshot(roomId, origin);
    const b = (body ?? {}) as { earliest_events?: unknown; latest_events?: unknown; limit?: unknown; min_depth?: unknown };
    if (!Array.isArray(b.latest_events) || !b.latest_events.every((x) => typeof x === "string")) throw invalidParam("latest_events must be a list of event IDs");
    const earliest = new Set(Array.isArray(b.earliest_events) ? (b.earliest_events as string[]) : []);
    const limit = Math.min(Math.max(typeof b.limit === "number" ? b.limit : 10, 0), 100);
    const minDepth = typeof b.min_depth === "number" ? b.min_depth : 0;
    const out: Pdu[] = [];
    const seen = new Set<string>(b.latest_events as string[]);
    let frontier: string[] = [];
    const latest = await this.store.getEvents(roomId, b.latest_events as string[]);
    for (const ev of latest.values()) frontier.push(...prevEventIds(ev));
    while (frontier.length > 0 && out.length < limit) {
      const ids = [...new Set(frontier)].filter((id) => !seen.has(id) && !earliest.has(id));
      ids.forEach((id) => seen.add(id));
      frontier = [];
      const found = await this.store.getEvents(roomId, ids);
      for (const id of ids) {
        const ev = found.get(id);
        if (!ev || ev.depth < minDepth) continue;
        out.push(ev);
        if (out.length >= limit) break;
        frontier.push(...prevEventIds(ev));
      }
    }
    // Oldest first, as Synapse returns them.
    return out.sort((a, b2) => a.depth - b2.depth);
  }

  async backfill(roomId: string, origin: string, from: string[], limit: number): Promise<Pdu[]> {
    await this.readableSnapshot(roomId, origin);
    const out: Pdu[] = [];
    const seen = new Set<string>();
    let frontier = [...from];
    while (frontier.length > 0 && out.length < limit) {
      const ids = [...new Set(frontier)].filter((id) => !seen.has(id));
      ids.forEach((id) => seen.add(id));
      frontier = [];
      const found = await this.store.getEvents(roomId, ids);
      for (const id of ids) {
        const ev = found.get(id);
        if (!ev) continue;
        out.push(ev);
        if (out.length >= limit) break;
        frontier.push(...prevEventIds(ev));
      }
    }
    return out;
  }

  async eventAuth(roomId: string, eventId: string, origin: string): Promise<Pdu[]> {
    await this.readableSnapshot(roomId, origin);
    if (!(await this.store.getEvent(roomId, eventId))) throw notFound(`Event ${eventId} not found`);
    return [...(await this.store.authChain(roomId, [eventId])).values()];
  }
}
