/**
 * RoomStateService.diffTo: the change from a state to a fork's resolved answer, read from the
 * keys of the state groups' deltas between them instead of comparing whole states. In a forked
 * room the current state's groups are a long chain of deltas on the previous current state
 * (bench/README.md, "10 clients cost ~2× one client"), far from the event groups the next fork
 * meets at: the walk steps from a current-state group the planner wrote as a fork's answer (the
 * group cache holds it) to the group that fork met at, and walks both sides to the nearest group
 * they share. Every answer must equal the whole-state diff; `onDiff` tells which way it was made.
 */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { loadVectors } from "../support/vectors.js";
import { getRoomVersion } from "../../src/protocol/room-versions.js";
import { stateMapKey, type StateResEvent } from "../../src/protocol/state-res/index.js";
import { keysBetween, RoomStateService, PlannerCaches, type GroupStep, type StateDiffPath, type StateGroupSource } from "../../src/rooms/room-state.js";
import { StagedEvents } from "../../src/rooms/staged-events.js";
import { LayeredMap } from "../../src/store/layered-map.js";
import type { StateGroupMeta, StateGroupWrite } from "../../src/store/room-store.js";
import type { Pdu } from "../../src/protocol/pdu.js";

/** The whole-state diff (what diffTo must answer): for every key whose event differs, the event in `to` or null. */
function wholeDiff(from: ReadonlyMap<string, string>, to: ReadonlyMap<string, string>): Map<string, string | null> {
  const out = new Map<string, string | null>();
  for (const [k, v] of to) if (from.get(k) !== v) out.set(k, v);
  for (const k of from.keys()) if (!to.has(k)) out.set(k, null);
  return out;
}

