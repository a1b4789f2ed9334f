// Node CPU of two per-PDU parts of the inbound row, measured in this process where the row's
// run-to-run spread (±7 % on the loaded 2-core machine) hides changes of a few µs per PDU
// (issue #16; bench/README.md "Results — 2026-12-05 late morning, inbound /send"):
//   * EventVerifier.verify on v12 m.room.message PDUs shaped like the row's, with the ed25519
//     check stubbed out (its cost is the crypto row's): format, size limit, content hash,
//     redaction, signed bytes, event ID. A JSON round trip per call gives each a fresh object,
//     as a request body does; it is inside the figure.
//   * TransactionBuilder.encodedEvents on 50 new events: read back from Redis (MGET, parse,
//     canonical JSON) against taken from the room store's event cache (canonical JSON only), as
//     an outbound transaction of an inbound run this process wrote. A private redis-server.
// INBOUND_PARTS_BASE=<checkout> also measures that checkout's EventVerifier, alternating with
// this one's (before/after). Printed, never asserted:
//   taskset -c 1 node --import tsx bench/inbound-parts.ts
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { connectRedis } from "../src/server.js";
import { startRedis } from "../src/embedded-redis.js";
import { RedisKeys } from "../src/store/redis-keys.js";
import { RoomStore } from "../src/store/room-store.js";
import { TransactionBuilder } from "../src/sender/transaction-builder.js";
import { FederationTransport } from "../src/sender/transport.js";
import { createLogger } from "../src/logger.js";
import { signEvent } from "../src/protocol/event-signing.js";
import { makeSigningKey } from "../src/protocol/signing-key.js";
import { getRoomVersion } from "../src/protocol/room-versions.js";
import type { Pdu } from "../src/protocol/pdu.js";
import type { RemoteKeys } from "../src/keys/remote-keys.js";

const V = getRoomVersion("12")!;
const ORIGIN = "origin1.bench.test";
const roomId = "!" + randomBytes(32).toString("base64url").slice(0, 43);
const key = makeSigningKey("ed25519:bench", randomBytes(32));
const id43 = () => "$" + randomBytes(32).toString("base64url").slice(0, 43);
const authEvents = [id43(), id43(), id43()];
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const cpuMicros = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

let depth = 10;
function message(n: number): Pdu {
  return signEvent(
    { type: "m.room.message", room_id: roomId, sender: `@bench:${ORIGIN}`, content: { msgtype: "m.text", body: `inbound 1/${n}` }, prev_events: [id43()], auth_events: authEvents, depth: ++depth, origin_server_ts: 1_764_900_000_000 + n },
    ORIGIN,
    key,
    V,
  ) as Pdu;
}

// --- EventVerifier.verify ----------------------------------------------------------------------
const pdus = Array.from({ length: 2000 }, (_, n) => message(n));
const stubKeys = { getVerifier: async () => ({ record: {}, verifier: { publicKey: new Uint8Array(32), verify: () => true } }) } as unknown as RemoteKeys;
const roots: [string, string][] = [["this checkout", new URL("..", import.meta.url).pathname]];
if (process.env.INBOUND_PARTS_BASE) roots.push(["INBOUND_PARTS_BASE", process.env.INBOUND_PARTS_BASE]);
const verifiers = new Map<string, { verify(raw: unknown, v: typeof V): Promise<{ ok: boolean }> }>();
for (const [name, root] of roots) {
  const mod = (await import(join(root, "src/rooms/event-verifier.ts"))) as typeof import("../src/rooms/event-verifier.js");
  verifiers.set(name, new mod.EventVerifier(stubKeys));
}
async function verifyRound(name: string): Promise<number> {
  const v = verifiers.get(name)!;
  const t = cpuMicros();
  for (let r = 0; r < 5; r++) for (const p of pdus) if (!(await v.verify(JSON.parse(JSON.stringify(p)), V)).ok) throw new Error("verify failed");
  return (cpuMicros() - t) / (5 * pdus.length);
}
const verifyFigures = new Map<string, number[]>([...verifiers.keys()].map((k) => [k, []]));
for (let round = 0; round < 10; round++) {
  const order = round % 2 === 0 ? [...verifiers.keys()] : [...verifiers.keys()].reverse();
  for (const name of order) {
    const x = await verifyRound(name);
    if (round >= 2) verifyFigures.get(name)!.push(x); // two warm-up rounds
  }
}

// --- TransactionBuilder: read back vs event cache ------------------------------------------------
const dir = mkdtempSync(join(tmpdir(), "inbound-parts-"));
const server = await startRedis({ dir });
const redis = connectRedis(server.url);
try {
  const keys = new RedisKeys("bench");
  const store = new RoomStore(redis, keys);
  const transport = new FederationTransport({ request: () => Promise.reject(new Error("not used")) }, "bench.test", () => true);
  let n = 0;
  const builderRound = async (fromCache: boolean): Promise<number> => {
    let cpu = 0;
    for (let r = 0; r < 40; r++) {
      const events = Array.from({ length: 50 }, () => ({ eventId: id43(), pdu: message(++n) }));
      await redis.mset(...events.flatMap((e) => [keys.event(roomId, e.eventId), JSON.stringify(e.pdu)]));
      // In the event cache, as after this process persisted them (RoomStore.persistEvents).
      if (fromCache) await store.getEvents(roomId, events.map((e) => e.eventId));
      const b = new TransactionBuilder({ store: fromCache ? store : { getEventJsons: (room, ids) => store.getEventJsons(room, ids) }, logger: createLogger("silent") });
      const t = cpuMicros();
      await b.encodedEvents("d.bench.test", transport, events.map((e) => `${roomId} ${e.eventId}`));
      cpu += cpuMicros() - t;
    }
    return cpu / (40 * 50);
  };
  const read: number[] = [];
  const cached: number[] = [];
  for (let round = 0; round < 10; round++) {
    const x = await builderRound(false);
    const y = await builderRound(true);
    if (round >= 2) read.push(x), cached.push(y);
  }

  console.log(`# inbound parts (${new Date().toISOString()}, node ${process.version}); node CPU per PDU, median of 8 rounds (each round's figure)`);
  for (const [name, xs] of verifyFigures) console.log(`EventVerifier.verify, ed25519 stubbed, ${name}: ${median(xs).toFixed(2)} µs (${xs.map((x) => x.toFixed(1)).join(" ")})`);
  console.log(`TransactionBuilder, read back (MGET + parse + encode): ${median(read).toFixed(2)} µs (${read.map((x) => x.toFixed(1)).join(" ")})`);
  console.log(`TransactionBuilder, from the event cache (encode): ${median(cached).toFixed(2)} µs (${cached.map((x) => x.toFixed(1)).join(" ")})`);
} finally {
  await redis.quit();
  server.child.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
}
