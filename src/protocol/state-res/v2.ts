/**
 * State resolution v2 (room versions 2–11) and v2.1 (room version 12, MSC4297).
 *
 * Spec: Room Versions v2 "State resolution" (rooms/fragments/v2-state-res.md) and v12 "State
 * resolution". The steps, with the two v2.1 changes marked:
 *   1. Split the state sets into unconflicted and conflicted state. A key missing from some
 *      set is conflicted.
 *   2. Full conflicted set = conflicted events ∪ auth difference (∪ v2.1: the conflicted state
 *      subgraph).
 *   3. Power events of the full conflicted set, with their auth ancestors inside it, in reverse
 *      topological power ordering (sender's power at the event, then origin_server_ts, then
 *      event ID); iterative auth checks from the unconflicted state (v2.1: from empty state).
 *   4. The other events in mainline order of the resolved power levels (mainline position,
 *      then origin_server_ts, then event ID); iterative auth checks from step 3's state.
 *   5. The unconflicted state is applied on top.
 *
 * Where Synapse (1.160, synapse/state/v2.py) and the spec's literal text part ways we follow
 * Synapse, which is what the rest of the network runs:
 *   - A state set's auth chain includes the state set's own events (Synapse: "reachable from
 *     the state set"); the spec defines the auth chain of an event without the event. It changes
 *     the answer of the vector auth-difference-own-state-events/v12.
 *   - An event already rejected is never admitted in the iterative auth checks, even if it
 *     would pass against the resolved state (synapse#13797).
 *   - The iterative auth checks look up `m.room.create` in the partial state in every version
 *     (Synapse's auth_types_for_event), also in v12 where auth_events leave it out.
 */
import { authEventKeys, checkEventAuth, type EventLike, type StateLookup } from "../auth/index.js";
import { membershipOf } from "../auth/membership.js";
import { powerLevelOf } from "../auth/power-levels.js";
import type { RoomVersion } from "../room-versions.js";
import { EventCache, originTs } from "./events.js";
import { reverseTopologicalSort } from "./sort.js";
import { stateMapKey, type StateFork, type StateMap, type StateResEvent, type StateResolutionInput, type StateResolutionTrace } from "./types.js";

const CREATE_KEY = stateMapKey("m.room.create", "");
const POWER_LEVELS_KEY = stateMapKey("m.room.power_levels", "");

/** Step 1: unconflicted state, and the conflicted keys with the events the sets give them. */
export function separate(stateSets: readonly StateMap[]): { unconflicted: Map<string, string>; conflicted: Map<string, Set<string>> } {
  const unconflicted = new Map<string, string>();
  const conflicted = new Map<string, Set<string>>();
  const keys = new Set<string>();
  for (const s of stateSets) for (const k of s.keys()) keys.add(k);
  for (const k of keys) {
    const ids = new Set<string | undefined>(stateSets.map((s) => s.get(k)));
    if (ids.size === 1) {
      unconflicted.set(k, [...ids][0]!);
    } else {
      ids.delete(undefined);
      conflicted.set(k, ids as Set<string>);
    }
  }
  return { unconflicted, conflicted };
}

/** A state map as `base` with `changes` on top, read without copying `base`. */
class Overlay implements StateMap {
  constructor(
    readonly base: StateMap,
    readonly changes: ReadonlyMap<string, string>,
  ) {}
  get size(): number {
    let n = this.base.size;
    for (const k of this.changes.keys()) if (!this.base.has(k)) n++;
    return n;
  }
  get(k: string): string | undefined {
    return this.changes.get(k) ?? this.base.get(k);
  }
  has(k: string): boolean {
    return this.changes.has(k) || this.base.has(k);
  }
  /** A Map of every entry (for a trace, or when no `extend` is given). */
  whole(): Map<string, string> {
    const m = new Map(this.base);
    for (const [k, v] of this.changes) m.set(k, v);
    return m;
  }
  entries(): MapIterator<[string, string]> {
    return this.whole().entries();
  }
  keys(): MapIterator<string> {
    return this.whole().keys();
  }
  values(): MapIterator<string> {
    return this.whole().values();
  }
  [Symbol.iterator](): MapIterator<[string, string]> {
    return this.entries();
  }
  forEach(fn: (value: string, key: string, map: ReadonlyMap<string, string>) => void): void {
    this.whole().forEach((v, k) => fn(v, k, this));
  }
}