function sorted(m: ReadonlyMap<string, string | null>): [string, string | null][] {
  return [...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

describe("keysBetween: the keys two groups' states can differ in", () => {
  /**
   * A random forest: group i's stored parent is a lower group or none (a root), its delta a few
   * keys of a small set (null: removed); some groups also have a shortcut (as a current-state group
   * that is a fork's answer: any lower group, with exactly the keys their states differ in). The
   * walk must meet at the nearest group both reach (checked against a reference walk), within
   * `maxSteps` of each side, and its keys must cover every key the two states differ in.
   */
  const forest = fc.integer({ min: 2, max: 40 }).chain((n) =>
    fc.record({
      groups: fc.array(
        fc.record({
          parent: fc.option(fc.nat(), { freq: 5 }),
          delta: fc.dictionary(fc.constantFrom("a", "b", "c", "d", "e", "f", "g", "h"), fc.option(fc.constantFrom("1", "2", "3"), { freq: 3 }), { maxKeys: 3 }),
          shortcut: fc.option(fc.nat(), { freq: 2 }),
        }),
        { minLength: n, maxLength: n },
      ),
      a: fc.nat({ max: n - 1 }),
      b: fc.nat({ max: n - 1 }),
      maxSteps: fc.integer({ min: 0, max: 45 }),
    }),
  );

  test("meets at the nearest shared group, within maxSteps, and covers every differing key (property)", async () => {
    await fc.assert(
      fc.asyncProperty(forest, async ({ groups, a, b, maxSteps }) => {
        const states: Map<string, string>[] = [];
        const steps: (GroupStep | undefined)[] = [];
        groups.forEach((g, i) => {
          const parent = i > 0 && g.parent !== null ? g.parent % i : undefined;
          const state = new Map(parent === undefined ? [] : states[parent]);
          for (const [k, v] of Object.entries(g.delta)) {
            if (v === null) state.delete(k);
            else state.set(k, v);
          }
          states.push(state);
          steps.push(parent === undefined ? undefined : { up: String(parent), keys: Object.keys(g.delta) });
        });
        groups.forEach((g, i) => {
          if (i === 0 || g.shortcut === null) return;
          const to = g.shortcut % i;
          steps[i] = { up: String(to), keys: [...wholeDiff(states[i]!, states[to]!).keys()] };
        });
        const up = async (g: string) => steps[Number(g)];
        const chain = (g: number) => {
          const out = [String(g)];
          for (let s = steps[g]; s; s = steps[Number(s.up)]) out.push(s.up);
          return out;
        };
        const ca = chain(a);
        const cb = chain(b);
        const da = ca.findIndex((g) => cb.includes(g));
        const db = da < 0 ? -1 : cb.indexOf(ca[da]!);

        const got = await keysBetween(String(a), String(b), up, maxSteps, Infinity);
        if (da < 0 || Math.max(da, db) > maxSteps) {
          assert.equal(got, "far", `no shared group within ${maxSteps} steps (a ${da}, b ${db})`);
          return;
        }
        assert.ok(got instanceof Set, `met (a ${da}, b ${db} steps)`);
        const expected = new Set<string>();
        for (const [c, d] of [[ca, da], [cb, db]] as const) for (let x = 0; x < d; x++) for (const k of steps[Number(c[x])]!.keys) expected.add(k);
        assert.deepEqual([...got].sort(), [...expected].sort(), "the keys of the steps up to the nearest shared group");
        for (const k of wholeDiff(states[a]!, states[b]!).keys()) assert.ok(got.has(k), `differing key ${k} covered`);
        if (expected.size > 0) assert.equal(await keysBetween(String(a), String(b), up, maxSteps, expected.size - 1), "large", "over maxKeys: large");
      }),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 300) },
    );
  });

  const rows = [
    { why: "the same group: nothing differs", a: "3", b: "3", expect: [] as string[] },
    { why: "b an ancestor of a: a's steps up to it", a: "3", b: "1", expect: ["c", "d"] },
    { why: "siblings: both sides' steps up to their parent", a: "3", b: "4", expect: ["c", "d", "e"] },
    { why: "a's shortcut (a fork's answer) jumps past its stored chain", a: "6", b: "4", expect: ["z", "e"] },
    { why: "separate roots never meet", a: "3", b: "5", expect: "far" as const },
  ];
  // 0 ─ 1 (b) ─ 2 (c) ─ 3 (d);  1 ─ 4 (e);  5 a root;  6: stored on 3, shortcut to 1 with key z.
  const tree: Record<string, GroupStep | undefined> = {
    "0": undefined,
    "1": { up: "0", keys: ["b"] },
    "2": { up: "1", keys: ["c"] },
    "3": { up: "2", keys: ["d"] },
    "4": { up: "1", keys: ["e"] },
    "5": undefined,
    "6": { up: "1", keys: ["z"] },
  };
  for (const row of rows) {
    test(row.why, async () => {
      const got = await keysBetween(row.a, row.b, async (g) => tree[g], 64, Infinity);
      if (row.expect === "far") assert.equal(got, "far");
      else assert.deepEqual(got instanceof Set ? [...got].sort() : got, [...row.expect].sort());
    });
  }
});

// ---------------------------------------------------------------------------------------------

interface VectorCase {
  name: string;
  room_version: string;
  room_id: string;
  events: { label: string; event_id: string; pdu: StateResEvent }[];
  state_sets: Record<string, string>[];
}
const vector = loadVectors<{ cases: VectorCase[] }>("state-res").cases.find((c) => c.name === "topic-basic/v10")!;
const rv = getRoomVersion(vector.room_version)!;
const ROOM = vector.room_id;
const events = new Map(vector.events.map((e) => [e.event_id, e.pdu as unknown as Pdu] as const));
const idOf = (label: string) => vector.events.find((e) => e.label === label)!.event_id;
const CREATE = idOf("CREATE");
const TOPICS = [idOf("T1"), idOf("T2"), idOf("T3")];
const TOPIC_KEY = stateMapKey("m.room.topic", "");
const pad = (i: number) => stateMapKey("x.pad", String(i));
const knock = (i: number) => stateMapKey("m.room.knock_test", `@k${i}:example.org`);

/**
 * A room's state groups in memory, as the store holds them: metadata (a delta on a parent), each
 * group's state (LayeredMaps, as the group cache's), and `cached`: what the store's group cache
 * holds (a current-state group the planner wrote as a fork's answer is cached as that answer).
 */
class Groups implements StateGroupSource {
  readonly meta = new Map<string, StateGroupMeta>();
  readonly states = new Map<string, LayeredMap<string>>();
  readonly cached = new Map<string, ReadonlyMap<string, string>>();
  metaReads = 0;
  private next = 1;

