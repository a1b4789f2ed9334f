// Redis commands and time of GET /backfill limit=100 with history visibility applied, in a
// `joined` room whose last 100 events mix messages with member changes (knocks of other remote
// users), read by a server that joined late. Run: `node --import tsx bench/backfill-visibility.ts`
// (starts its own redis-server; counts commands with INFO commandstats, which only this run uses).
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { startRedis, freePort } from "../src/embedded-redis.js";

const redisServer = await startRedis({ dir: mkdtempSync(join(tmpdir(), "gh-bench-bf-")), port: await freePort() });
process.env.REDIS_URL = redisServer.url;
const { TestGatehouse, ADMIN, FED, enc } = await import("../test/support/gatehouse.js");
const { RemoteServer } = await import("../test/support/remote-server.js");

const t = await TestGatehouse.start({ name: "bench-backfill" });
const probe = new Redis(redisServer.url);
/** Commands Redis ran, by name (commands run inside scripts included), and their total. */
async function commandStats(): Promise<Map<string, number>> {
  const info = await probe.info("commandstats");
  const out = new Map<string, number>();
  for (const m of info.matchAll(/cmdstat_([a-z|]+):calls=(\d+)/g)) out.set(m[1]!, Number(m[2]));
  return out;
}
function delta(a: Map<string, number>, b: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of b) if (v - (a.get(k) ?? 0) > 0 && k !== "info") out[k] = v - (a.get(k) ?? 0);
  return out;
}
try {
  const remote = await RemoteServer.start();
  const roomId = await t.createRoom({ room_version: "12", initial_state: [{ type: "m.room.history_visibility", content: { history_visibility: "joined" } }] });
  const send = async (body: string) => {
    const r = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/send/m.room.message`).send({ content: { msgtype: "m.text", body } });
    return r.body.event_id as string;
  };
  for (let i = 0; i < 60; i++) await send(`early ${i}`);
  await t.knockAcceptJoin(remote, roomId, remote.userId("reader"));
  let last = "";
  for (let i = 0; i < 100; i++) {
    if (i % 5 === 0) await t.knock(remote, roomId, remote.userId(`knocker${i}`));
    last = await send(`late ${i}`);
  }
  const runs: { cmds: number; byCommand: Record<string, number>; ms: number }[] = [];
  for (let i = 0; i < 6; i++) {
    const c0 = await commandStats();
    const t0 = process.hrtime.bigint();
    const res = await t.fed(remote, "GET", `${FED}/v1/backfill/${enc(roomId)}?v=${enc(last)}&limit=100`);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const c1 = await commandStats();
    if (res.status !== 200 || res.body.pdus.length !== 100) throw new Error(`backfill: ${res.status} ${res.body.pdus?.length}`);
    const byCommand = delta(c0, c1);
    runs.push({ cmds: Object.values(byCommand).reduce((x, y) => x + y, 0), byCommand, ms });
  }
  const warm = runs.slice(1);
  console.log(
    JSON.stringify({
      first: runs[0],
      warm_median_ms: warm.map((r) => r.ms).sort((a, b) => a - b)[Math.floor(warm.length / 2)],
      warm: warm[warm.length - 1],
    }),
  );
  await remote.close();
} finally {
  await probe.quit();
  await t.cleanup();
  await redisServer.stop();
}
