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
import { metaOf, type EventStatus, type KnownRedactions, type StateGroupMeta, type StateGroupWrite, type StatePlan } from "../store/room-store.js";
import type { StateGroupSource } from "./room-state.js";

/** The run's snapshot is older than what the store shows: plan again on a new one (a conflict). */
export class StaleSnapshotError extends Error {
  override name = "StaleSnapshotError";
}

export class StagedEvents implements StateGroupSource {
  private readonly events = new Map<string, Pdu>();
  private readonly statuses = new Map<string, EventStatus>();
  private readonly eventState = new Map<string, { before: string; after: string }>();
  private readonly groups = new Map<string, StateGroupWrite>();
  private readonly groupStates = new Map<string, ReadonlyMap<string, string>>();
  /** Stored state events as served to the auth rules (redactions applied), read once per run. */
  private readonly stateEvents = new Map<string, Pdu>();

  /** State group IDs numbered here, from the snapshot's counter (see `allocateStateGroups`). */
  private groupSeq: number | undefined;
  private readonly groupSeqAtSnapshot: number | undefined;

  /**
   * `groupSeq`: the room's state group counter in the snapshot the run is planned on. Given, the
   * run's groups are numbered from it here, with no round trip, and the write checks the counter
   * is still there (`groupSeqUsed`); a group read from the store above it means the snapshot is
   * stale (StaleSnapshotError: plan again).
   */
  constructor(
    private readonly store: StateGroupSource,
    private readonly roomId: string,
    groupSeq?: number,
  ) {
    this.groupSeq = groupSeq;
    this.groupSeqAtSnapshot = groupSeq;
  }

  /** The counter before and after the IDs numbered here; undefined when none were (or the store numbered them). */
  get groupSeqUsed(): { expected: number; last: number } | undefined {
    if (this.groupSeqAtSnapshot === undefined || this.groupSeq === this.groupSeqAtSnapshot) return undefined;
    return { expected: this.groupSeqAtSnapshot, last: this.groupSeq! };
  }

  /** Whether `group` is a group of this run (not written yet): nothing may be remembered under its ID. */
  isStaged(roomId: string, group: string): boolean {
    return this.ours(roomId) && (this.groups.has(group) || (this.groupSeqAtSnapshot !== undefined && Number(group) > this.groupSeqAtSnapshot));
  }

  has(eventId: string): boolean {
    return this.events.has(eventId);
  }

  /** Adds an event of the run as it will be written. */
  stage(eventId: string, pdu: Pdu, plan: StatePlan | undefined, status: EventStatus | undefined): void {
    this.events.set(eventId, pdu);
    if (status) this.statuses.set(eventId, status);
    if (!plan) return;
    this.eventState.set(eventId, { before: plan.before, after: plan.after });
    for (const g of plan.groups) this.groups.set(g.id, g);
    for (const [g, state] of plan.known ?? []) this.groupStates.set(g, state);
  }

  async allocateStateGroups(roomId: string, count: number): Promise<string[]> {
    if (!this.ours(roomId) || this.groupSeq === undefined) return this.store.allocateStateGroups(roomId, count);
    const first = this.groupSeq + 1;
    this.groupSeq += count;
    return Array.from({ length: count }, (_, i) => String(first + i));
  }

  async eventStateGroups(roomId: string, eventIds: readonly string[]): Promise<Map<string, { before: string; after: string }>> {
    const own = this.ours(roomId) ? eventIds.filter((id) => this.eventState.has(id)) : [];
    const out = await this.store.eventStateGroups(roomId, own.length === 0 ? eventIds : eventIds.filter((id) => !this.eventState.has(id)));
    if (this.ours(roomId) && this.groupSeqAtSnapshot !== undefined) {
      // A stored event whose group was numbered after the snapshot: written since (by another
      // process); its ID may be one this run numbered too. The write would be refused anyway.
      for (const [id, g] of out) {
        if (Number(g.before) > this.groupSeqAtSnapshot || Number(g.after) > this.groupSeqAtSnapshot) throw new StaleSnapshotError(`event ${id} has state groups newer than the snapshot`);
      }
    }
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

  /** The run's own known states; a stored group's from the store's cache; nothing for another group numbered above the snapshot. */
  cachedStateGroup(roomId: string, group: string): ReadonlyMap<string, string> | undefined {
    if (!this.ours(roomId)) return this.store.cachedStateGroup?.(roomId, group);
    const known = this.groupStates.get(group);
    if (known || this.isStaged(roomId, group)) return known;
    return this.store.cachedStateGroup?.(roomId, group);
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
  async getStateEvents(roomId: string, version: RoomVersion, eventIds: readonly string[], known?: KnownRedactions): Promise<Map<string, Pdu>> {
    if (!this.ours(roomId)) return this.store.getStateEvents(roomId, version, eventIds, known);
    const out = new Map<string, Pdu>();
    const missing: string[] = [];
    for (const id of eventIds) {
      const ev = this.events.get(id) ?? this.stateEvents.get(id);
      if (ev) out.set(id, ev);
      else missing.push(id);
    }
    if (missing.length === 0) return out;
    for (const [id, ev] of await this.store.getStateEvents(roomId, version, missing, known)) {
      this.stateEvents.set(id, ev);
      out.set(id, ev);
    }
    return out;
  }

  private ours(roomId: string): boolean {
    return roomId === this.roomId;
  }
}
