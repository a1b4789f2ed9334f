/**
 * State at each event, for hosted rooms (issue #14, deliverable 3). Built on the pure state
 * resolution of src/protocol/state-res/ and the state groups of the room store.
 *
 * For an event E with prev_events P:
 *   - the state before E is the state after its prev event when there is one (or all share one
 *     state group), else the resolution of the states after each of them;
 *   - the state after E is that plus E itself when E is a state event (an event failing the
 *     auth rules against its auth events or the state before it is refused, not stored);
 *   - the current state is the resolution of the states after the forward extremities. When E
 *     references every extremity, that is the state after E with no resolution (the fast path
 *     every event Gatehouse creates on top of its extremities takes);
 *   - soft failure (spec "Checks performed on receipt of a PDU", step 6) is checked against the
 *     current state (the resolution of the extremities' states, kept up to date); when some of P
 *     have no state here, like Synapse's _check_for_soft_fail, against the resolution of the
 *     extremities' states and the state before E.
 * States are stored as groups: a delta on a parent group, whole again every
 * stateGroupDepthLimit deltas (room-store.ts), in the room's hash slot.
 *
 * Events stored before state groups existed, and prev_events Gatehouse does not have, have no
 * state group: they are left out, and an event none of whose prev events has one is placed on
 * the current state (what Gatehouse did for every event before: it linearised rooms).
 */
import { authEventKeys, type StateLookup } from "../protocol/auth/index.js";
import type { Pdu } from "../protocol/pdu.js";
import type { RoomVersion } from "../protocol/room-versions.js";
import { resolveState, stateAuthChain, type StateFork } from "../protocol/state-res/index.js";
import { metaOf, stateGroupDepthLimit, stateGroupRebaseLimit, STATE_GROUP_DEPTH_CAP, stateField, type RoomStore, type StateGroupMeta, type StateGroupWrite, type StatePlan } from "../store/room-store.js";
import { LayeredMap } from "../store/layered-map.js";
import { ByteLru, CacheBudget, keyBytes, MAP_ENTRY } from "../store/byte-lru.js";
import { AuthChainCache, LayeredIdSet } from "./auth-chain-cache.js";

/** A state as IDs, and the state group that holds it if there is one yet. */
export interface GroupState {
  ids: ReadonlyMap<string, string>;
  /** undefined: not stored as a group (yet). */
  group: string | undefined;
  /** For a state not stored yet: a stored state close to it, to store it as a delta on. */
  near?: GroupState;
}

/** What the room service knows about the room when an event arrives. */
export interface RoomStateView {
  roomId: string;
  version: RoomVersion;
  extremities: readonly string[];
  /** Current state and its group (undefined in rooms stored before state groups). */
  current: GroupState;
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const sb = new Set(b);
  return new Set(a).size === sb.size && a.every((x) => sb.has(x));
}

/** For every key whose event differs: the event in `to`, or null when `to` lacks the key. */
function diff(from: ReadonlyMap<string, string>, to: ReadonlyMap<string, string>): Map<string, string | null> {
  const out = new Map<string, string | null>();
  for (const [k, v] of to) if (from.get(k) !== v) out.set(k, v);
  for (const k of from.keys()) if (!to.has(k)) out.set(k, null);
  return out;
}

/**
 * What the planner reads of a room's stored states and events: the RoomStore, or the in-memory
 * store of a room being created in one write (new-room-state.ts).
 */
export type StateGroupSource = Pick<RoomStore, "allocateStateGroups" | "eventStateGroups" | "stateGroupDepth" | "eventStatuses" | "loadStateGroup" | "getEvents" | "getStateEvents" | "stateGroupMeta"> & {
  /** Whether a group is one being planned, not written yet (its ID may be numbered again after a conflict). */
  isStaged?(roomId: string, group: string): boolean;
  /**
   * A group's state when it is held in process (never read from Redis): the planner finds there
   * the fork answers it wrote as current-state groups (see RoomStateService.diffTo).
   */
  cachedStateGroup?(roomId: string, group: string): ReadonlyMap<string, string> | undefined;
};

/**
 * How RoomStateService.diffTo compared two states: `deltas`, only the keys of the deltas between
 * them; else whole, because the target is no fork's answer or the state compared has no group
 * (`whole_no_fork`), their groups do not meet within MAX_FORK_WALK steps of each (`whole_far`), or
 * the deltas between them touch more keys than the state holds (`whole_large`: reading a key
 * through both states costs about a third of a whole diff's per-entry cost, measured).
 */
