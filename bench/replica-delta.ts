// What one replica pays to follow another's writes to a room (issue #16, two gateways on one
// room): replica B's snapshot after each run of 50 messages replica A wrote, with the room's
// state-event record (state-cache.ts: only the delta's state events are read) and without it
// (the record made not to cover the delta, as in a room written by a version before it: every
// event of A's run read whole, as every snapshot did before the record), alternating run by run.
// Prints node CPU (this process, µs) and Redis bytes out per followed event. Printed, never
// asserted: `node --import tsx bench/replica-delta.ts` (REPLICA_BENCH_RUNS, default 200).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectRedis } from "../src/server.js";
import { startRedis } from "../src/embedded-redis.js";
import { RedisKeys } from "../src/store/redis-keys.js";
import { RoomStore } from "../src/store/room-store.js";
import { buildEvent } from "../src/protocol/event-signing.js";
import { getRoomVersion } from "../src/protocol/room-versions.js";
import { randomBytes } from "node:crypto";
import { makeSigningKey } from "../src/protocol/signing-key.js";
import type { Pdu } from "../src/protocol/pdu.js";

const RUNS = Number(process.env.REPLICA_BENCH_RUNS ?? 200);
const PER_RUN = 50;
const MEMBERS = 200;
const V = getRoomVersion("11")!;
const SERVER = "bench.example";
const CREATOR = `@creator:${SERVER}`;
const key = makeSigningKey("ed25519:bench", randomBytes(32));
const roomId = `!replicadelta:${SERVER}`;
let ts = 1_700_000_000_000;
let depth = 0;
let last: string[] = [];
function ev(type: string, o: { stateKey?: string; content: Record<string, unknown>; sender?: string }): { eventId: string; pdu: Pdu } {
  const built = buildEvent(
    { type, room_id: roomId, sender: o.sender ?? CREATOR, ...(o.stateKey !== undefined ? { state_key: o.stateKey } : {}), content: o.content, prev_events: last, auth_events: [], depth: ++depth, origin_server_ts: ++ts },
    { roomVersion: V, serverName: SERVER, key, clock: () => ts },
  );
  last = [built.eventId];
  return { eventId: built.eventId, pdu: built.pdu };
}

const dir = mkdtempSync(join(tmpdir(), "replica-delta-"));
const server = await startRedis({ dir });
const redis = connectRedis(server.url);
const keys = new RedisKeys("bench");
const a = new RoomStore(redis, keys);
const b = new RoomStore(redis, keys);
const outBytes = async () => Number(/total_net_output_bytes:(\d+)/.exec(await redis.info("stats"))![1]);
try {
  const create = ev("m.room.create", { stateKey: "", content: { room_version: "11" } });
  await a.persistEvent({ roomId, ...create, expectedStream: null, updatesState: true, createRoom: { version: "11", creator: CREATOR, createdTs: ts } });
  // A room with some state: MEMBERS joins (remote members, a realistic state size).
  const joins = Array.from({ length: MEMBERS }, (_, i) => ev("m.room.member", { stateKey: `@m${i}:${SERVER}`, sender: `@m${i}:${SERVER}`, content: { membership: "join" } }));
  await a.persistEvents(roomId, joins.map((e) => ({ ...e, updatesState: true })), { expectedStream: 1 });
  await b.currentSnapshot(roomId);
  const runs = Array.from({ length: RUNS }, (_, r) => Array.from({ length: PER_RUN }, (_, i) => ev("m.room.message", { sender: `@m${i}:${SERVER}`, content: { msgtype: "m.text", body: `run ${r} message ${i} ${"x".repeat(200)}` } })));
  const totals = { record: { cpu: 0, out: 0, n: 0 }, whole: { cpu: 0, out: 0, n: 0 } };
  let stream = 1 + MEMBERS;
  for (const [r, run] of runs.entries()) {
    const mode = r % 2 === 0 ? "record" : "whole";
    const res = await a.persistEvents(roomId, run.map((e) => ({ ...e, updatesState: false })), { expectedStream: stream });
    if (res === "conflict") throw new Error("conflict");
    stream += PER_RUN;
    // Without: the record does not reach the stream (the next write of A starts it again).
    if (mode === "whole") await redis.hdel(keys.room(roomId), "state_events_to");
    const out0 = await outBytes();
    const cpu0 = process.cpuUsage();
    const snap = await b.currentSnapshot(roomId);
    const cpu = process.cpuUsage(cpu0);
    const out = (await outBytes()) - out0;
    if (snap.current.stateIds.size !== MEMBERS + 1) throw new Error("replica B lost state");
    if (r < 10) continue; // warm-up (JIT, caches)
    totals[mode].cpu += cpu.user + cpu.system;
    totals[mode].out += out;
    totals[mode].n += PER_RUN;
  }
  console.log(`# replica B following replica A's runs of ${PER_RUN} messages (${RUNS} runs, alternating; ${MEMBERS + 1} state events; ${new Date().toISOString()})`);
  for (const [mode, t] of Object.entries(totals)) {
    console.log(`${mode === "record" ? "with the state-event record" : "events read whole (no record)"}: node ${(t.cpu / t.n).toFixed(1)} µs and Redis ${(t.out / t.n).toFixed(0)} B out per followed event`);
  }
} finally {
  await redis.quit();
  server.child.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
}
