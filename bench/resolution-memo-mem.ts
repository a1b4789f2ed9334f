// Live heap of the resolution memo (PlannerCaches.resolved: was an Lru(256); now bounded by bytes) when every
// answer is a fork whose branches REPLACE a key of the fork point's state (as with membership
// churn: a member event superseding another), after a full GC. Printed, never asserted.
//   node --expose-gc --import tsx bench/resolution-memo-mem.ts [members=10000] [root=this checkout]
// `root`: the checkout whose src/ is measured (compare a checkout before the change with this one).
// The room: the vector topic-basic/v10 (two moderators set m.room.topic on two branches, so the
// base group holds one topic and a branch replaces it), padded with `members` more keys every
// set shares (their events are never checked: unconflicted state). 256 forks on one base group
// (the group cache holds it), each resolved once: the memo ends with 256 answers.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join, resolve } from "node:path";

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with node --expose-gc");
const members = Number(process.argv[2] ?? 10_000);
const here = fileURLToPath(new URL("..", import.meta.url));
const root = resolve(process.argv[3] ?? here);
const vectorsDir = process.env.GATEHOUSE_VECTORS_DIR ?? join(here, "../shared/spec/vectors");

const { RoomStateService, PlannerCaches } = (await import(join(root, "src/rooms/room-state.ts"))) as typeof import("../src/rooms/room-state.js");
const { LayeredMap } = (await import(join(root, "src/store/layered-map.ts"))) as typeof import("../src/store/layered-map.js");
const { getRoomVersion } = (await import(join(root, "src/protocol/room-versions.ts"))) as typeof import("../src/protocol/room-versions.js");
const { stateMapKey } = (await import(join(root, "src/protocol/state-res/index.ts"))) as typeof import("../src/protocol/state-res/index.js");

interface VectorCase {
  name: string;
  room_version: string;
  room_id: string;
  events: { event_id: string; pdu: Record<string, unknown> }[];
  state_sets: Record<string, string>[];
}
const c = (JSON.parse(readFileSync(join(vectorsDir, "state-res.json"), "utf8")) as { cases: VectorCase[] }).cases.find((x) => x.name === "topic-basic/v10")!;
const rv = getRoomVersion(c.room_version)!;
const events = new Map(c.events.map((e) => [e.event_id, e.pdu] as const));
const createId = c.events.find((e) => e.pdu.type === "m.room.create")!.event_id;
const toKey = (k: string) => stateMapKey(k.slice(0, k.indexOf("|")), k.slice(k.indexOf("|") + 1));
const sets = c.state_sets.map((s) => new Map(Object.entries(s).map(([k, v]) => [toKey(k), v] as const)));
for (const s of sets) for (let i = 0; i < members; i++) s.set(stateMapKey("m.room.member", `@u${i}:example.org`), createId);
// Base: set 0's value of every key set 0 has; each set's delta replaces or removes what differs.
const baseMap = new Map(sets[0]!);
for (const s of sets.slice(1)) for (const [k, v] of s) if (!baseMap.has(k)) baseMap.set(k, v);
const deltas = sets.map((s) => {
  const d: Record<string, string | null> = {};
  for (const [k, v] of baseMap) if (s.get(k) !== v) d[k] = s.get(k) ?? null;
  return d;
});
const replaced = deltas.reduce((n, d) => n + Object.values(d).filter((v) => v !== null).length, 0);
const base = LayeredMap.from(baseMap);

const meta = new Map<string, unknown>([["1", { depth: 0, up: null, base: "1" }]]);
const states = new Map<string, ReadonlyMap<string, string>>([["1", base]]);
const pick = (ids: readonly string[]) => new Map(ids.filter((id) => events.has(id)).map((id) => [id, events.get(id)!] as const));
const source = {
  eventStatuses: async () => new Map(),
  loadStateGroup: async (_r: string, g: string) => states.get(g)!,
  getEvents: async (_r: string, ids: readonly string[]) => pick(ids),
  getStateEvents: async (_r: string, _v: unknown, ids: readonly string[]) => pick(ids),
  stateGroupMeta: async (_r: string, g: string) => meta.get(g)!,
};
const caches = new PlannerCaches();
const service = new RoomStateService(source as never, caches);

// The 256 forks' state groups first (not counted: the store holds them either way).
let next = 2;
const forks = Array.from({ length: 256 }, () =>
  deltas.map((d) => {
    const g = String(next++);
    meta.set(g, { depth: 1, up: "1", delta: d, base: "1" });
    const ids = base.with(Object.entries(d));
    states.set(g, ids);
    return { ids, group: g };
  }),
);
gc();
gc();
const before = process.memoryUsage().heapUsed;
const t0 = process.cpuUsage();
let layered = 0;
for (const f of forks) if ((await service.resolve(c.room_id, rv, f)) instanceof LayeredMap) layered++;
const cpu = process.cpuUsage(t0);
gc();
gc();
const after = process.memoryUsage().heapUsed;
console.log(
  `${root}: ${members} members, 256 forks (${replaced} keys replaced on the branches): memo live heap +${((after - before) / 1e6).toFixed(2)} MB ` +
    `(${((after - before) / 256 / members).toFixed(1)} B per member per answer), ${layered} of 256 answers layered, ` +
    `CPU ${((cpu.user + cpu.system) / 256 / 1000).toFixed(2)} ms per resolution; memo ${caches.resolved.size} entries` +
    ("bytes" in caches.resolved ? `, estimated ${((caches.resolved as { bytes: number }).bytes / 1e6).toFixed(2)} MB` : ""),
);