export type StateDiffPath = "deltas" | "whole_no_fork" | "whole_far" | "whole_large";

/** One step up the group tree: the group above, and the keys in which its state and the one below can differ. */
export interface GroupStep {
  up: string;
  keys: readonly string[];
}

/**
 * The keys in which the states of groups `a` and `b` can differ: those of the steps from each up
 * to the nearest group both reach (`up` gives a group's step; undefined at a root). Both sides
 * are walked in lockstep, so the walk stops at the nearest such group (in a tree every walk
 * reaches it before any group above it) after at most as many steps on each side as the farther
 * one needs. "far" when they do not meet within `maxSteps` steps of each; "large" when the keys
 * are more than `maxKeys`.
 */
export async function keysBetween(
  a: string,
  b: string,
  up: (group: string) => Promise<GroupStep | undefined>,
  maxSteps: number,
  maxKeys: number,
): Promise<Set<string> | "far" | "large"> {
  const sides = [a, b].map((at) => ({ at: at as string | undefined, seen: new Map<string, number>(), steps: [] as (readonly string[])[] }));
  for (let n = 0; n <= maxSteps; n++) {
    for (let i = 0; i < 2; i++) {
      const side = sides[i]!;
      const other = sides[1 - i]!;
      if (side.at === undefined) continue;
      const j = other.seen.get(side.at);
      if (j !== undefined) {
        const keys = new Set<string>();
        for (const [walked, upTo] of [[side, side.steps.length], [other, j]] as const) {
          for (let x = 0; x < upTo; x++) for (const k of walked.steps[x]!) keys.add(k);
          if (keys.size > maxKeys) return "large";
        }
        return keys;
      }
      side.seen.set(side.at, side.steps.length);
      if (n === maxSteps) {
        side.at = undefined;
        continue;
      }
      const step = await up(side.at);
      if (step) side.steps.push(step.keys);
      side.at = step?.up;
    }
    if (sides.every((x) => x.at === undefined)) break;
  }
  return "far";
}

/**
 * The plan of a room's create event: nothing before it, the room's first state group "1" (the
 * create script starts the room's group counter there) holding the create event after it, and
 * that group as the current state.
 */
export function createEventStatePlan(eventId: string): StatePlan {
  const field = stateField("m.room.create", "");
  return {
    groups: [{ id: "1", parent: null, delta: { [field]: eventId }, depth: 0 }],
    before: "",
    after: "1",
    current: { group: "1", set: [[field, eventId]], del: [], members: [], reset: false },
  };
}


/** Identity numbers for state maps (the store hands out one immutable map per state group). */
const mapIds = new WeakMap<object, number>();
let nextMapId = 0;
function mapId(m: object): number {
  let id = mapIds.get(m);
  if (id === undefined) mapIds.set(m, (id = ++nextMapId));
  return id;
}

/** A state to resolve, and the state group it is when known (then forks are found from the groups). */
interface LocatedState {
  ids: ReadonlyMap<string, string>;
  group?: string | undefined;
}

/** How far up the group tree a fork's common ancestor is searched. */
const MAX_FORK_WALK = 64;

/**
 * Resolutions of forks, by the answer (an immutable map): the state group the fork's states met
 * at and what the answer changed on that group's state. Another state that is that group plus
 * known deltas then differs from the answer only in those keys (see RoomStateService.diffTo).
 */
const forkAnswers = new WeakMap<object, { common: string; changes: ReadonlyMap<string, string | null> }>();

/** Heap bytes per entry of a state map's table (measured 31–46 B, bench/resolution-memo-mem.ts); keys and IDs are the group states' strings. */
const STATE_ENTRY = 40;
const MAP_HEADER = 48;

/**
 * Estimated bytes a resolution's answer holds on its own: a LayeredMap its layer (its base is a
 * group state's, held by the group cache, or shared with the other answers on it), else its whole table.
 */
export function answerBytes(answer: ReadonlyMap<string, string>): number {
  return answer instanceof LayeredMap ? 2 * MAP_HEADER + answer.layered * STATE_ENTRY : MAP_HEADER + answer.size * STATE_ENTRY;
}

