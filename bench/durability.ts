/**
 * `node --import tsx bench/durability.ts`: what `appendfsync always` costs against `everysec`
 * (README, "Durability"). For each policy: redis-server with the append-only file on a real disk
 * (the data folder under $DURABILITY_DIR, default /var/tmp; tmpfs would make fsync free),
 * `gatehouse serve` on it (both on the server core), a room with 5 remote servers (sink farm) so
 * every event is also queued 5 times; then admin sends (each acknowledged only after its Redis
 * writes) from 1 and 8 concurrent clients for DURABILITY_SECONDS (default 10) each: events/s and
 * latency. Printed, not asserted.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { GatehouseProc, pinSelf, RedisProc, sleep } from "./lib/procs.js";
import { SinkFarm } from "./lib/sink-farm-client.js";
import { enc } from "./lib/fed.js";
import { createRoom, joinSinks } from "./lib/scenario.js";

const SECONDS = Number(process.env.DURABILITY_SECONDS ?? "10");
const BASE = process.env.DURABILITY_DIR ?? "/var/tmp";
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] ?? NaN;

pinSelf();
console.log(`# durability: appendfsync everysec vs always, admin sends for ${SECONDS} s per row, data under ${BASE}, ${new Date().toISOString()}`);
const rows: string[] = [];
for (const policy of ["everysec", "always"] as const) {
  const dir = mkdtempSync(join(BASE, `gatehouse-durability-${policy}-`));
  const redis = await RedisProc.start({ aof: true, appendfsync: policy, dir: join(dir, "redis") });
  mkdirSync(join(dir, "gh"));
  const gh = await GatehouseProc.start({ redisUrl: redis.url, dataDir: join(dir, "gh"), logLevel: "warn" });
  const farm = await SinkFarm.start(5);
  try {
    await farm.verifyAs({ serverName: gh.serverName, keyId: gh.keyId, publicKeyBase64: Buffer.from(gh.publicKey).toString("base64").replace(/=+$/, "") });
    const roomId = await createRoom(gh, { preset: "public_chat", name: "durability" });
    await joinSinks(gh, farm, roomId, [0, 1, 2, 3, 4]);
    for (const clients of [1, 8]) {
      // Warm-up, then the timed row.
      for (let i = 0; i < 50; i++) await gh.admin("POST", `/rooms/${enc(roomId)}/send/m.room.message`, { content: { msgtype: "m.text", body: `warm ${i}` } });
      const lat: number[] = [];
      let failed = 0;
      const end = Date.now() + SECONDS * 1000;
      await Promise.all(
        Array.from({ length: clients }, async (_, c) => {
          let n = 0;
          while (Date.now() < end) {
            const t0 = process.hrtime.bigint();
            const r = await gh.admin("POST", `/rooms/${enc(roomId)}/send/m.room.message`, { content: { msgtype: "m.text", body: `c${c} ${n++}` } });
            if (r.status === 200) lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
            else failed++;
          }
        }),
      );
      const row = `| ${policy} | ${clients} | ${(lat.length / SECONDS).toFixed(0)} | ${pct(lat, 50).toFixed(2)} ms | ${pct(lat, 99).toFixed(2)} ms | ${failed} |`;
      console.log(row);
      rows.push(row);
      await sleep(1000);
    }
  } finally {
    await farm.stop();
    await gh.stop();
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
console.log("\n| appendfsync | clients | events/s | p50 | p99 | failed |\n|---|---|---|---|---|---|");
for (const r of rows) console.log(r);