  root(state: ReadonlyMap<string, string>): string {
    const id = String(this.next++);
    this.meta.set(id, { depth: 0, up: null, base: id });
    this.states.set(id, LayeredMap.from(state));
    return id;
  }
  child(parent: string, delta: ReadonlyMap<string, string | null>): string {
    const id = String(this.next++);
    this.meta.set(id, { depth: 1, up: parent, delta: Object.fromEntries(delta) });
    this.states.set(id, this.states.get(parent)!.with(delta));
    return id;
  }
  /** `n` groups on `parent`, each adding `key(i)` (i from `from`); the last one. */
  chain(parent: string, n: number, key: (i: number) => string, from = 0): string {
    let g = parent;
    for (let i = 0; i < n; i++) g = this.child(g, new Map([[key(from + i), CREATE]]));
    return g;
  }
  /** A group stored as a delta on `parent` whose state is `state` (the planner's current-state group). */
  withState(parent: string, state: ReadonlyMap<string, string>): string {
    return this.child(parent, wholeDiff(this.states.get(parent)!, state));
  }

  async allocateStateGroups(): Promise<string[]> {
    throw new Error("not used");
  }
  async eventStateGroups(): Promise<Map<string, { before: string; after: string }>> {
    throw new Error("not used");
  }
  async stateGroupDepth(_r: string, g: string): Promise<number> {
    return this.meta.get(g)!.depth;
  }
  async eventStatuses(): Promise<Map<string, "rejected">> {
    return new Map();
  }
  async loadStateGroup(_r: string, g: string): Promise<ReadonlyMap<string, string>> {
    const s = this.states.get(g);
    if (!s) throw new Error(`group ${g} is not stored`);
    return s;
  }
  cachedStateGroup(_r: string, g: string): ReadonlyMap<string, string> | undefined {
    return this.cached.get(g);
  }
  async getEvents(_r: string, ids: readonly string[]): Promise<Map<string, Pdu>> {
    return new Map(ids.filter((id) => events.has(id)).map((id) => [id, events.get(id)!] as const));
  }
  async getStateEvents(_r: string, _v: unknown, ids: readonly string[]): Promise<Map<string, Pdu>> {
    return this.getEvents(_r, ids);
  }
  async stateGroupMeta(_r: string, g: string): Promise<StateGroupMeta> {
    this.metaReads++;
    const m = this.meta.get(g);
    if (!m) throw new Error(`group ${g} is not stored`);
    return m;
  }
}

/** The vector's first state set plus `padKeys` more keys every state shares (a bigger room). */
function baseState(padKeys: number): Map<string, string> {
  const s = new Map(Object.entries(vector.state_sets[0]!).map(([k, v]) => [stateMapKey(k.slice(0, k.indexOf("|")), k.slice(k.indexOf("|") + 1)), v] as const));
  for (let i = 0; i < padKeys; i++) s.set(pad(i), CREATE);
  return s;
}

/**
 * Two branches on `at`, both adding the same three knocks (keys every set holds alike are not
 * conflicted, so the answer has them: the vector has no events for new members); with `edits`
 * each also replaces the topic with another of the vector's topic events (a conflict the resolver
 * decides) and one removes a key of the room's state (conflicted too: a removal in the answer).
 */
function fork(groups: Groups, at: string, tag: number, edits: boolean): string[] {
  const x = groups.chain(at, 3, knock, tag * 1_000);
  const y = groups.chain(at, 3, knock, tag * 1_000);
  if (!edits) return [x, y];
  const x2 = groups.child(x, new Map<string, string | null>([[TOPIC_KEY, TOPICS[tag % 3]!], [pad(tag), null]]));
  const y2 = groups.child(y, new Map([[TOPIC_KEY, TOPICS[(tag + 1) % 3]!]]));
  return [x2, y2];
}