/** What RoomStateService remembers across events (every entry is keyed by immutable inputs). */
export class PlannerCaches {
  /**
   * Resolutions by room and the identities of the state maps resolved. Several servers talking
   * at once leave one forward extremity each, and every event of theirs is checked against the
   * resolution of the same few state groups (the store's cached maps): resolved once, not once
   * per event. Inputs are immutable (state groups, stored events and their statuses), so a hit
   * is the same answer. Entries are the answers as handed out (immutable; a fork's answer is a
   * LayeredMap sharing its base group's entries, also when a branch replaced or removed a key of
   * it), not copies: 256 whole copies of a room's state were ~13 kB of live heap per member of a
   * forked room (bench/README.md, scale-knocks), and ~117 MB at 10,000 members with churn
   * ("Memory, 2026-12-05 (resolution memo)"). Bounded by bytes (share `resolutions`), an answer
   * counted as what it alone holds (answerBytes), and by count (256).
   */
  readonly resolved: ByteLru<string, ReadonlyMap<string, string>>;
  /**
   * Auth chains (the events plus all their auth ancestors) of the states of recent fork points,
   * by room and state group: a fork's states share their fork point's state, so only what the
   * branches add is walked (see StateFork). A child group that only adds keys extends its
   * parent's chain by a layer; a chain walked whole is stored as its difference from the room's
   * newest cached chain when that is small. Bounded by bytes (share `auth_chains`), shared layers
   * counted once: whole chains grow with a room's membership history (auth-chain-cache.ts).
   */
  readonly chainCache: AuthChainCache;
  /**
   * Whether stored events were rejected, by room and event ID. An event's status is written once,
   * with the event (the persist script), so it never changes while the event is stored.
   */
  readonly rejectedCache: ByteLru<string, boolean>;
  /** Auth verdicts of the iterative auth checks (StateResolutionInput.authVerdicts). */
  readonly authVerdicts: ByteLru<string, boolean>;

  /** The two memos and the chains are bounded by bytes, from the process's budget (GATEHOUSE_CACHE_MAX_BYTES). */
  constructor(budget: CacheBudget = new CacheBudget()) {
    this.chainCache = budget.own("auth_chains", (max) => new AuthChainCache(max));
    this.rejectedCache = budget.cache("rejected", (k: string) => MAP_ENTRY + keyBytes(k));
    this.authVerdicts = budget.cache("auth_verdicts", (k: string) => MAP_ENTRY + keyBytes(k));
    // Also at most 256 entries, as before: a layered answer keeps its base group's state alive,
    // which answerBytes does not count (the group cache holds it only while the group is recent).
    this.resolved = budget.own(
      "resolutions",
      (max) => new ByteLru<string, ReadonlyMap<string, string>>(max, (k, v) => MAP_ENTRY + keyBytes(k) + answerBytes(v), 256),
    );
  }
}

export class RoomStateService {
  private readonly resolved: PlannerCaches["resolved"];
  private readonly chainCache: PlannerCaches["chainCache"];
  private readonly rejectedCache: PlannerCaches["rejectedCache"];
  private readonly authVerdicts: PlannerCaches["authVerdicts"];

  constructor(
    private readonly store: StateGroupSource,
    private readonly caches: PlannerCaches = new PlannerCaches(),
    /** `onDiff`: how each diff of a state to a resolution's answer was made (a metric). */
    private readonly hooks: { onDiff?: (path: StateDiffPath) => void } = {},
  ) {
    ({ resolved: this.resolved, chainCache: this.chainCache, rejectedCache: this.rejectedCache, authVerdicts: this.authVerdicts } = caches);
  }

  /**
   * The same planner over another source, sharing this one's caches: a run of events planned
   * before it is written reads the run's earlier events from a staged source (room-service.ts).
   * Group IDs are never reused and a staged event is only ever written as planned, so what the
   * caches learn from staged inputs stays true (a run that is not written leaves unused IDs).
   */
  withSource(store: StateGroupSource): RoomStateService {
    return new RoomStateService(store, this.caches, this.hooks);
  }

