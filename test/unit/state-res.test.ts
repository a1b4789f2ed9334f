/**
 * State resolution v2 (room version 10) and v2.1 (room version 12) against every case of the
 * shared vectors (../shared/spec/vectors/state-res.json): 22 scenarios × 2 room versions, real
 * PDUs, expected states computed by Synapse 1.160's synapse.state.v2. Each case is one test;
 * on a mismatch the failure shows Synapse's trace next to ours, by label.
 */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { loadVectors } from "../support/vectors.js";
import { forkOf } from "../support/state-fork.js";
import { getRoomVersion } from "../../src/protocol/room-versions.js";
import { authEdges, resolveState, separate, stateMapKey, StateResolutionError, type StateFork, type StateResEvent, type StateResolutionTrace } from "../../src/protocol/state-res/index.js";

interface VectorCase {
  name: string;
  scenario: string;
  kind: string;
  room_version: string;
  state_res: string;
  why: string;
  room_id: string;
  events: { label: string; event_id: string; pdu: StateResEvent }[];
  state_sets: Record<string, string>[];
  expected: Record<string, string>;
  expected_labels: Record<string, string>;
  auth_chain_definition_sensitive: boolean;
  expected_if_auth_chains_exclude_state_events?: Record<string, string>;
  trace: Record<string, unknown>;
}

const vectors = loadVectors<{ cases: VectorCase[] }>("state-res");

/** "type|state_key" (split at the first "|") → our state map key. */
function toKey(k: string): string {
  const i = k.indexOf("|");
  return stateMapKey(k.slice(0, i), k.slice(i + 1));
}

function fromKey(k: string): string {
  const [t, s] = JSON.parse(k) as [string, string];
  return `${t}|${s}`;
}

/** An injected auth-chain function over the case's events (the spec's definition: ancestors only). */
function authChainOver(events: ReadonlyMap<string, StateResEvent>, roomVersionId: string) {
  const rv = getRoomVersion(roomVersionId)!;
  return (ids: readonly string[]): Set<string> => {
    const out = new Set<string>();
    const todo = [...ids];
    while (todo.length > 0) {
      const ev = events.get(todo.pop()!);
      if (!ev) continue;
      for (const a of authEdges(ev, rv)) {
        if (!out.has(a)) {
          out.add(a);
          todo.push(a);
        }
      }
    }
    return out;
  };
}

async function resolveCase(
  c: VectorCase,
  opts: {
    injectAuthChain?: boolean;
    isRejected?: (id: string) => boolean;
    fork?: { moveToDeltas: number; breakBase?: boolean };
    authVerdicts?: Map<string, boolean>;
    extend?: (base: ReadonlyMap<string, string>, changes: ReadonlyMap<string, string>) => ReadonlyMap<string, string>;
    onFork?: (fork: StateFork) => void;
  } = {},
): Promise<{ state: Record<string, string>; trace?: StateResolutionTrace }> {
  const rv = getRoomVersion(c.room_version);
  assert.ok(rv, `room version ${c.room_version}`);
  const events = new Map(c.events.map((e) => [e.event_id, e.pdu] as const));
  let trace: StateResolutionTrace | undefined;
  const base = {
    roomVersion: rv,
    roomId: c.room_id,
    stateSets: c.state_sets.map((s) => new Map(Object.entries(s).map(([k, v]) => [toKey(k), v] as const))),
    fetchEvents: (ids: readonly string[]) => new Map(ids.filter((id) => events.has(id)).map((id) => [id, events.get(id)!] as const)),
  };
  const fork = opts.fork ? await forkOf(base, opts.fork) : undefined;
  if (fork) opts.onFork?.(fork);
  const resolved = await resolveState(
    {
      ...base,
      ...(fork ? { fork } : {}),
      ...(opts.extend ? { extend: opts.extend } : {}),
      ...(opts.authVerdicts ? { authVerdicts: opts.authVerdicts } : {}),
      ...(opts.injectAuthChain ? { authChain: authChainOver(events, c.room_version) } : {}),
      ...(opts.isRejected ? { isRejected: opts.isRejected } : {}),
    },
    (t) => (trace = t),
  );
  return { state: Object.fromEntries([...resolved].map(([k, v]) => [fromKey(k), v])), trace };
}

