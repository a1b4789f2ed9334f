// CPU of the state planner's diff of the current state to a fork's answer (RoomStateService.diffTo),
// in a forked room as the 10-client knock row leaves it: the current state's group is the last of
// 100 deltas on the previous current state (the planner's smaller delta each time), holding the
// answer of the fork before it (the group cache keeps it), and the next fork meets at the same
// event group. Printed, never asserted.
//   node --import tsx bench/state-diff.ts [members=1000,3000,10000] [root=this checkout] [calls=2000]
// `root`: the checkout whose src/ is measured (main's diffTo is private; called the same way).
// The room: the vector topic-basic/v10 padded with `members` keys every state shares; each fork's
// two branches add the same three knocks (unconflicted) and replace the topic (a conflict).
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join, resolve } from "node:path";

const here = fileURLToPath(new URL("..", import.meta.url));
const sizes = (process.argv[2] ?? "1000,3000,10000").split(",").map(Number);
const root = resolve(process.argv[3] ?? here);
const calls = Number(process.argv[4] ?? 2_000);
const vectorsDir = process.env.GATEHOUSE_VECTORS_DIR ?? join(here, "../shared/spec/vectors");

const { RoomStateService, PlannerCaches } = (await import(join(root, "src/rooms/room-state.ts"))) as typeof import("../src/rooms/room-state.js");
const { LayeredMap } = (await import(join(root, "src/store/layered-map.ts"))) as typeof import("../src/store/layered-map.js");
const { getRoomVersion } = (await import(join(root, "src/protocol/room-versions.ts"))) as typeof import("../src/protocol/room-versions.js");
const { stateMapKey } = (await import(join(root, "src/protocol/state-res/index.ts"))) as typeof import("../src/protocol/state-res/index.js");
type StateGroupMeta = import("../src/store/room-store.js").StateGroupMeta;

interface VectorCase {
  name: string;
  room_version: string;
  room_id: string;
  events: { label: string; event_id: string; pdu: Record<string, unknown> }[];
  state_sets: Record<string, string>[];
}
const c = (JSON.parse(readFileSync(join(vectorsDir, "state-res.json"), "utf8")) as { cases: VectorCase[] }).cases.find((x) => x.name === "topic-basic/v10")!;
const rv = getRoomVersion(c.room_version)!;
const events = new Map(c.events.map((e) => [e.event_id, e.pdu] as const));
const idOf = (label: string) => c.events.find((e) => e.label === label)!.event_id;
const CREATE = idOf("CREATE");
const TOPIC = stateMapKey("m.room.topic", "");

for (const members of sizes) {
  const meta = new Map<string, StateGroupMeta>();
  const states = new Map<string, import("../src/store/layered-map.js").LayeredMap<string>>();
  const cached = new Map<string, ReadonlyMap<string, string>>();
  let next = 1;
  const root0 = new Map(Object.entries(c.state_sets[0]!).map(([k, v]) => [stateMapKey(k.slice(0, k.indexOf("|")), k.slice(k.indexOf("|") + 1)), v] as const));
  for (let i = 0; i < members; i++) root0.set(stateMapKey("m.room.member", `@m${i}:example.org`), CREATE);
  const rootId = String(next++);
  meta.set(rootId, { depth: 0, up: null, base: rootId });
  states.set(rootId, LayeredMap.from(root0));
  const child = (parent: string, delta: Map<string, string | null>) => {
    const id = String(next++);
    meta.set(id, { depth: 1, up: parent, delta: Object.fromEntries(delta) });
    states.set(id, states.get(parent)!.with(delta));
    return id;
  };
  const diffKeys = (from: ReadonlyMap<string, string>, to: ReadonlyMap<string, string>) => {
    const out = new Map<string, string | null>();
    for (const [k, v] of to) if (from.get(k) !== v) out.set(k, v);
    for (const k of from.keys()) if (!to.has(k)) out.set(k, null);
    return out;
  };
  const knock = (i: number) => stateMapKey("m.room.knock_test", `@k${i}:example.org`);
  const chain = (from: string, n: number, key: (i: number) => string) => {
    let g = from;
    for (let i = 0; i < n; i++) g = child(g, new Map([[key(i), CREATE]]));
    return g;
  };
  const fork = (at: string, tag: number) =>
    [idOf("T1"), idOf("T2")].map((topic, b) => child(chain(at, 3, (i) => knock(tag * 100 + i)), new Map([[TOPIC, b === 0 ? topic : idOf("T3")]])));
  const source = {
    allocateStateGroups: async () => [],
    eventStateGroups: async () => new Map(),
    stateGroupDepth: async () => 1,
    eventStatuses: async () => new Map(),
    loadStateGroup: async (_r: string, g: string) => states.get(g)!,
    cachedStateGroup: (_r: string, g: string) => cached.get(g),
    getEvents: async (_r: string, ids: readonly string[]) => new Map(ids.filter((id) => events.has(id)).map((id) => [id, events.get(id)!] as const)),
    getStateEvents: async (_r: string, _v: unknown, ids: readonly string[]) => new Map(ids.filter((id) => events.has(id)).map((id) => [id, events.get(id)!] as const)),
    stateGroupMeta: async (_r: string, g: string) => meta.get(g)!,
  } as unknown as import("../src/rooms/room-state.js").StateGroupSource;
  const paths = new Map<string, number>();
  const service = new RoomStateService(source, new PlannerCaches(), { onDiff: (p: string) => paths.set(p, (paths.get(p) ?? 0) + 1) } as never);
  const m = chain(chain(rootId, 30, (i) => knock(10_000 + i)), 1, (i) => knock(20_000 + i));
  const first = fork(m, 1);
  const a1 = await service.resolve(c.room_id, rv, first.map((g) => ({ ids: states.get(g)!, group: g })));
  let cur = chain(rootId, 99, (i) => stateMapKey("m.room.knock_test", `@c${i}:example.org`));
  cur = child(cur, diffKeys(states.get(cur)!, a1));
  cached.set(cur, a1);
  const second = fork(m, 2);
  const a2 = await service.resolve(c.room_id, rv, second.map((g) => ({ ids: states.get(g)!, group: g })));
  const from = { ids: states.get(cur)!, group: cur };
  const diffTo = (service as unknown as { diffTo(r: string, f: unknown, t: unknown, l: unknown[]): Promise<Map<string, string | null>> }).diffTo.bind(service);
  const expected = diffKeys(from.ids, a2);
  const got = await diffTo(c.room_id, from, a2, []);
  if (JSON.stringify([...got].sort()) !== JSON.stringify([...expected].sort())) throw new Error("diffTo differs from the whole diff");
  for (let i = 0; i < 1_000; i++) await diffTo(c.room_id, from, a2, []);
  paths.clear();
  const t0 = process.cpuUsage();
  for (let i = 0; i < calls; i++) await diffTo(c.room_id, from, a2, []);
  const t = process.cpuUsage(t0);
  const us = (t.user + t.system) / calls;
  console.log(`members ${members}: diffTo ${us.toFixed(1)} µs of CPU per call (${calls} calls; ${[...paths].map(([p, n]) => `${p} ${n}`).join(", ") || "no onDiff hook (main)"}; ${got.size} keys differ)`);
}