  /**
   * State resolution over states of this room, with the store as the event source, plus
   * `inFlight`: the event being persisted, which the store does not have yet (Synapse's
   * event_map). `local`: groups being written with the event (not stored yet). The answer is
   * immutable and may share entries with the states given (never change it).
   */
  async resolve(
    roomId: string,
    version: RoomVersion,
    sets: readonly LocatedState[],
    inFlight?: { eventId: string; pdu: Pdu },
    local: readonly StateGroupWrite[] = [],
  ): Promise<ReadonlyMap<string, string>> {
    const distinct: LocatedState[] = [];
    for (const s of sets) if (!distinct.some((d) => d.ids === s.ids || (d.group !== undefined && d.group === s.group))) distinct.push(s);
    if (distinct.length === 1) return distinct[0]!.ids;
    const memoKey = `${roomId}\u0000${distinct.map((s) => mapId(s.ids)).sort((a, b) => a - b).join(",")}`;
    const hit = this.resolved.get(memoKey);
    if (hit) return hit;
    const rejected = new Set<string>();
    const fetchEvents = async (ids: readonly string[]) => {
      // Redacted state events as their redacted copies, as Synapse's event cache serves them.
      const events = await this.store.getStateEvents(roomId, version, ids.filter((id) => id !== inFlight?.eventId));
      const unknown: string[] = [];
      for (const id of events.keys()) {
        const r = this.rejectedCache.get(`${roomId} ${id}`);
        if (r === undefined) unknown.push(id);
        else if (r) rejected.add(id);
      }
      const statuses = await this.store.eventStatuses(roomId, unknown);
      for (const id of unknown) {
        const r = statuses.get(id) === "rejected";
        this.rejectedCache.set(`${roomId} ${id}`, r);
        if (r) rejected.add(id);
      }
      if (inFlight && ids.includes(inFlight.eventId)) events.set(inFlight.eventId, inFlight.pdu);
      return events;
    };
    const located = await this.forkOf(roomId, version, distinct, local);
    const fork = located?.fork;
    const extend = (base: ReadonlyMap<string, string>, changes: ReadonlyMap<string, string>) => {
      const answer = layered(base).with(changes);
      forkAnswers.set(answer, { common: located!.common, changes });
      return answer;
    };
    const whole = await resolveState({
      roomVersion: version,
      roomId,
      stateSets: distinct.map((s) => s.ids),
      fetchEvents,
      isRejected: (id) => rejected.has(id),
      authVerdicts: this.authVerdicts,
      ...(fork ? { fork, extend } : {}),
    });
    const resolved = fork && !forkAnswers.has(whole) ? (onBase(whole, fork.base, located!.common) ?? whole) : whole;
    this.resolved.set(memoKey, resolved);
    return resolved;
  }

  private async groupMeta(roomId: string, group: string, local: readonly StateGroupWrite[]): Promise<StateGroupMeta> {
    const w = local.find((g) => g.id === group);
    return w ? metaOf(w) : this.store.stateGroupMeta(roomId, group);
  }

  /** The group and its ancestors, nearest first (at most MAX_FORK_WALK). */
  private async ancestry(roomId: string, group: string, local: readonly StateGroupWrite[]): Promise<{ group: string; meta: StateGroupMeta }[]> {
    const out: { group: string; meta: StateGroupMeta }[] = [];
    for (let g: string | null = group; g !== null && out.length < MAX_FORK_WALK; ) {
      const meta = await this.groupMeta(roomId, g, local);
      out.push({ group: g, meta });
      g = meta.up;
    }
    return out;
  }

  /**
   * The states as a StateFork: their nearest common ancestor group, its state and auth chain,
   * and each state's delta from it (the groups' deltas in between, composed). Undefined when a
   * state has no group, or the groups do not meet within MAX_FORK_WALK.
   */
  private async forkOf(
    roomId: string,
    version: RoomVersion,
    sets: readonly LocatedState[],
    local: readonly StateGroupWrite[],
  ): Promise<{ fork: StateFork; common: string } | undefined> {
    if (sets.some((s) => s.group === undefined || s.group === "")) return undefined;
    const paths = await Promise.all(sets.map((s) => this.ancestry(roomId, s.group!, local)));
    const others = paths.slice(1).map((p) => new Map(p.map((x, i) => [x.group, i] as const)));
    const at = paths[0]!.findIndex((x) => others.every((o) => o.has(x.group)));
    if (at < 0) return undefined;
    const common = paths[0]![at]!.group;
    const deltas = paths.map((p, i) => {
      const end = i === 0 ? at : others[i - 1]!.get(common)!;
      const d = new Map<string, string | null>();
      // Oldest first, so that later deltas win.
      for (let j = end - 1; j >= 0; j--) for (const [k, v] of Object.entries(p[j]!.meta.delta ?? {})) d.set(k, v);
      return d;
    });
    const base = await this.store.loadStateGroup(roomId, common);
    const baseChain = await this.chainOf(roomId, version, common, base, local);
    return { fork: { base, baseChain, deltas }, common };
  }