/**
 * Step 1 from a fork (see `StateFork`): only keys a delta touches can differ. Also returns each
 * set's events that not every set has (`own`) and the events the deltas add alike (`agreed`).
 * The unconflicted state is the base with the agreed changes on top (not a copy of the base).
 * Undefined when a touched key is in the base with a value not every set keeps: the sets then do
 * not share all of the base, and the caller compares them whole.
 */
function separateFork(
  fork: StateFork,
): { unconflicted: Overlay; conflicted: Map<string, Set<string>>; own: Set<string>[]; agreed: string[] } | undefined {
  const touched = new Set<string>();
  for (const d of fork.deltas) for (const k of d.keys()) touched.add(k);
  const changes = new Map<string, string>();
  const conflicted = new Map<string, Set<string>>();
  const own = fork.deltas.map(() => new Set<string>());
  const agreed: string[] = [];
  for (const k of touched) {
    const b = fork.base.get(k);
    const vals = fork.deltas.map((d) => (d.has(k) ? (d.get(k) ?? undefined) : b));
    const ids = new Set(vals);
    if (ids.size === 1 && vals[0] === b) continue;
    if (b !== undefined) return undefined;
    if (ids.size === 1) {
      agreed.push(vals[0]!);
      changes.set(k, vals[0]!);
      continue;
    }
    ids.delete(undefined);
    conflicted.set(k, ids as Set<string>);
    vals.forEach((v, i) => {
      if (v !== undefined) own[i]!.add(v);
    });
  }
  return { unconflicted: new Overlay(fork.base, changes), conflicted, own, agreed };
}

/** Spec "power events": power levels, join rules, create, and kicks/bans of someone else. */
export function isPowerEvent(ev: StateResEvent): boolean {
  if (ev.state_key === "" && (ev.type === "m.room.power_levels" || ev.type === "m.room.join_rules" || ev.type === "m.room.create")) return true;
  if (ev.type === "m.room.member") {
    const m = membershipOf(ev);
    return (m === "leave" || m === "ban") && ev.sender !== ev.state_key;
  }
  return false;
}

function keyOf(ev: EventLike): string | undefined {
  return typeof ev.state_key === "string" ? stateMapKey(ev.type, ev.state_key) : undefined;
}

/** The event IDs given by a list of state sets, each set as a `Set`. */
function idSets(stateSets: readonly StateMap[]): Set<string>[] {
  return stateSets.map((s) => new Set(s.values()));
}

/**
 * The auth difference: events in the auth chain of some state set but not of all, where a
 * state set's auth chain includes its own events (Synapse; see the module comment).
 *
 * Computed without walking every set whole: the events all sets share (most of the state) have
 * one common chain, in every set's chain; each set then only adds the chain of its other
 * events, walked until it meets the common chain (whose ancestors are all in it).
 */
async function authDifference(cache: EventCache, stateSets: readonly StateMap[]): Promise<Set<string>> {
  const sets = idSets(stateSets);
  const common = new Set([...sets[0]!].filter((id) => sets.every((s) => s.has(id))));
  const base = await cache.chainInclusive([...common]);
  const extras: Set<string>[] = [];
  for (const ids of sets) {
    const own = [...ids].filter((id) => !common.has(id));
    extras.push(await cache.chainInclusive(own, base));
  }
  const diff = new Set<string>();
  for (const e of extras) for (const id of e) if (!extras.every((x) => x.has(id))) diff.add(id);
  return diff;
}

/**
 * `authDifference` for a fork that shares all of its base: the sets' common events are the
 * base's plus `agreed`, so their common chain is `baseChain` plus the chain of `agreed`; each
 * set then walks only from its own events until it meets that chain.
 */
async function authDifferenceFork(cache: EventCache, fork: StateFork, own: readonly Set<string>[], agreed: readonly string[]): Promise<Set<string>> {
  const agreedChain = await cache.chainInclusive(agreed, fork.baseChain);
  const common = { has: (id: string) => fork.baseChain.has(id) || agreedChain.has(id) };
  const extras: Set<string>[] = [];
  for (const ids of own) extras.push(await cache.chainInclusive([...ids], common));
  const diff = new Set<string>();
  for (const e of extras) for (const id of e) if (!extras.every((x) => x.has(id))) diff.add(id);
  return diff;
}

