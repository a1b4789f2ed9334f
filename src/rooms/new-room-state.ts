/**
 * State groups for a room written in one script (createRoom → persist-new-room.lua): the groups,
 * the state before/after each event, the current state group and the redaction records that
 * persisting the same events one by one through RoomService.persist would have written.
 *
 * The same planner does it (RoomStateService.plan, room-state.ts), over an in-memory store that
 * holds what the earlier events of the room would have stored: its groups, its events' groups and
 * its events. Group IDs are allocated in memory from the counter the create event's plan starts
 * ("1"), as RoomStore.allocateStateGroups would have allocated them, so nothing is written before
 * the one atomic write.
 */
import type { Pdu } from "../protocol/pdu.js";
import type { RoomVersion } from "../protocol/room-versions.js";
import { redactionRecordOf } from "../protocol/redaction-rules.js";
import { metaOf, prevEventIds, stateField, type EventStatus, type StateGroupMeta, type StateGroupWrite, type StatePlan } from "../store/room-store.js";
import { createEventStatePlan, RoomStateService, type GroupState, type StateGroupSource } from "./room-state.js";

export interface NewRoomState {
  /** Every group to write, in allocation order (parents first). */
  groups: StateGroupWrite[];
  /** Per event, in room order: the state groups before and after it. */
  eventState: [eventId: string, before: string, after: string][];
  /** The plan of each event (what RoomStore.persistEvent would have been given). */
  plans: Map<string, StatePlan>;
  /** The current state group after the last event. */
  currentGroup: string;
  /** The room's state group counter after the last allocation. */
  stateGroupSeq: number;
  /** The current state after the last event: field → event ID. */
  state: Map<string, string>;
  /** The members mirror after the last event. */
  members: Map<string, string>;
  /** The stream position of the last event whose current state change was not only its own key. */
  stateReset: number | null;
  /** Redaction records, in room order: target, redaction event ID, whether its sender had the redact level. */
  redactions: [target: string, redactionId: string, senderHasRedactLevel: boolean][];
}

/** The stored side of a room that exists only in memory so far. */
class InMemoryRoomStates implements StateGroupSource {
  private seq = 0;
  private readonly groups = new Map<string, StateGroupWrite>();
  private readonly eventGroups = new Map<string, { before: string; after: string }>();
  private readonly events = new Map<string, Pdu>();

  /** What persisting `eventId` with `plan` stores. */
  record(eventId: string, pdu: Pdu, plan: StatePlan): void {
    for (const g of plan.groups) {
      this.groups.set(g.id, g);
      this.seq = Math.max(this.seq, Number(g.id));
    }
    this.eventGroups.set(eventId, { before: plan.before, after: plan.after });
    this.events.set(eventId, pdu);
  }

  get lastAllocated(): number {
    return this.seq;
  }

  async allocateStateGroups(_roomId: string, count: number): Promise<string[]> {
    const first = this.seq + 1;
    this.seq += count;
    return Array.from({ length: count }, (_, i) => String(first + i));
  }

  async eventStateGroups(_roomId: string, eventIds: readonly string[]): Promise<Map<string, { before: string; after: string }>> {
    const out = new Map<string, { before: string; after: string }>();
    for (const id of eventIds) {
      const g = this.eventGroups.get(id);
      if (g) out.set(id, g);
    }
    return out;
  }

  async stateGroupDepth(roomId: string, group: string): Promise<number> {
    if (group === "") return 0;
    const g = this.groups.get(group);
    if (!g) throw new Error(`room ${roomId}: state group ${group} is not planned`);
    return g.depth;
  }

  async stateGroupMeta(roomId: string, group: string): Promise<StateGroupMeta> {
    const g = this.groups.get(group);
    if (!g) throw new Error(`room ${roomId}: state group ${group} is not planned`);
    return metaOf(g);
  }

  /** Every event of a room being created is accepted. */
  async eventStatuses(): Promise<Map<string, EventStatus>> {
    return new Map();
  }