describe("state resolution vectors (Synapse 1.160 as the oracle)", () => {
  assert.equal(vectors.cases.length, 44, "22 scenarios × room versions 10 and 12");
  for (const c of vectors.cases) {
    test(`${c.name} (${c.state_res}, ${c.kind}): ${c.why.slice(0, 100)}…`, async () => {
      assert.equal(c.state_res, getRoomVersion(c.room_version)!.stateResolution, "the room version's algorithm");
      const { state, trace } = await resolveCase(c);
      const label = new Map(c.events.map((e) => [e.event_id, e.label] as const));
      const labels = (ids: Iterable<string>) => [...ids].map((id) => label.get(id) ?? id);
      const ours = trace && {
        full_conflicted_set: labels(trace.fullConflictedSet).sort(),
        power_sorted: trace.powerSorted.map((s) => ({ label: label.get(s.eventId), accepted: s.accepted })),
        mainline: labels(trace.mainline),
        mainline_sorted: trace.mainlineSorted.map((s) => ({ label: label.get(s.eventId), accepted: s.accepted })),
      };
      // Synapse builds no mainline when no event is left to sort by it; the generator's trace does.
      const synapseMainline = (c.trace.mainline_sorted as unknown[] | undefined)?.length ? c.trace.mainline : [];
      const synapse = {
        full_conflicted_set: c.trace.full_conflicted_set,
        power_sorted: c.trace.power_sorted,
        mainline: synapseMainline,
        mainline_sorted: c.trace.mainline_sorted,
      };
      assert.deepEqual(
        Object.fromEntries(Object.entries(state).map(([k, v]) => [k, label.get(v) ?? v])),
        c.expected_labels,
        `resolved state by label\nours:    ${JSON.stringify(ours)}\nSynapse: ${JSON.stringify(synapse)}`,
      );
      assert.deepEqual(state, c.expected, "resolved state by event ID");
      // The intermediate steps match Synapse's too (when there was a conflict to resolve).
      if (ours && c.trace.power_sorted) assert.deepEqual(ours, synapse, "intermediate results");
    });
  }
});

