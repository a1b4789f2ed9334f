/**
 * The resolution memo's answers (RoomStateService.resolve, PlannerCaches.resolved) share the
 * fork point's state instead of copying it, also when a branch replaced or removed a key of it
 * (the resolver then compares the whole sets and builds a whole Map). Every shared vector
 * (../shared/spec/vectors/state-res.json) is resolved through state groups: a base group and
 * one child group per state set. The answer must be equal, as a map, to the answer without
 * groups (a whole copy), and be a LayeredMap on the base group's own state when it differs from
 * it in a few keys.
 */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { loadVectors } from "../support/vectors.js";
import { forkOf } from "../support/state-fork.js";
import { getRoomVersion } from "../../src/protocol/room-versions.js";
import { resolveState, stateMapKey, type StateResEvent } from "../../src/protocol/state-res/index.js";
import { RoomStateService, PlannerCaches, answerBytes, type StateGroupSource } from "../../src/rooms/room-state.js";
import { CacheBudget, CACHE_SHARES } from "../../src/store/byte-lru.js";
import { LayeredMap } from "../../src/store/layered-map.js";
import type { StateGroupMeta } from "../../src/store/room-store.js";
import type { Pdu } from "../../src/protocol/pdu.js";

interface VectorCase {
  name: string;
  room_version: string;
  room_id: string;
  events: { label: string; event_id: string; pdu: StateResEvent }[];
  state_sets: Record<string, string>[];
}

const vectors = loadVectors<{ cases: VectorCase[] }>("state-res");

function toKey(k: string): string {
  const i = k.indexOf("|");
  return stateMapKey(k.slice(0, i), k.slice(i + 1));
}

/** Group "1" holds `base` (as the store's group cache: a LayeredMap); group i+2 is set i, a delta on "1". */
function groupsSource(events: ReadonlyMap<string, Pdu>, base: LayeredMap<string>, deltas: readonly ReadonlyMap<string, string | null>[]): StateGroupSource {
  const meta = new Map<string, StateGroupMeta>([["1", { depth: 0, up: null, base: "1" }]]);
  const states = new Map<string, ReadonlyMap<string, string>>([["1", base]]);
  deltas.forEach((d, i) => {
    meta.set(String(i + 2), { depth: 1, up: "1", delta: Object.fromEntries(d), base: "1" });
    states.set(String(i + 2), base.with(d));
  });
  const pick = (ids: readonly string[]) => new Map(ids.filter((id) => events.has(id)).map((id) => [id, events.get(id)!] as const));
  const unused = () => {
    throw new Error("not used by resolve");
  };
  return {
    allocateStateGroups: unused,
    eventStateGroups: unused,
    stateGroupDepth: unused,
    eventStatuses: async () => new Map(),
    loadStateGroup: async (_r: string, g: string) => states.get(g)!,
    getEvents: async (_r: string, ids: readonly string[]) => pick(ids),
    getStateEvents: async (_r: string, _v: unknown, ids: readonly string[]) => pick(ids),
    stateGroupMeta: async (_r: string, g: string) => meta.get(g)!,
  } as unknown as StateGroupSource;
}

/**
 * `pad`: that many more keys every set shares (a bigger room; their events are never checked, as
 * unconflicted state), so that a difference of a few keys is small against the state.
 */
const rows = [
  { why: "branches only add keys (the resolver's fork path, `extend`)", fork: { moveToDeltas: 0 }, dropShared: false, pad: 0 },
  { why: "a branch replaces or removes a key of the base (the whole path; the answer is layered here)", fork: { moveToDeltas: 0.3, breakBase: true }, dropShared: false, pad: 0 },
  {
    why: "a bigger room: replacements and removals on the branches, the answer a small layer on the base",
    fork: { moveToDeltas: 0, breakBase: true },
    dropShared: false,
    pad: 400,
  },
  {
    why: "every branch removes a key of the base (a state reset on each), plus replacements",
    fork: { moveToDeltas: 0, breakBase: true },
    dropShared: true,
    pad: 400,
  },
  { why: "an empty base in a bigger room: the answer differs in every key (over √size), kept whole", fork: { moveToDeltas: 1 }, dropShared: false, pad: 100 },
];

