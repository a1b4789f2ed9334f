/**
 * The state cache's data structures: LayeredMap against a plain Map model (every version, old ones
 * included, must read exactly like the Map it stands for), and the per-version joined servers
 * against a recount from scratch.
 */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { LayeredMap } from "../../src/store/layered-map.js";
import { applyStateEntries, cachedStateOf, joinedServerOf, type CachedState, type StateEntry } from "../../src/store/state-cache.js";
import { joinedServers } from "../../src/rooms/room-service.js";
import type { Pdu } from "../../src/protocol/pdu.js";

const RUNS = Number(process.env.FUZZ_RUNS ?? 200);

function assertSameAsMap<V extends NonNullable<unknown>>(actual: LayeredMap<V>, expected: Map<string, V>, probeKeys: readonly string[]): void {
  assert.equal(actual.size, expected.size);
  assert.deepEqual([...actual], [...expected], "entries in Map order");
  assert.deepEqual([...actual.keys()], [...expected.keys()]);
  assert.deepEqual([...actual.values()], [...expected.values()]);
  const viaForEach: [string, V][] = [];
  actual.forEach((v, k) => viaForEach.push([k, v]));
  assert.deepEqual(viaForEach, [...expected]);
  for (const k of probeKeys) {
    assert.equal(actual.get(k), expected.get(k), `get(${k})`);
    assert.equal(actual.has(k), expected.has(k), `has(${k})`);
  }
}