  async loadStateGroup(roomId: string, group: string): Promise<ReadonlyMap<string, string>> {
    const chain: StateGroupWrite[] = [];
    for (let id: string | null = group === "" ? null : group; id !== null; ) {
      const g = this.groups.get(id);
      if (!g) throw new Error(`room ${roomId}: state group ${id} is not planned`);
      chain.push(g);
      id = g.parent;
    }
    const state = new Map<string, string>();
    for (const g of chain.reverse()) {
      for (const [field, id] of Object.entries(g.delta)) {
        if (id === null) state.delete(field);
        else state.set(field, id);
      }
    }
    return state;
  }

  /** State events as served: createRoom sends no redaction (planNewRoom refuses one), so none is redacted. */
  async getStateEvents(roomId: string, _version: RoomVersion, eventIds: readonly string[]): Promise<Map<string, Pdu>> {
    return this.getEvents(roomId, eventIds);
  }

  async getEvents(_roomId: string, eventIds: readonly string[]): Promise<Map<string, Pdu>> {
    const out = new Map<string, Pdu>();
    for (const id of eventIds) {
      const ev = this.events.get(id);
      if (ev) out.set(id, ev);
    }
    return out;
  }
}

/**
 * The state groups of a new room whose events (the create event first, each next one on top of
 * the previous, as createRoom builds them) are written at once.
 */
export async function planNewRoom(roomId: string, version: RoomVersion, events: readonly { eventId: string; pdu: Pdu }[]): Promise<NewRoomState> {
  const create = events[0];
  if (!create || create.pdu.type !== "m.room.create") throw new Error("a new room starts with its create event");
  // Redacted state events would be served redacted to the planner (RoomStore.getStateEvents);
  // createRoom builds no redaction, and the in-memory store does not apply any.
  if (events.some((e) => e.pdu.type === "m.room.redaction")) throw new Error(`new room ${roomId}: a redaction cannot be written with the room`);
  const mem = new InMemoryRoomStates();
  const planner = new RoomStateService(mem);
  const out: NewRoomState = {
    groups: [],
    eventState: [],
    plans: new Map(),
    currentGroup: "",
    stateGroupSeq: 0,
    state: new Map(),
    members: new Map(),
    stateReset: null,
    redactions: [],
  };
  const stateEvents = new Map<string, Pdu>();
  let current: GroupState = { ids: new Map(), group: "" };
  let extremities: string[] = [];
  for (const [i, { eventId, pdu }] of events.entries()) {
    let plan: StatePlan;
    if (i === 0) {
      plan = createEventStatePlan(eventId);
    } else {
      const view = { roomId, version, extremities, current };
      const { state: before } = await planner.stateBefore(view, prevEventIds(pdu));
      plan = await planner.plan(view, eventId, pdu, before, "accepted");
      const redaction = redactionRecordOf(pdu, (type, stateKey) => stateEvents.get(stateField(type, stateKey)), version);
      if (redaction) out.redactions.push([redaction.target, eventId, redaction.senderHasRedactLevel]);
    }
    mem.record(eventId, pdu, plan);
    out.plans.set(eventId, plan);
    out.groups.push(...plan.groups);
    out.eventState.push([eventId, plan.before, plan.after]);
    const change = plan.current;
    if (!change) throw new Error(`event ${eventId} of new room ${roomId} does not change the current state`);
    const ids = new Map(current.ids);
    const setEvents = await mem.getEvents(roomId, change.set.map(([, id]) => id));
    for (const [field, id] of change.set) {
      ids.set(field, id);
      stateEvents.set(field, setEvents.get(id)!);
    }
    for (const field of change.del) {
      ids.delete(field);
      stateEvents.delete(field);
    }
    for (const [user, membership] of change.members) {
      if (membership === "") out.members.delete(user);
      else out.members.set(user, membership);
    }
    if (change.reset) out.stateReset = i + 1;
    current = { ids, group: change.group };
    const prevs = new Set(prevEventIds(pdu));
    extremities = [...extremities.filter((x) => !prevs.has(x)), eventId];
  }
  // persist-new-room.lua writes one forward extremity, the last event.
  if (extremities.length !== 1) throw new Error(`the events of new room ${roomId} are not a chain`);
  out.currentGroup = current.group!;
  out.stateGroupSeq = mem.lastAllocated;
  out.state = new Map(current.ids);
  return out;
}