  /**
   * `diff(from.ids, to)`, in the size of the deltas when `to` is a fork's resolution: `to` is the
   * state of the group the fork met at plus the answer's changes, and `from` (the state of
   * `from.group`) differs from that group's state only in the keys of the steps from each up to
   * the nearest group both reach (keysBetween). Else, or when that walk does not meet within
   * MAX_FORK_WALK steps of each side, the whole states are compared (O(state), which in a forked
   * room of thousands of members was most of a knock). `local`: the plan's groups, not stored yet.
   */
  async diffTo(roomId: string, from: LocatedState, to: ReadonlyMap<string, string>, local: readonly StateGroupWrite[] = []): Promise<Map<string, string | null>> {
    const answer = forkAnswers.get(to);
    const keys = answer && from.group ? await keysBetween(from.group, answer.common, (g) => this.stepUp(roomId, g, local), MAX_FORK_WALK, from.ids.size) : "no_fork";
    if (typeof keys === "string") {
      this.hooks.onDiff?.(`whole_${keys}`);
      return diff(from.ids, to);
    }
    this.hooks.onDiff?.("deltas");
    for (const k of answer!.changes.keys()) keys.add(k);
    const out = new Map<string, string | null>();
    for (const k of keys) {
      const v = to.get(k);
      if (from.ids.get(k) !== v) out.set(k, v ?? null);
    }
    return out;
  }

  /**
   * A group's step up the tree for `keysBetween`. A current-state group the planner wrote as a
   * fork's answer (the group cache holds that answer) steps to the group the fork met at, with
   * the answer's changes on it: the chain of current-state groups is a delta on the previous
   * current state each (the smaller delta), far from the event groups the next forks meet at,
   * which a walk by the stored parents reached only after 32–256 steps (bench/README.md). Else
   * the stored parent (a whole group: the group it was built on) and the delta on it.
   */
  private async stepUp(roomId: string, group: string, local: readonly StateGroupWrite[]): Promise<GroupStep | undefined> {
    if (group === "") return undefined;
    if (!local.some((w) => w.id === group)) {
      const state = this.store.cachedStateGroup?.(roomId, group);
      const answer = state && forkAnswers.get(state);
      if (answer && answer.common !== group) return { up: answer.common, keys: [...answer.changes.keys()] };
    }
    const meta = await this.groupMeta(roomId, group, local);
    if (meta.up === null || !meta.delta) return undefined;
    return { up: meta.up, keys: Object.keys(meta.delta) };
  }

  /** The auth chain of a group's state: from the cache, a cached ancestor's plus what was added since, or walked whole. */
  private async chainOf(roomId: string, version: RoomVersion, group: string, state: ReadonlyMap<string, string>, local: readonly StateGroupWrite[]): Promise<LayeredIdSet> {
    const key = `${roomId} ${group}`;
    // Only stored groups are remembered by ID: a run's own groups are numbered from its snapshot
    // (staged-events.ts), a run that is not written leaves its IDs to the next one, and a newer
    // snapshot may have seen a stored group under an ID this run numbered too.
    const stored = (g: string) => !local.some((w) => w.id === g) && !this.store.isStaged?.(roomId, g);
    const cached = stored(group) ? this.chainCache.get(key) : undefined;
    if (cached) return cached;
    const source = { roomVersion: version, roomId, fetchEvents: (ids: readonly string[]) => this.store.getEvents(roomId, ids) };
    const path = await this.ancestry(roomId, group, local);
    let chain: LayeredIdSet | undefined;
    const ancestorAt = path.findIndex((x, i) => i > 0 && stored(x.group) && this.chainCache.get(`${roomId} ${x.group}`) !== undefined);
    if (ancestorAt > 0) {
      // Exact when the groups since only added keys the ancestor's state lacks: this state is
      // then the ancestor's plus the added events.
      const ancestor = path[ancestorAt]!.group;
      const added = new Map<string, string | null>();
      for (let j = ancestorAt - 1; j >= 0; j--) for (const [k, v] of Object.entries(path[j]!.meta.delta ?? {})) added.set(k, v);
      const ancestorState = await this.store.loadStateGroup(roomId, ancestor);
      if ([...added].every(([k, v]) => v !== null && !ancestorState.has(k))) {
        const from = this.chainCache.get(`${roomId} ${ancestor}`)!;
        chain = from.plus(await stateAuthChain(source, [...added.values()] as string[], from));
      }
    }
    if (chain === undefined) {
      const whole = await stateAuthChain(source, [...state.values()]);
      const near = this.chainCache.newestOf(roomId);
      chain = near ? near.rebase(whole) : LayeredIdSet.of(whole);
    }
    if (stored(group)) this.chainCache.set(key, chain);
    return chain;
  }