describe("diffTo: the change from a state to a fork's answer", () => {
  const rows: {
    why: string;
    padKeys: number;
    /** Stored deltas of the current-state chain, each on the previous current state. */
    currentChain: number;
    /** Whether the group cache holds the current group as the fork answer it was planned as. */
    cached: boolean;
    /** Where the next fork meets, against the group the current state's fork met at. */
    next: "same" | "below" | "above" | "apart";
    edits: boolean;
    expect: StateDiffPath;
  }[] = [
    {
      why: "the bench's case: 100 current-state deltas, cached as a fork answer; the next fork meets at the same group (main: whole, the walk never met it)",
      padKeys: 400,
      currentChain: 100,
      cached: true,
      next: "same",
      edits: false,
      expect: "deltas",
    },
    { why: "the next fork meets below the previous one's group (the event tree grew since)", padKeys: 400, currentChain: 100, cached: true, next: "below", edits: false, expect: "deltas" },
    { why: "the next fork meets above the previous one's group (a branch from further back)", padKeys: 400, currentChain: 100, cached: true, next: "above", edits: false, expect: "deltas" },
    {
      why: "branches replace the topic (a conflict the resolver decides) and remove a key: answers with changes and nulls",
      padKeys: 400,
      currentChain: 100,
      cached: true,
      next: "below",
      edits: true,
      expect: "deltas",
    },
    {
      why: "the current group is not in this process's group cache (another replica wrote it): its 100 stored deltas are walked and do not meet within 64 steps, so whole",
      padKeys: 400,
      currentChain: 100,
      cached: false,
      next: "same",
      edits: true,
      expect: "whole_far",
    },
    {
      why: "a short stored current chain (10) meets the fork's group above both: the walk goes up from both sides (main walked only from the current state)",
      padKeys: 400,
      currentChain: 10,
      cached: false,
      next: "same",
      edits: true,
      expect: "deltas",
    },
    { why: "the next fork met far from the previous one (66 stored groups apart on each side): whole", padKeys: 400, currentChain: 100, cached: true, next: "apart", edits: false, expect: "whole_far" },
    {
      why: "a small room: the stored deltas between them (a short current chain meeting the fork's group at the root) touch more keys than the state holds, so the whole states are compared",
      padKeys: 0,
      currentChain: 10,
      cached: false,
      next: "same",
      edits: false,
      expect: "whole_large",
    },
  ];

  for (const row of rows) {
    test(row.why, async () => {
      const groups = new Groups();
      const paths: StateDiffPath[] = [];
      const service = new RoomStateService(groups, new PlannerCaches(), { onDiff: (p) => paths.push(p) });
      const root = groups.root(baseState(row.padKeys));
      // The event groups everything shares, then the fork the current state was resolved from.
      const spine = groups.chain(root, 10, knock, 100);
      const m1 = groups.chain(spine, 1, knock, 200);
      const first = fork(groups, m1, 1, row.edits);
      const a1 = await service.resolve(ROOM, rv, first.map((g) => ({ ids: groups.states.get(g)!, group: g })));
      // The current-state chain: deltas on the previous current state, hanging far up the tree.
      let c = groups.chain(root, row.currentChain - 1, (i) => stateMapKey("m.room.knock_test", `@c${i}:example.org`));
      c = groups.withState(c, a1);
      if (row.cached) groups.cached.set(c, a1);
      // The next fork.
      let m2: string;
      if (row.next === "same") m2 = m1;
      else if (row.next === "below") m2 = groups.chain(first[0]!, 1, knock, 300);
      else if (row.next === "above") m2 = spine;
      else {
        // A fork on a branch of the root 66 groups long, while the first fork hangs on another 66 long.
        const far = groups.chain(root, 66, knock, 5_000);
        m2 = far;
        const m1far = groups.chain(root, 66, knock, 7_000);
        const again = fork(groups, m1far, 4, false);
        const a1far = await service.resolve(ROOM, rv, again.map((g) => ({ ids: groups.states.get(g)!, group: g })));
        c = groups.withState(c, a1far);
        groups.cached.set(c, a1far);
      }
      const second = fork(groups, m2, 2, row.edits);
      const a2 = await service.resolve(ROOM, rv, second.map((g) => ({ ids: groups.states.get(g)!, group: g })));
      const current = groups.states.get(c)!;
      if (groups.cached.has(c)) assert.deepEqual(new Map(current), new Map(groups.cached.get(c)!), "the current group's state is its cached answer");

      paths.length = 0;
      const got = await service.diffTo(ROOM, { ids: current, group: c }, a2);
      assert.deepEqual(sorted(got), sorted(wholeDiff(current, a2)), "equal to the whole-state diff");
      assert.ok(got.size > 0, "the states differ (the test means something)");
      assert.deepEqual(paths, [row.expect], "how it was compared");
      // And from a state on the fork itself (the planner's state after the event): its own branch's deltas.
      paths.length = 0;
      const fromBranch = await service.diffTo(ROOM, { ids: groups.states.get(second[0]!)!, group: second[0]! }, a2);
      assert.deepEqual(sorted(fromBranch), sorted(wholeDiff(groups.states.get(second[0]!)!, a2)));
      assert.deepEqual(paths, ["deltas"]);
    });
  }

  test("an answer resolved whole (its states share no group) is compared whole", async () => {
    const groups = new Groups();
    const paths: StateDiffPath[] = [];
    const service = new RoomStateService(groups, new PlannerCaches(), { onDiff: (p) => paths.push(p) });
    const x = groups.chain(groups.root(baseState(400)), 2, knock, 1);
    const y = groups.chain(groups.root(baseState(400)), 2, knock, 10);
    const answer = await service.resolve(ROOM, rv, [x, y].map((g) => ({ ids: groups.states.get(g)!, group: g })));
    const got = await service.diffTo(ROOM, { ids: groups.states.get(x)!, group: x }, answer);
    assert.deepEqual(sorted(got), sorted(wholeDiff(groups.states.get(x)!, answer)));
    assert.deepEqual(paths, ["whole_no_fork"]);
  });

  test("a group of the plan (not stored) is stepped by its own delta, never by a cached state under the same ID", async () => {
    const groups = new Groups();
    const paths: StateDiffPath[] = [];
    const service = new RoomStateService(groups, new PlannerCaches(), { onDiff: (p) => paths.push(p) });
    const root = groups.root(baseState(400));
    const m = groups.chain(root, 3, knock, 1);
    const [x, y] = fork(groups, m, 1, true);
    const answer = await service.resolve(ROOM, rv, [x!, y!].map((g) => ({ ids: groups.states.get(g)!, group: g })));
    // The plan's own group "9999" on x: x's state plus a key the answer lacks. Under that ID the
    // group cache holds another room state's answer (a group another process stored), whose
    // changes do not include the plan's key: stepping by it would miss that key.
    const local: StateGroupWrite = { id: "9999", parent: x!, delta: { [stateMapKey("x.local", "")]: CREATE }, depth: 2 };
    groups.cached.set("9999", answer);
    const ids = groups.states.get(x!)!.with([[stateMapKey("x.local", ""), CREATE]]);
    const got = await service.diffTo(ROOM, { ids, group: "9999" }, answer, [local]);
    assert.deepEqual(sorted(got), sorted(wholeDiff(ids, answer)));
    assert.equal(got.get(stateMapKey("x.local", "")), null, "the plan's own key leaves the state");
    assert.deepEqual(paths, ["deltas"]);
  });
});