describe("resolution memo: answers share the fork point's state", () => {
  for (const row of rows) {
    test(row.why, async () => {
      let shared = 0;
      let replaced = 0;
      let removed = 0;
      for (const c of vectors.cases) {
        const rv = getRoomVersion(c.room_version)!;
        const events = new Map(c.events.map((e) => [e.event_id, e.pdu as unknown as Pdu] as const));
        const sets = c.state_sets.map((s) => new Map(Object.entries(s).map(([k, v]) => [toKey(k), v] as const)));
        const createId = c.events.find((e) => e.pdu.type === "m.room.create")!.event_id;
        for (const s of sets) for (let i = 0; i < row.pad; i++) s.set(stateMapKey("x.pad", String(i)), createId);
        const input = { roomVersion: rv, roomId: c.room_id, stateSets: sets, fetchEvents: (ids: readonly string[]) => new Map(ids.filter((id) => events.has(id)).map((id) => [id, events.get(id)! as unknown as StateResEvent] as const)) };
        const fork = await forkOf(input, row.fork);
        const deltas = fork.deltas.map((d) => new Map(d));
        if (row.dropShared) {
          // The first key every set shares in the base leaves every set.
          const k = [...fork.base.keys()].find((key) => deltas.every((d) => !d.has(key)) && !key.includes("m.room.create"));
          if (k !== undefined) for (const d of deltas) d.set(k, null);
        }
        const base = LayeredMap.from(fork.base);
        const stateSets = deltas.map((d) => base.with(d));
        // The answer without groups: resolution of the whole sets, a whole Map.
        const whole = await resolveState({ ...input, stateSets: stateSets.map((s) => new Map(s)) });

        const caches = new PlannerCaches();
        const service = new RoomStateService(groupsSource(events, base, deltas), caches);
        const located = stateSets.map((ids, i) => ({ ids, group: String(i + 2) }));
        const answer = await service.resolve(c.room_id, rv, located);
        assert.deepEqual(new Map(answer), whole, `${c.name}: equal as maps to the whole-copy answer`);
        assert.equal(answer.size, whole.size, `${c.name}: size`);
        for (const k of new Set([...base.keys(), ...whole.keys()])) {
          assert.equal(answer.get(k), whole.get(k), `${c.name}: get(${k})`);
          assert.equal(answer.has(k), whole.has(k), `${c.name}: has(${k})`);
        }
        assert.equal(await service.resolve(c.room_id, rv, located), answer, `${c.name}: the memo's hit is the answer handed out`);

        const changed = [...new Set([...base.keys(), ...whole.keys()])].filter((k) => base.get(k) !== whole.get(k));
        const small = changed.length <= 16 || changed.length ** 2 <= whole.size;
        if (answer instanceof LayeredMap && answer.sharesBaseWith(base)) {
          shared++;
          replaced += changed.filter((k) => base.has(k) && whole.has(k)).length;
          removed += changed.filter((k) => !whole.has(k)).length;
          assert.ok(answer.layered <= changed.length + base.layered, `${c.name}: the layer holds only the difference`);
        } else {
          assert.ok(!small, `${c.name}: a small difference (${changed.length} keys of ${whole.size}) is shared, not copied`);
        }
      }
      if (row.fork.moveToDeltas === 1) {
        assert.equal(shared, 0, "a difference over √size is not layered (LayeredMap would fold it into a copy)");
      } else {
        assert.ok(shared > vectors.cases.length / 2, `most answers shared (${shared} of ${vectors.cases.length})`);
      }
      if (row.fork.breakBase) assert.ok(replaced > 0, `replaced keys were shared (${replaced})`);
      if (row.dropShared) assert.ok(removed > 0, `removed keys were shared (${removed})`);
    });
  }
});

describe("resolution memo: bounded by bytes (share `resolutions`)", () => {
  const c = vectors.cases.find((x) => x.name === "topic-basic/v10")!;
  const rv = getRoomVersion(c.room_version)!;
  const events = new Map(c.events.map((e) => [e.event_id, e.pdu as unknown as Pdu] as const));
  const createId = c.events.find((e) => e.pdu.type === "m.room.create")!.event_id;

  /** `forks` forks of one base group of `pad` more keys; each branch replaces the base's topic. `emptyBase`: every key on the branches (answers kept whole). */
  async function fill(maxBytes: number, forks: number, emptyBase: boolean) {
    const sets = c.state_sets.map((s) => new Map(Object.entries(s).map(([k, v]) => [toKey(k), v] as const)));
    for (const s of sets) for (let i = 0; i < 2_000; i++) s.set(stateMapKey("m.room.member", `@u${i}:example.org`), createId);
    const fork = await forkOf({ roomVersion: rv, roomId: c.room_id, stateSets: sets, fetchEvents: () => new Map() }, { moveToDeltas: emptyBase ? 1 : 0, breakBase: true });
    const base = LayeredMap.from(fork.base);
    const caches = new PlannerCaches(new CacheBudget(maxBytes));
    const service = new RoomStateService(groupsSource(events, base, fork.deltas), caches);
    const answers: ReadonlyMap<string, string>[] = [];
    for (let i = 0; i < forks; i++) {
      // New state-set objects each time: a new memo key, as a new pair of extremities' states.
      answers.push(await service.resolve(c.room_id, rv, fork.deltas.map((d, j) => ({ ids: base.with(d), group: String(j + 2) }))));
    }
    return { caches, answers, share: Math.floor(maxBytes * CACHE_SHARES.resolutions) };
  }

  const cases = [
    { why: "layered answers count their layer only: 200 fit in a small share", maxBytes: 4_000_000, forks: 200, emptyBase: false, kept: 200 },
    {
      why: "and at most 256 entries (a layered answer keeps its base alive, which its bytes do not count)",
      maxBytes: 100_000_000,
      forks: 300,
      emptyBase: false,
      kept: 256,
    },
    { why: "whole answers (2,000+ keys each) fill the share and the oldest go", maxBytes: 20_000_000, forks: 30, emptyBase: true, kept: "some" },
    { why: "a whole answer over a quarter of the share is not kept at all", maxBytes: 2_000_000, forks: 5, emptyBase: true, kept: 0 },
  ] as const;
  for (const row of cases) {
    test(row.why, async () => {
      const { caches, answers, share } = await fill(row.maxBytes, row.forks, row.emptyBase);
      assert.equal(caches.resolved.maxBytes, share);
      assert.ok(caches.resolved.bytes <= share, `${caches.resolved.bytes} B within the share ${share}`);
      const sizes = answers.map(answerBytes);
      if (row.emptyBase) assert.ok(sizes.every((b) => b >= 2_000 * 40), "a whole answer counts its whole table");
      else assert.ok(sizes.every((b) => b < 1_000), `a layered answer counts its layer: ${sizes[0]} B`);
      if (row.kept === "some") assert.ok(caches.resolved.size > 0 && caches.resolved.size < row.forks, `${caches.resolved.size} of ${row.forks} kept`);
      else assert.equal(caches.resolved.size, row.kept);
    });
  }
});