  /** The state after each event that has a state group (others are left out). */
  private async statesAfter(roomId: string, eventIds: readonly string[], known?: Map<string, { before: string; after: string }>): Promise<GroupState[]> {
    const groups = known ?? (await this.store.eventStateGroups(roomId, eventIds));
    const unique = [...new Set([...groups.values()].map((g) => g.after))];
    return Promise.all(unique.map(async (g) => ({ ids: await this.store.loadStateGroup(roomId, g), group: g })));
  }

  /**
   * The state before an event with these prev_events, and whether some of them have no state
   * here (unknown to Gatehouse, or stored before state groups).
   */
  async stateBefore(
    view: RoomStateView,
    prevEvents: readonly string[],
    gapStates?: ReadonlyMap<string, ReadonlyMap<string, string>>,
  ): Promise<{ state: GroupState; missingPrevs: boolean }> {
    if (sameSet(prevEvents, view.extremities) && view.current.group !== undefined) return { state: view.current, missingPrevs: false };
    const groups = await this.store.eventStateGroups(view.roomId, prevEvents);
    const missingPrevs = new Set(prevEvents).size > groups.size;
    const states: GroupState[] = await this.statesAfter(view.roomId, prevEvents, groups);
    // Prev events with no state here, whose state after was taken from the sender (a gap
    // get_missing_events left, rooms/gap-state.ts): resolved with the others, as Synapse does.
    // They stay missing prev events for the soft-failure check.
    if (missingPrevs && gapStates) for (const p of new Set(prevEvents)) if (!groups.has(p) && gapStates.has(p)) states.push({ ids: gapStates.get(p)!, group: undefined });
    if (states.length === 0) return { state: view.current, missingPrevs };
    if (states.length === 1) return { state: states[0]!, missingPrevs };
    const ids = await this.resolve(view.roomId, view.version, states);
    return { state: { ids, group: undefined, near: states.find((s) => s.group !== undefined) ?? view.current }, missingPrevs };
  }

  /**
   * The current state for the soft-failure check of an event, as Synapse's _check_for_soft_fail:
   * the current state; when some prev events are missing (a gap, easy to manufacture), the
   * resolution of the extremities' states and the state before the event.
   */
  async currentForSoftFail(view: RoomStateView, before: GroupState, missingPrevs: boolean): Promise<ReadonlyMap<string, string>> {
    if (!missingPrevs) return view.current.ids;
    const states = await this.statesAfter(view.roomId, view.extremities);
    if (states.length === 0) return view.current.ids;
    return this.resolve(view.roomId, view.version, [...states, before]);
  }

  /** A StateLookup over a state of IDs, with the events `event`'s auth rules may read loaded. */
  async lookupFor(roomId: string, version: RoomVersion, ids: ReadonlyMap<string, string>, event: Pdu): Promise<StateLookup> {
    const keys = authEventKeys(event, version).map(([t, s]) => stateField(t, s));
    keys.push(stateField("m.room.create", ""));
    // authEventKeys covers every key the rules read (third-party invite token, authorising user).
    const wanted = [...new Set(keys)].map((k) => ids.get(k)).filter((x): x is string => x !== undefined);
    const events = await this.store.getStateEvents(roomId, version, wanted);
    return (type, stateKey) => {
      const id = ids.get(stateField(type, stateKey));
      return id === undefined ? undefined : events.get(id);
    };
  }