/**
 * v2.1's conflicted state subgraph: the events that are auth ancestors (or themselves) of a
 * conflicted event and auth descendants (or themselves) of a conflicted event. Every such
 * event lies in the conflicted events' auth chain, so the descendants are searched there.
 */
async function conflictedSubgraph(cache: EventCache, conflictedIds: ReadonlySet<string>): Promise<Set<string>> {
  const back = await cache.chainInclusive([...conflictedIds]);
  await cache.load(back);
  const children = new Map<string, string[]>();
  for (const id of back) {
    for (const a of cache.authEdges(id)) {
      if (!back.has(a)) continue;
      let cs = children.get(a);
      if (!cs) children.set(a, (cs = []));
      cs.push(id);
    }
  }
  const out = new Set<string>();
  const todo: string[] = [];
  for (const id of conflictedIds) {
    if (back.has(id) && !out.has(id)) {
      out.add(id);
      todo.push(id);
    }
  }
  while (todo.length > 0) {
    for (const c of children.get(todo.pop()!) ?? []) {
      if (!out.has(c)) {
        out.add(c);
        todo.push(c);
      }
    }
  }
  return out;
}

/** The event's sender's power level according to the event's own auth events (spec: "Reverse topological power ordering"). */
async function senderPowerAtEvent(cache: EventCache, id: string, rv: RoomVersion): Promise<number> {
  const ev = cache.get(id)!;
  const edges = cache.authEdges(id);
  await cache.load(edges);
  let pl: StateResEvent | undefined;
  let create: StateResEvent | undefined;
  for (const a of edges) {
    const aev = cache.get(a);
    if (!aev || aev.state_key !== "") continue;
    if (aev.type === "m.room.power_levels") pl = aev;
    else if (aev.type === "m.room.create") create = aev;
  }
  const plContent = pl && typeof pl.content === "object" && pl.content !== null ? pl.content : undefined;
  return powerLevelOf(ev.sender, plContent, create, rv);
}

/** Step 3's order: power events and their auth ancestors within the full conflicted set. */
async function reverseTopologicalPowerSort(
  cache: EventCache,
  powerEvents: readonly string[],
  fullConflictedSet: ReadonlySet<string>,
  rv: RoomVersion,
): Promise<string[]> {
  const graph = new Map<string, Set<string>>();
  for (const start of powerEvents) {
    const todo = [start];
    while (todo.length > 0) {
      const id = todo.pop()!;
      let edges = graph.get(id);
      if (!edges) graph.set(id, (edges = new Set()));
      for (const a of cache.authEdges(id)) {
        if (!fullConflictedSet.has(a)) continue;
        if (!graph.has(a)) todo.push(a);
        edges.add(a);
      }
    }
  }
  const power = new Map<string, number>();
  for (const id of graph.keys()) power.set(id, await senderPowerAtEvent(cache, id, rv));
  // Smallest first: highest power, then earliest origin_server_ts, then smallest event ID.
  const less = (a: string, b: string): boolean => {
    const pa = power.get(a)!;
    const pb = power.get(b)!;
    if (pa !== pb) return pa > pb;
    const ta = originTs(cache.get(a)!);
    const tb = originTs(cache.get(b)!);
    if (ta !== tb) return ta < tb;
    return a < b;
  };
  return reverseTopologicalSort(graph, less);
}

/** The `m.room.power_levels` event among an event's auth events, if any. */
async function powerLevelsAuthEvent(cache: EventCache, id: string): Promise<string | undefined> {
  const ev = await cache.fetch(id);
  if (!ev) return undefined;
  const edges = cache.authEdges(id);
  await cache.load(edges);
  for (const a of edges) {
    const aev = cache.get(a);
    if (aev && aev.type === "m.room.power_levels" && aev.state_key === "") return a;
  }
  return undefined;
}

