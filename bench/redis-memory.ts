/**
 * Redis memory per room member and per event, from `MEMORY USAGE` of the real keys a hosted room
 * leaves (deploy/README.md, "Sizing a Redis Cluster"). A whole Gatehouse (in process, the same
 * code as `serve`) on a private redis-server or REDIS_URL (a redis-cluster:// URL measures on a
 * cluster): a room is created, MEMBERS remote users join over federation (send_join), then EVENTS
 * messages are sent through the admin API. Prints the bytes of each key family and the deltas.
 *
 *   npx tsx bench/redis-memory.ts            (MEMBERS=200 EVENTS=1000 by default)
 *   MEMBERS=500 EVENTS=2000 REDIS_URL=redis-cluster://127.0.0.1:7000 npx tsx bench/redis-memory.ts
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startRedis } from "../src/embedded-redis.js";
import { connectRedis } from "../src/server.js";

const MEMBERS = Number(process.env.MEMBERS ?? 200);
const EVENTS = Number(process.env.EVENTS ?? 1000);

const dir = mkdtempSync(join(tmpdir(), "gatehouse-memsize-"));
const own = process.env.REDIS_URL ? null : await startRedis({ dir });
if (own) process.env.REDIS_URL = own.url;
const { TestGatehouse } = await import("../test/support/gatehouse.js");
const { RemoteServer } = await import("../test/support/remote-server.js");
const { scanKeys } = await import("../test/support/redis-scan.js");
const redis = connectRedis(process.env.REDIS_URL!);

/** Key family: the key with room, event and server IDs replaced. */
function family(prefix: string, key: string): string {
  return key
    .slice(prefix.length + 1)
    .replace(/^bull:\{send-\d+-of-(\d+)\}/, "bull:{send-<i>-of-$1}")
    .replace(/\{![^}]*\}/g, "{<room>}")
    .replace(/\{[^}<]*\}/g, "{<destination>}")
    .replace(/(ratelimit:origin:|server-keys:|:de:).*/, "$1<server>")
    .replace(/:event:\$.*/, ":event:<id>")
    .replace(/:instance:.*/, ":instance:<id>");
}

async function usage(prefix: string): Promise<{ total: number; keys: number; byFamily: Map<string, { bytes: number; keys: number }> }> {
  const keys = await scanKeys(redis, `${prefix}:*`);
  const sizes = await Promise.all(keys.map((k) => redis.memory("USAGE", k, "SAMPLES", "0")));
  const byFamily = new Map<string, { bytes: number; keys: number }>();
  let total = 0;
  keys.forEach((k, i) => {
    const n = Number(sizes[i] ?? 0);
    total += n;
    const f = family(prefix, k);
    const e = byFamily.get(f) ?? { bytes: 0, keys: 0 };
    e.bytes += n;
    e.keys++;
    byFamily.set(f, e);
  });
  return { total, keys: keys.length, byFamily };
}

const gh = await TestGatehouse.start({ name: "memsize" });
const remote = await RemoteServer.start();
try {
  const roomId = await gh.createRoom({ join_rule: "public", name: "sizing" });
  const m0 = await usage(gh.prefix);
  for (let i = 0; i < MEMBERS; i++) await gh.join(remote, roomId, `@member${i}:${remote.serverName}`);
  const m1 = await usage(gh.prefix);
  for (let i = 0; i < EVENTS; i++) {
    const res = await gh.admin.post(`/_gatehouse/admin/v1/rooms/${encodeURIComponent(roomId)}/send/m.room.message`).send({ content: { msgtype: "m.text", body: `sizing message ${i} with a typical short chat line` } });
    if (res.status !== 200) throw new Error(`send: ${res.status} ${JSON.stringify(res.body)}`);
  }
  const m2 = await usage(gh.prefix);
  const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
  console.log(`# Redis memory (MEMORY USAGE … SAMPLES 0 of every key), ${new Date().toISOString()}, ${process.env.REDIS_URL?.startsWith("redis-cluster://") ? "Redis Cluster" : "single Redis"}`);
  console.log(`room created: ${fmt(m0.total)} B in ${m0.keys} keys`);
  console.log(`+${MEMBERS} members (send_join): ${fmt(m1.total - m0.total)} B → ${fmt((m1.total - m0.total) / MEMBERS)} B per member`);
  console.log(`+${EVENTS} messages (admin send): ${fmt(m2.total - m1.total)} B → ${fmt((m2.total - m1.total) / EVENTS)} B per event`);
  console.log("| key family | keys | bytes after members | bytes after messages | per member | per event |");
  console.log("|---|---|---|---|---|---|");
  for (const [f, e] of [...m2.byFamily].sort((a, b) => b[1].bytes - a[1].bytes)) {
    const a = m0.byFamily.get(f)?.bytes ?? 0;
    const b = m1.byFamily.get(f)?.bytes ?? 0;
    console.log(`| \`${f}\` | ${e.keys} | ${fmt(b)} | ${fmt(e.bytes)} | ${fmt((b - a) / MEMBERS)} | ${fmt((e.bytes - b) / EVENTS)} |`);
  }
} finally {
  await remote.close?.();
  await gh.cleanup();
  await redis.quit();
  if (own) await own.stop();
  rmSync(dir, { recursive: true, force: true });
}