  /**
   * The groups to write for `event` and the new current state. `outcome`: "accepted" changes
   * current state, "soft_failed" does not (and is no extremity). Group IDs are allocated only
   * for groups written: a message on current state needs none, a state event on it one.
   */
  async plan(view: RoomStateView, eventId: string, pdu: Pdu, before: GroupState, outcome: "accepted" | "soft_failed"): Promise<StatePlan> {
    const { roomId, version } = view;
    const groups: StateGroupWrite[] = [];
    const idPool: string[] = [];
    const metaFor = async (group: string): Promise<StateGroupMeta> => {
      const w = groups.find((g) => g.id === group);
      return w ? metaOf(w) : this.store.stateGroupMeta(roomId, group);
    };
    /** A new group: `delta` on `parent`, or the whole `ids()` when there is no parent or the chain is long. */
    const addGroup = async (parent: string | undefined, delta: () => ReadonlyMap<string, string | null>, ids: () => ReadonlyMap<string, string>): Promise<string> => {
      // Every group this plan may write, allocated in one round trip (unused IDs are harmless gaps).
      if (idPool.length === 0) {
        const prevsNow = new Set(prevEventIds(pdu));
        const mayResolve = outcome === "accepted" && !view.extremities.every((x) => prevsNow.has(x));
        const most = (before.group === undefined ? 1 : 0) + (typeof pdu.state_key === "string" ? 1 : 0) + (mayResolve ? 1 : 0);
        idPool.push(...(await this.store.allocateStateGroups(roomId, Math.max(1, most - groups.length))));
      }
      const id = idPool.shift()!;
      const parentMeta = parent === undefined || parent === "" ? undefined : await metaFor(parent);
      const parentDepth = parent === undefined ? STATE_GROUP_DEPTH_CAP : parent === "" ? -1 : parentMeta!.depth;
      const whole = (): StateGroupWrite => ({ id, parent: null, delta: Object.fromEntries(ids()), depth: 0 });
      let group: StateGroupWrite;
      if (parent === undefined) group = whole();
      else if (parentDepth + 1 < stateGroupDepthLimit(ids().size)) {
        group = { id, parent: parent === "" ? null : parent, delta: Object.fromEntries(delta()), depth: parentDepth + 1, ...(parentMeta?.base !== undefined ? { base: parentMeta.base } : {}) };
      } else {
        // The chain is long: one delta on the whole group it started from while that is small
        // (stateGroupRebaseLimit), else the state whole again. The ancestor keeps the tree connected.
        const base = parentMeta?.base;
        const rebased = base === undefined ? undefined : diff(await this.store.loadStateGroup(roomId, base), ids());
        group =
          rebased !== undefined && rebased.size <= stateGroupRebaseLimit(ids().size)
            ? { id, parent: base!, delta: Object.fromEntries(rebased), depth: 1, base: base! }
            : { ...whole(), ancestor: { id: parent, delta: Object.fromEntries(delta()) } };
      }
      groups.push(group);
      return id;
    };

    const near = before.near ?? view.current;
    const nearDelta = before.group === undefined ? await this.diffTo(roomId, near, before.ids, groups) : undefined;
    const beforeGroup =
      before.group ??
      (await addGroup(
        near.group,
        () => nearDelta!,
        () => before.ids,
      ));
    const ownKey = typeof pdu.state_key === "string" ? stateField(pdu.type, pdu.state_key) : undefined;
    // The state after the event, built only when something needs it whole.
    // A LayeredMap: it shares the state before's entries (the group cache keeps it, see room-store.ts).
    let afterIdsMemo: LayeredMap<string> | undefined;
    const afterIds = (): ReadonlyMap<string, string> => {
      if (ownKey === undefined) return before.ids;
      afterIdsMemo ??= layered(before.ids).with([[ownKey, eventId]]);
      return afterIdsMemo;
    };
    const afterGroup =
      ownKey === undefined ? beforeGroup : await addGroup(beforeGroup, () => new Map([[ownKey, eventId]]), afterIds);
    const plan: StatePlan = { groups, before: beforeGroup, after: afterGroup, known: [] };
    const remember = () => {
      if (afterIdsMemo && afterGroup !== beforeGroup) plan.known!.push([afterGroup, afterIdsMemo]);
    };
    if (outcome !== "accepted") {
      remember();
      return plan;
    }

    // The new current state: the fast path when the event references every extremity.
    const prevs = new Set(prevEventIds(pdu));
    let currentGroup = afterGroup;
    let changes: Map<string, string | null>;
    if (view.extremities.every((x) => prevs.has(x))) {
      if (before === view.current || before.group === view.current.group) {
        changes = ownKey === undefined ? new Map() : new Map([[ownKey, eventId]]);
      } else {
        changes = diff(view.current.ids, afterIds());
      }
    } else {
      const others = view.extremities.filter((x) => !prevs.has(x));
      const states = await this.statesAfter(roomId, others);
      const resolved = await this.resolve(roomId, version, [...states, { ids: afterIds(), group: afterGroup }], { eventId, pdu }, groups);
      const fromAfter = await this.diffTo(roomId, { ids: afterIds(), group: afterGroup }, resolved, groups);
      changes = await this.diffTo(roomId, view.current, resolved, groups);
      if (fromAfter.size > 0) {
        // A delta on whichever is closer: the state after the event or the previous current state.
        const onCurrent = view.current.group !== undefined && changes.size < fromAfter.size;
        currentGroup = onCurrent
          ? await addGroup(view.current.group, () => changes, () => resolved)
          : await addGroup(afterGroup, () => fromAfter, () => resolved);
        // Kept sharing entries: the resolution itself when it is a LayeredMap (a fork's answer
        // on its base group), else the state after plus what the resolution added, when it only added.
        const after = afterIds();
        const shared =
          resolved instanceof LayeredMap
            ? resolved
            : after instanceof LayeredMap && [...fromAfter.values()].every((v) => v !== null)
              ? after.with(fromAfter as Map<string, string>)
              : resolved;
        plan.known!.push([currentGroup, shared]);
      }
    }
    const set: [string, string][] = [];
    const del: string[] = [];
    const changedMembers: [userId: string, eventId: string | null][] = [];
    for (const [field, id] of changes) {
      if (id === null) del.push(field);
      else set.push([field, id]);
      const [type, stateKey] = JSON.parse(field) as [string, string];
      if (type === "m.room.member") changedMembers.push([stateKey, id]);
    }
    const members: [string, string][] = [];
    if (changedMembers.length > 0) {
      const ids = changedMembers.map(([, id]) => id).filter((x): x is string => x !== null && x !== eventId);
      const memberEvents = await this.store.getEvents(roomId, ids);
      for (const [u, id] of changedMembers) {
        const ev = id === null ? undefined : id === eventId ? pdu : memberEvents.get(id);
        const m = (ev?.content as { membership?: unknown } | undefined)?.membership;
        members.push([u, typeof m === "string" ? m : ""]);
      }
    }
    // The state cache follows current state by applying each accepted event's own key; tell it
    // to read again when the change was anything else (a lost conflict, a state reset).
    const asCacheExpects = ownKey === undefined ? changes.size === 0 : changes.size === 1 && changes.get(ownKey) === eventId;
    plan.current = { group: currentGroup, set, del, members, reset: !asCacheExpects };
    remember();
    return plan;
  }
}