describe("LayeredMap", () => {
  test("every version reads like the Map it stands for, and old versions never change", () => {
    const key = fc.integer({ min: 0, max: 120 }).map((n) => `k${n}`);
    const batch = fc.array(fc.tuple(key, fc.integer({ min: 0, max: 5 })), { maxLength: 8 });
    fc.assert(
      fc.property(fc.array(fc.tuple(key, fc.integer())), fc.array(batch, { maxLength: 60 }), (initial, batches) => {
        const versions: { map: LayeredMap<number>; model: Map<string, number> }[] = [];
        let model = new Map(initial);
        let map = LayeredMap.from(initial);
        versions.push({ map, model });
        for (const b of batches) {
          model = new Map(model);
          for (const [k, v] of b) model.set(k, v);
          map = map.with(b);
          versions.push({ map, model });
        }
        const probes = Array.from({ length: 125 }, (_, i) => `k${i}`);
        for (const v of versions) assertSameAsMap(v.map, v.model, probes);
      }),
      { numRuns: RUNS },
    );
  });

  test("with removals (null), every version reads like the Map it stands for, and old versions never change", () => {
    const key = fc.integer({ min: 0, max: 120 }).map((n) => `k${n}`);
    // null removes the key (a state reset); a key removed and set again keeps its old place, so
    // entries are compared as maps here (order aside).
    const batch = fc.array(fc.tuple(key, fc.option(fc.integer({ min: 0, max: 5 }), { freq: 3 })), { maxLength: 8 });
    fc.assert(
      fc.property(fc.array(fc.tuple(key, fc.integer())), fc.array(batch, { maxLength: 60 }), (initial, batches) => {
        const versions: { map: LayeredMap<number>; model: Map<string, number> }[] = [];
        let model = new Map(initial);
        let map = LayeredMap.from(initial);
        versions.push({ map, model });
        for (const b of batches) {
          model = new Map(model);
          for (const [k, v] of b) {
            if (v === null) model.delete(k);
            else model.set(k, v);
          }
          map = map.with(b);
          versions.push({ map, model });
        }
        for (const v of versions) {
          assert.equal(v.map.size, v.model.size);
          assert.deepEqual(new Map(v.map), v.model);
          assert.deepEqual(new Set(v.map.keys()), new Set(v.model.keys()));
          assert.equal([...v.map.values()].length, v.model.size);
          for (let i = 0; i < 125; i++) {
            assert.equal(v.map.get(`k${i}`), v.model.get(`k${i}`));
            assert.equal(v.map.has(`k${i}`), v.model.has(`k${i}`));
          }
        }
      }),
      { numRuns: RUNS },
    );
  });

  test("removing keys: a layer over the shared base, a tombstone only for keys the base has", () => {
    const cases = [
      { why: "a base key removed: a tombstone in the layer, the base shared", changes: [["m1", null]], size: 99, layered: 1, get: ["m1", undefined] },
      { why: "a base key replaced (a member event superseding another)", changes: [["m1", -1]], size: 100, layered: 1, get: ["m1", -1] },
      { why: "a key added then removed: no tombstone needed", changes: [["new", 1], ["new", null]], size: 100, layered: 0, get: ["new", undefined] },
      { why: "removed then set again", changes: [["m2", null], ["m2", 7]], size: 100, layered: 1, get: ["m2", 7] },
      { why: "removing a key it lacks changes nothing", changes: [["absent", null]], size: 100, layered: 0, get: ["absent", undefined] },
    ] as const;
    const base = LayeredMap.from(Array.from({ length: 100 }, (_, i) => [`m${i}`, i] as const));
    for (const c of cases) {
      const v = base.with(c.changes as unknown as [string, number | null][]);
      assert.equal(v.size, c.size, c.why);
      assert.equal(v.layered, c.layered, c.why);
      assert.equal(v.get(c.get[0]), c.get[1], c.why);
      assert.ok(v.sharesBaseWith(base), `${c.why}: shares the base`);
      assert.equal(base.size, 100, `${c.why}: the base is unchanged`);
    }
    assert.equal(base.with([["absent", null]]), base, "no change is the same version");
  });

  test("a change costs a copy of the layer, not of the map; the layer stays under about √size", () => {
    let map = LayeredMap.from(Array.from({ length: 10_000 }, (_, i) => [`m${i}`, i] as const));
    let maxLayer = 0;
    for (let i = 0; i < 2_000; i++) {
      map = map.with([[`m${(i * 7919) % 12_000}`, -i]]);
      maxLayer = Math.max(maxLayer, map.layered);
    }
    assert.ok(maxLayer <= Math.ceil(Math.sqrt(map.size)) + 1, `layer grew to ${maxLayer}`);
    assert.equal(map.get("m0"), 0);
    assert.equal(map.size, 10_000 + [...map.keys()].filter((k) => Number(k.slice(1)) >= 10_000).length);
  });

  test("siblings built on one version share one fold of it (concurrent knocks all extend one state)", () => {
    let parent = LayeredMap.from(Array.from({ length: 400 }, (_, i) => [`m${i}`, i] as const));
    // A layer just under the fold threshold (√400 = 20 entries).
    for (let i = 0; i < 20; i++) parent = parent.with([[`new${i}`, i]]);
    assert.equal(parent.layered, 20);
    const siblings = Array.from({ length: 50 }, (_, i) => parent.with([[`sib${i}`, i]]));
    for (const s of siblings) {
      assert.ok(s.sharesBaseWith(siblings[0]!), "one folded base for all siblings");
      assert.ok(!s.sharesBaseWith(parent), "the parent keeps its own base");
      assert.equal(s.size, 421);
      assert.equal(s.get("new19"), 19);
      assert.equal(s.get("m0"), 0);
    }
    assert.equal(parent.size, 420, "the parent is unchanged");
    assert.equal(parent.get("sib0"), undefined);
    // Read like the Map they stand for, in Map order.
    const model = new Map<string, number>([...parent]);
    model.set("sib7", 7);
    assertSameAsMap(siblings[7]!, model, ["m3", "new3", "sib7", "sib8"]);
  });

  test("setting a value it already has returns the same version", () => {
    const pdu = { type: "x" };
    const map = LayeredMap.from([["a", pdu]]);
    assert.equal(map.with([["a", pdu]]), map);
    assert.equal(map.with([]), map);
    assert.notEqual(map.with([["a", { type: "x" }]]), map);
  });

  test("empty", () => {
    const e = LayeredMap.empty<string>();
    assert.equal(e.size, 0);
    assert.deepEqual([...e], []);
    assert.equal(e.get("x"), undefined);
    assert.equal(e.with([["x", "1"]]).get("x"), "1");
    assert.equal(e.size, 0);
  });
});

