/**
 * The room store as the state planner sees it while a run of events is being planned (see
 * RoomService.persistEvents): the run's earlier events, their statuses, state groups and the
 * groups before/after them, as if they were written already, over the store for everything else.
 * Nothing here is visible to any other reader: the run is written by one script once planned, or
 * thrown away (a conflict) and planned again.
 *
 * Within one run (the room lock is held, and the write checks the room's stream position), the
 * store's answers cannot change under us, so `getStateEvents` is remembered for the run: the
 * auth events of every event of a run are usually the same few.
 */
import type { Pdu } from "../protocol/pdu.js";
import type { RoomVersion } from "../protocol/room-versions.js";
import { LayeredMap } from "../store/layered-map.js";
import { metaOf, type EventStatus, type StateGroupMeta, type StateGroupWrite, type StatePlan } from "../store/room-store.js";
import type { StateGroupSource } from "./room-state.js";

export class StagedEvents implements StateGroupSource {
  private readonly events = new Map<string, Pdu>();
  private readonly statuses = new Map<string, EventStatus>();
  private readonly eventState = new Map<string, { before: string; after: string }>();
  private readonly groups = new Map<string, StateGroupWrite>();
  private readonly groupStates = new Map<string, ReadonlyMap<string, string>>();
  /** Stored state events as served to the auth rules (redactions applied), read once per run. */
  private readonly stateEvents = new Map<string, Pdu>();
  /** State group IDs allocated for the run and not handed out yet. */
  private readonly idPool: string[] = [];

  /**
   * `expected`: how many events the run may stage (its events not planned yet): the state group
   * IDs of the whole run are allocated in one round trip, not one per event.
   */
  constructor(
    private readonly store: StateGroupSource,
    private readonly roomId: string,
    private expected = 0,
  ) {}

  has(eventId: string): boolean {
    return this.events.has(eventId);
  }

  /** Adds an event of the run as it will be written. */
  stage(eventId: string, pdu: Pdu, plan: StatePlan | undefined, status: EventStatus | undefined): void {
    this.events.set(eventId, pdu);
    if (this.expected > 0) this.expected--;
    if (status) this.statuses.set(eventId, status);
    if (!plan) return;
    this.eventState.set(eventId, { before: plan.before, after: plan.after });
    for (const g of plan.groups) this.groups.set(g.id, g);
    for (const [g, state] of plan.known ?? []) this.groupStates.set(g, state);
  }

  /**
   * IDs from the run's pool. When it runs short, one allocation covers this event and one group
   * for each event of the run still to come (a run's events usually each need one, as when the
   * room has several forward extremities, or none at all, and then nothing is allocated). IDs
   * left unused when the run ends are gaps in the sequence, which nothing reads.
   */
  async allocateStateGroups(roomId: string, count: number): Promise<string[]> {
    if (!this.ours(roomId) || count === 0) return this.store.allocateStateGroups(roomId, count);
    if (this.idPool.length < count) {
      const ahead = Math.max(0, this.expected - 1);
      this.idPool.push(...(await this.store.allocateStateGroups(roomId, count - this.idPool.length + ahead)));
    }
    return this.idPool.splice(0, count);
  }

  async eventStateGroups(roomId: string, eventIds: readonly string[]): Promise<Map<string, { before: string; after: string }>> {
    const own = this.ours(roomId) ? eventIds.filter((id) => this.eventState.has(id)) : [];
    const out = await this.store.eventStateGroups(roomId, own.length === 0 ? eventIds : eventIds.filter((id) => !this.eventState.has(id)));
    for (const id of own) out.set(id, this.eventState.get(id)!);
    return out;
  }

  async stateGroupDepth(roomId: string, group: string): Promise<number> {
    const g = this.ours(roomId) ? this.groups.get(group) : undefined;
    return g ? g.depth : this.store.stateGroupDepth(roomId, group);
  }

  async stateGroupMeta(roomId: string, group: string): Promise<StateGroupMeta> {
    const g = this.ours(roomId) ? this.groups.get(group) : undefined;
    return g ? metaOf(g) : this.store.stateGroupMeta(roomId, group);
  }

  async eventStatuses(roomId: string, eventIds: readonly string[]): Promise<Map<string, EventStatus>> {
    const staged = this.ours(roomId) ? eventIds.filter((id) => this.events.has(id)) : [];
    const out = await this.store.eventStatuses(roomId, staged.length === 0 ? eventIds : eventIds.filter((id) => !this.events.has(id)));
    for (const id of staged) {
      const status = this.statuses.get(id);
      if (status) out.set(id, status);
    }
    return out;
  }

  async loadStateGroup(roomId: string, group: string): Promise<ReadonlyMap<string, string>> {
    if (!this.ours(roomId)) return this.store.loadStateGroup(roomId, group);
    const known = this.groupStates.get(group);
    if (known) return known;
    const g = this.groups.get(group);
    if (!g) return this.store.loadStateGroup(roomId, group);
    // A staged group: its parent's state (staged or stored) plus its delta.
    const base = g.parent === null ? LayeredMap.empty<string>() : await this.loadStateGroup(roomId, g.parent);
    const changes = Object.entries(g.delta);
    let state: ReadonlyMap<string, string>;
    if (base instanceof LayeredMap && changes.every(([, id]) => id !== null)) {
      state = (base as LayeredMap<string>).with(changes as [string, string][]);
    } else {
      const whole = new Map(base);
      for (const [field, id] of changes) {
        if (id === null) whole.delete(field);
        else whole.set(field, id);
      }
      state = LayeredMap.from(whole);
    }
    this.groupStates.set(group, state);
    return state;
  }

  async getEvents(roomId: string, eventIds: readonly string[]): Promise<Map<string, Pdu>> {
    const staged = this.ours(roomId) ? eventIds.filter((id) => this.events.has(id)) : [];
    const out = await this.store.getEvents(roomId, staged.length === 0 ? eventIds : eventIds.filter((id) => !this.events.has(id)));
    for (const id of staged) out.set(id, this.events.get(id)!);
    return out;
  }

  /**
   * A run ends after a state event or a redaction (RoomService.persistEvents), so no staged event
   * is redacted or is a current state event read here: staged events are served as they are.
   */
  async getStateEvents(roomId: string, version: RoomVersion, eventIds: readonly string[]): Promise<Map<string, Pdu>> {
    if (!this.ours(roomId)) return this.store.getStateEvents(roomId, version, eventIds);
    const out = new Map<string, Pdu>();
    const missing: string[] = [];
    for (const id of eventIds) {
      const ev = this.events.get(id) ?? this.stateEvents.get(id);
      if (ev) out.set(id, ev);
      else missing.push(id);
    }
    if (missing.length === 0) return out;
    for (const [id, ev] of await this.store.getStateEvents(roomId, version, missing)) {
      this.stateEvents.set(id, ev);
      out.set(id, ev);
    }
    return out;
  }

  private ours(roomId: string): boolean {
    return roomId === this.roomId;
  }
}