/** Step 4's order: mainline position of each event's closest power-levels ancestor, then origin_server_ts, then ID. */
async function mainlineSort(cache: EventCache, ids: readonly string[], resolvedPowerLevels: string | undefined): Promise<{ sorted: string[]; mainline: string[] }> {
  const mainline: string[] = [];
  if (ids.length === 0) return { sorted: [], mainline };
  for (let pl = resolvedPowerLevels; pl !== undefined; pl = await powerLevelsAuthEvent(cache, pl)) {
    if (mainline.includes(pl)) break; // a cycle cannot happen in an auth DAG; never loop
    mainline.push(pl);
  }
  // The oldest power levels event has position 1, the resolved one the highest.
  const position = new Map(mainline.map((id, i) => [id, mainline.length - i] as const));
  const depth = new Map<string, number>();
  for (const id of ids) {
    let d = 0;
    const seen = new Set<string>();
    for (let cur: string | undefined = id; cur !== undefined && !seen.has(cur); cur = await powerLevelsAuthEvent(cache, cur)) {
      seen.add(cur);
      const p = position.get(cur);
      if (p !== undefined) {
        d = p;
        break;
      }
    }
    depth.set(id, d);
  }
  const sorted = [...ids].sort((a, b) => {
    const da = depth.get(a)!;
    const db = depth.get(b)!;
    if (da !== db) return da - db;
    const ta = originTs(cache.get(a)!);
    const tb = originTs(cache.get(b)!);
    if (ta !== tb) return ta - tb;
    return a < b ? -1 : a > b ? 1 : 0;
  });
  return { sorted, mainline };
}

/**
 * Spec "iterative auth checks": each event in order is checked against its auth events,
 * replaced by the partial state's events for the auth types it needs, and joins the partial
 * state when it passes.
 */
/** The partial state of the iterative auth checks: a `Map`, or a layer over the unconflicted state. */
interface PartialState {
  get(key: string): string | undefined;
  has(key: string): boolean;
  set(key: string, id: string): unknown;
}

/** A partial state starting as `base` without copying it (writes go to a layer on top). */
function layerOver(base: ReadonlyMap<string, string>): PartialState {
  const top = new Map<string, string>();
  return {
    get: (k) => top.get(k) ?? base.get(k),
    has: (k) => top.has(k) || base.has(k),
    set: (k, id) => top.set(k, id),
  };
}

async function iterativeAuthChecks(
  cache: EventCache,
  input: StateResolutionInput,
  ids: readonly string[],
  state: PartialState,
  steps: { eventId: string; accepted: boolean }[],
): Promise<void> {
  const rv = input.roomVersion;
  const rejected = input.isRejected ?? (() => false);
  const options = { verifyJoinAuthorisedVia: () => true, ...input.authOptions };
  const memo = input.authOptions ? undefined : input.authVerdicts;
  for (const id of ids) {
    const ev = cache.get(id);
    if (!ev) continue;
    const auth = new Map<string, { id: string; ev: StateResEvent }>();
    const edges = cache.authEdges(id);
    if (!cache.loaded(edges)) await cache.load(edges);
    for (const a of edges) {
      const aev = cache.get(a);
      const k = aev && keyOf(aev);
      if (aev && k !== undefined && !rejected(a)) auth.set(k, { id: a, ev: aev });
    }
    const types = authEventKeys(ev, rv).map(([t, s]) => stateMapKey(t, s));
    if (!types.includes(CREATE_KEY)) types.push(CREATE_KEY);
    const fromState = types.filter((k) => state.has(k)).map((k) => state.get(k)!);
    if (!cache.loaded(fromState)) await cache.load(fromState);
    for (const k of types) {
      const sid = state.get(k);
      const sev = sid === undefined ? undefined : cache.get(sid);
      if (sid !== undefined && sev && !rejected(sid)) auth.set(k, { id: sid, ev: sev });
    }
    // Synapse: an event rejected before is not admitted again (see the module comment).
    if (rejected(id)) {
      steps.push({ eventId: id, accepted: false });
      continue;
    }
    const createEventId = auth.get(CREATE_KEY)?.id;
    const memoKey = memo && `${rv.id} ${id} ${createEventId ?? ""} ${[...auth].map(([k, a]) => `${k}=${a.id}`).sort().join(" ")}`;
    let allowed = memoKey === undefined ? undefined : memo!.get(memoKey);
    if (allowed === undefined) {
      const lookup: StateLookup = (type, stateKey) => auth.get(stateMapKey(type, stateKey))?.ev;
      allowed = checkEventAuth(ev, rv, lookup, { ...options, createEventId }).allowed;
      if (memoKey !== undefined) memo!.set(memoKey, allowed);
    }
    const k = keyOf(ev);
    if (allowed && k !== undefined) state.set(k, id);
    steps.push({ eventId: id, accepted: allowed && k !== undefined });
  }
}