describe("state cache: joined servers per version", () => {
  const servers = ["a.example", "b.example", "c.example:8448", "[::1]:80"];
  const member = (user: number, server: number, membership: string): StateEntry => {
    const userId = `@u${user}:${servers[server]}`;
    const pdu = { type: "m.room.member", state_key: userId, sender: userId, content: { membership } } as unknown as Pdu;
    return { field: JSON.stringify(["m.room.member", userId]), eventId: `$${Math.random()}`, pdu };
  };
  const change = fc
    .tuple(fc.integer({ min: 0, max: 6 }), fc.integer({ min: 0, max: 3 }), fc.constantFrom("join", "leave", "knock", "ban", "invite"))
    .map(([u, s, m]) => member(u, s, m));
  const other = fc.constantFrom<StateEntry>(
    { field: '["m.room.topic",""]', eventId: "$t", pdu: { type: "m.room.topic", state_key: "", content: { topic: "t" } } as unknown as Pdu },
    // A member event whose state_key is not a user ID never counts.
    { field: '["m.room.member","nobody"]', eventId: "$n", pdu: { type: "m.room.member", state_key: "nobody", content: { membership: "join" } } as unknown as Pdu },
  );

  test("applying deltas gives the same servers as recounting the state, and old versions keep theirs", () => {
    fc.assert(
      fc.property(fc.array(change, { maxLength: 10 }), fc.array(fc.array(fc.oneof(change, other), { maxLength: 6 }), { maxLength: 30 }), (initial, deltas) => {
        const dedup = new Map(initial.map((e) => [e.field, e]));
        let entry: CachedState = cachedStateOf(1, "$1", [...dedup.values()]);
        const seen: { entry: CachedState; servers: Set<string> }[] = [{ entry, servers: joinedServers(entry.state) }];
        deltas.forEach((delta, i) => {
          entry = applyStateEntries(entry, i + 2, `$${i + 2}`, delta);
          seen.push({ entry, servers: joinedServers(entry.state) });
        });
        for (const s of seen) {
          assert.deepEqual(new Set(s.entry.joinedServers), s.servers);
          assert.deepEqual(new Set(s.entry.joinedCounts.keys()), s.servers);
          for (const [server, n] of s.entry.joinedCounts) {
            assert.equal(n, [...s.entry.state.values()].filter((ev) => joinedServerOf(ev) === server).length);
          }
        }
      }),
      { numRuns: RUNS },
    );
  });

  test("a delta without join changes shares the previous version's server set", () => {
    const start = cachedStateOf(1, "$1", [member(1, 0, "join"), member(2, 1, "join")]);
    const knocked = applyStateEntries(start, 2, "$2", [member(3, 2, "knock")]);
    assert.equal(knocked.joinedServers, start.joinedServers);
    assert.equal(knocked.joinedCounts, start.joinedCounts);
    const joined = applyStateEntries(knocked, 3, "$3", [member(3, 2, "join")]);
    assert.deepEqual([...joined.joinedServers].sort(), ["a.example", "b.example", "c.example:8448"]);
    assert.deepEqual([...knocked.joinedServers].sort(), ["a.example", "b.example"]);
    const left = applyStateEntries(joined, 4, "$4", [member(1, 0, "leave")]);
    assert.deepEqual([...left.joinedServers].sort(), ["b.example", "c.example:8448"]);
    assert.equal(left.stream, 4);
    assert.equal(left.lastEventId, "$4");
  });
});