describe("StagedEvents.cachedStateGroup: what a run may take from the group cache", () => {
  test("the run's own known states; stored groups from the store's cache; nothing for a group numbered above the snapshot", () => {
    const store = new Groups();
    const root = store.root(baseState(3));
    const other = store.child(root, new Map([[pad(9), CREATE]]));
    const ahead = "50";
    store.cached.set(root, store.states.get(root)!);
    store.cached.set(ahead, store.states.get(other)!);
    // Snapshot counter 40: the run numbers its groups 41, 42, …; "50" was stored by another process since.
    const staged = new StagedEvents(store, ROOM, 40);
    const known = LayeredMap.from([[pad(1), CREATE]]);
    staged.stage("$e", { type: "m.room.message" } as unknown as Pdu, { groups: [{ id: "41", parent: root, delta: {}, depth: 1 }], before: root, after: "41", known: [["41", known]] }, undefined);
    assert.equal(staged.cachedStateGroup(ROOM, "41"), known, "the run's own state");
    assert.equal(staged.cachedStateGroup(ROOM, root), store.states.get(root), "a stored group: the store's cache");
    assert.equal(staged.cachedStateGroup(ROOM, ahead), undefined, "a group numbered above the snapshot is not this run's: nothing");
    assert.equal(staged.cachedStateGroup("!other:example.org", ahead), store.states.get(other), "another room: the store's cache");
  });
});