/**
 * A fork's answer that resolution built whole (a branch replaced or removed a key of the base
 * group's state, so the fork path did not apply) as the base group's state plus its difference
 * from it, when that is small: the memo and the group cache then share the base's entries instead
 * of each holding a copy of the room's state, and `diffTo` reads only the difference. Undefined
 * when the difference is large (the whole answer is kept).
 */
function onBase(answer: ReadonlyMap<string, string>, base: ReadonlyMap<string, string>, common: string): LayeredMap<string> | undefined {
  // A base that is not a LayeredMap is no group cache's (it would be copied, not shared).
  if (!(base instanceof LayeredMap)) return undefined;
  const changes = diff(base, answer);
  // LayeredMap's own bound on a layer (about √size): a larger difference would be folded into a copy anyway.
  if (changes.size > 16 && changes.size * changes.size > answer.size) return undefined;
  const shared = (base as LayeredMap<string>).with(changes);
  forkAnswers.set(shared, { common, changes });
  return shared;
}

/** `ids` as a LayeredMap (itself when it is one; else a copy that later versions can share). */
function layered(ids: ReadonlyMap<string, string>): LayeredMap<string> {
  return ids instanceof LayeredMap ? (ids as LayeredMap<string>) : LayeredMap.from(ids);
}

function prevEventIds(pdu: Pdu): string[] {
  return (Array.isArray(pdu.prev_events) ? pdu.prev_events : []).map((p: unknown) => (Array.isArray(p) ? String(p[0]) : String(p)));
}