describe("state resolution: the injected parts", () => {
  const byName = (name: string) => vectors.cases.find((c) => c.name === name)!;

  test("an injected auth-chain function gives the same answers as walking auth_events (every vector)", async () => {
    for (const c of vectors.cases) {
      assert.deepEqual((await resolveCase(c, { injectAuthChain: true })).state, c.expected, c.name);
    }
  });

  test("a memo of auth verdicts shared by every resolution gives the same states and steps (every vector, twice)", async () => {
    const memo = new Map<string, boolean>();
    for (const pass of [1, 2]) {
      for (const c of vectors.cases) {
        const whole = await resolveCase(c);
        const memoised = await resolveCase(c, { authVerdicts: memo, fork: { moveToDeltas: 0.5 } });
        assert.deepEqual(memoised.state, c.expected, `${c.name} (pass ${pass})`);
        assert.deepEqual(memoised.trace, whole.trace, `${c.name} (pass ${pass}): intermediate results`);
      }
    }
    assert.ok(memo.size > 0, "the memo was used");
  });

  const forkRows = [
    { why: "base = everything the sets share", fork: { moveToDeltas: 0 } },
    { why: "half of what they share added alike on every branch", fork: { moveToDeltas: 0.5 } },
    { why: "everything added on the branches (empty base)", fork: { moveToDeltas: 1 } },
    { why: "a base holding a key not every set keeps (falls back to whole sets)", fork: { moveToDeltas: 0.3, breakBase: true } },
  ];
  for (const row of forkRows) {
    test(`a fork (base + deltas) gives the same state and steps as whole sets, every vector: ${row.why}`, async () => {
      for (const c of vectors.cases) {
        const whole = await resolveCase(c);
        const forked = await resolveCase(c, { fork: row.fork });
        assert.deepEqual(forked.state, c.expected, c.name);
        assert.deepEqual(forked.trace, whole.trace, `${c.name}: intermediate results`);
      }
    });
  }

  test("a fork's answer built by the caller's `extend` (base + changes, nothing copied) is the same state, every vector", async () => {
    let extended = 0;
    for (const row of forkRows) {
      for (const c of vectors.cases) {
        let fork: StateFork | undefined;
        const forked = await resolveCase(c, {
          fork: row.fork,
          onFork: (f) => (fork = f),
          extend: (base, changes) => {
            extended++;
            assert.equal(base, fork!.base, `${c.name}: extend is handed the fork's own base`);
            // A fork is used only when the sets share all of the base: the answer only adds keys.
            for (const k of changes.keys()) assert.ok(!base.has(k), `${c.name}: ${k} is added, not replaced`);
            const out = new Map(base);
            for (const [k, v] of changes) out.set(k, v);
            return out;
          },
        });
        assert.deepEqual(forked.state, c.expected, `${c.name} (${row.why})`);
      }
    }
    assert.ok(extended > 0, "extend was used (every fork row but the broken base)");
  });

  const rows = [
    {
      why: "a rejected event never enters the resolved state, even when it passes against it (as Synapse; synapse#13797)",
      name: "topic-basic/v10",
      rejectLabel: (c: VectorCase) => labelOf(c, c.expected["m.room.topic|"]!),
    },
    {
      why: "a rejected power-levels event is neither admitted nor used as an auth event",
      name: "ban-vs-demotion/v12",
      rejectLabel: () => "PB",
    },
  ];
  for (const row of rows) {
    test(row.why, async () => {
      const c = byName(row.name);
      const label = row.rejectLabel(c);
      const id = c.events.find((e) => e.label === label)!.event_id;
      const { state } = await resolveCase(c, { isRejected: (x) => x === id });
      assert.ok(!Object.values(state).includes(id), `${label} must not be in the resolved state`);
    });
  }

  test("a key missing from one state set is conflicted (Synapse's _seperate)", () => {
    const k = stateMapKey("m.room.topic", "");
    const { unconflicted, conflicted } = separate([new Map([[k, "$a"]]), new Map()]);
    assert.equal(unconflicted.size, 0);
    assert.deepEqual([...conflicted.get(k)!], ["$a"]);
  });

  test("identical state sets are returned without fetching any event", async () => {
    const s = new Map([[stateMapKey("m.room.create", ""), "$c"]]);
    const resolved = await resolveState({
      roomVersion: getRoomVersion("10")!,
      roomId: "!r:example.org",
      stateSets: [s, new Map(s)],
      fetchEvents: () => assert.fail("no event is needed"),
    });
    assert.deepEqual([...resolved], [...s]);
  });

  test("an event from another room is an error, not a silent merge", async () => {
    const c = byName("topic-basic/v10");
    const events = new Map(c.events.map((e) => [e.event_id, { ...e.pdu, room_id: "!other:example.com" }] as const));
    await assert.rejects(
      resolveState({
        roomVersion: getRoomVersion("10")!,
        roomId: c.room_id,
        stateSets: c.state_sets.map((s) => new Map(Object.entries(s).map(([k, v]) => [toKey(k), v] as const))),
        fetchEvents: (ids) => new Map(ids.filter((id) => events.has(id)).map((id) => [id, events.get(id)!] as const)),
      }),
      /got event .* of room !other:example.com/,
    );
  });

  test("room version 1 (state resolution v1) is refused, not resolved with v2", async () => {
    await assert.rejects(
      resolveState({ roomVersion: getRoomVersion("1")!, roomId: "!r:example.org", stateSets: [], fetchEvents: () => new Map() }),
      StateResolutionError,
    );
  });
});

function labelOf(c: VectorCase, id: string): string {
  return c.events.find((e) => e.event_id === id)!.label;
}