/** State resolution v2 / v2.1 (by `input.roomVersion.stateResolution`). */
export async function resolveStateV2(input: StateResolutionInput, trace?: (t: StateResolutionTrace) => void): Promise<StateMap> {
  const rv = input.roomVersion;
  const v21 = rv.stateResolution === "v2.1";
  // With a usable fork, steps 1–2 cost what the deltas cost, not what the whole state costs.
  const fork = input.fork && input.fork.deltas.length === input.stateSets.length ? separateFork(input.fork) : undefined;
  // The fork's answer: its base plus what changed, shared when the caller can (`extend`).
  const forkAnswer = (changes: ReadonlyMap<string, string>): StateMap =>
    input.extend ? input.extend(fork!.unconflicted.base, changes) : new Overlay(fork!.unconflicted.base, changes).whole();
  if (fork && fork.conflicted.size === 0) return forkAnswer(fork.unconflicted.changes);
  const { unconflicted, conflicted } = fork ?? separate(input.stateSets);
  if (conflicted.size === 0) return unconflicted as Map<string, string>;

  const cache = new EventCache(input, rv);
  const conflictedIds = new Set<string>();
  for (const ids of conflicted.values()) for (const id of ids) conflictedIds.add(id);

  const authDiff = fork ? await authDifferenceFork(cache, input.fork!, fork.own, fork.agreed) : await authDifference(cache, input.stateSets);
  const subgraph = v21 ? await conflictedSubgraph(cache, conflictedIds) : undefined;
  const full = new Set<string>([...conflictedIds, ...authDiff, ...(subgraph ?? [])]);
  await cache.load(full);
  for (const id of full) if (!cache.get(id)) full.delete(id);

  const powerEvents = [...full].filter((id) => isPowerEvent(cache.get(id)!));
  const powerSorted = await reverseTopologicalPowerSort(cache, powerEvents, full, rv);

  // v2 starts from the unconflicted state, v2.1 from empty; the fork path layers over it instead of copying it.
  const state: PartialState = v21 ? new Map<string, string>() : fork ? layerOver(unconflicted) : new Map<string, string>(unconflicted);
  const powerSteps: { eventId: string; accepted: boolean }[] = [];
  await iterativeAuthChecks(cache, input, powerSorted, state, powerSteps);

  const inPowerSort = new Set(powerSorted);
  const others = [...full].filter((id) => !inPowerSort.has(id));
  const { sorted, mainline } = await mainlineSort(cache, others, state.get(POWER_LEVELS_KEY));
  const otherSteps: { eventId: string; accepted: boolean }[] = [];
  await iterativeAuthChecks(cache, input, sorted, state, otherSteps);

  // Step 5: the unconflicted state on top of what the checks admitted.
  let resolved: StateMap;
  if (!fork) {
    const all = state as Map<string, string>;
    for (const [k, id] of unconflicted) all.set(k, id);
    resolved = all;
  } else {
    // Only keys of admitted events can differ from the unconflicted state: the base, the agreed
    // changes and those keys.
    const changes = new Map(fork.unconflicted.changes);
    for (const step of [...powerSteps, ...otherSteps]) {
      const k = step.accepted ? keyOf(cache.get(step.eventId)!) : undefined;
      if (k !== undefined && !unconflicted.has(k)) changes.set(k, state.get(k)!);
    }
    resolved = forkAnswer(changes);
  }

  trace?.({
    unconflicted: fork ? fork.unconflicted.whole() : unconflicted,
    conflicted,
    authDifference: authDiff,
    ...(subgraph ? { conflictedSubgraph: subgraph } : {}),
    fullConflictedSet: full,
    powerSorted: powerSteps,
    mainline,
    mainlineSorted: otherSteps,
  });
  return resolved;
}

/**
 * The given events plus their whole auth chain, as state resolution walks it (unknown events
 * end the walk and are included): a state's `StateFork.baseChain`. `known`: an auth-closed set
 * to leave out and not walk into (to extend a known chain by the events a delta adds).
 */
export async function stateAuthChain(
  input: Pick<StateResolutionInput, "roomVersion" | "roomId" | "fetchEvents" | "authChain">,
  ids: readonly string[],
  known?: { has(id: string): boolean },
): Promise<Set<string>> {
  const full: StateResolutionInput = { ...input, stateSets: [] };
  return new EventCache(full, input.roomVersion).chainInclusive(ids, known);
}
