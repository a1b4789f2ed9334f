/**
 * `npm run demo`: two Gatehouse instances on loopback, each with its own embedded redis-server,
 * play knock → accept → join between them and print what happens.
 *
 *   A (hosts a knock room)                     B (its user @bob knocks)
 *   admin: create room (v12, knock)
 *                                              admin: remote/knock @bob → make_knock/send_knock to A
 *   admin: list knocks, accept @bob → /v2/invite to B (B countersigns)
 *                                              B joins by itself (auto_join): make_join/send_join to A
 *   admin: members show @bob joined; a topic change is delivered to B over /send
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../src/config.js";
import { createLogger } from "../src/logger.js";
import { startGatehouse, type RunningGatehouse } from "../src/server.js";
import { freePort } from "../src/embedded-redis.js";

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const say = (who: string, text: string) => console.log(`${bold(who.padEnd(3))} ${text}`);

async function instance(label: string): Promise<{ gh: RunningGatehouse; name: string; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), `gatehouse-demo-${label}-`));
  const port = await freePort();
  const config = loadConfig({
    GATEHOUSE_DATA_DIR: dir,
    GATEHOUSE_FEDERATION_LISTEN: `127.0.0.1:${port}`,
    GATEHOUSE_ADMIN_LISTEN: "127.0.0.1:0",
    GATEHOUSE_METRICS_LISTEN: "127.0.0.1:0",
    GATEHOUSE_FEDERATION_INSECURE_SKIP_TLS_VERIFY: "true",
    GATEHOUSE_FEDERATION_ALLOW_PRIVATE_ADDRESSES: "true",
    GATEHOUSE_LOG_LEVEL: process.env.GATEHOUSE_LOG_LEVEL ?? "error",
  });
  const gh = await startGatehouse(config, createLogger(config.logLevel));
  say(label, `Gatehouse ${config.serverName} (federation https://127.0.0.1:${gh.federationPort}, admin :${gh.adminPort}, Redis ${gh.redisUrl})`);
  return { gh, name: config.serverName, dir };
}

function adminClient(gh: RunningGatehouse) {
  return async (method: string, path: string, body?: unknown): Promise<any> => {
    const res = await fetch(`http://127.0.0.1:${gh.adminPort}/_gatehouse/admin/v1${path}`, {
      method,
      headers: { Authorization: `Bearer ${gh.adminToken}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await res.json().catch(() => null);
    if (!res.ok) throw new Error(`${method} ${path} → ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
}

async function until<T>(what: string, fn: () => Promise<T | undefined | null | false>, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v as T;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const enc = encodeURIComponent;
const a = await instance("A");
const b = await instance("B");
const adminA = adminClient(a.gh);
const adminB = adminClient(b.gh);
try {
  const alice = `@alice:${a.name}`;
  const bob = `@bob:${b.name}`;
  const room = await adminA("POST", "/rooms", { creator: alice, join_rule: "knock", name: "Demo knock room", topic: "knock, knock" });
  say("A", `${alice} created ${room.room_id} (room version ${room.room_version}, join rule knock)`);

  const knock = await adminB("POST", "/remote/knock", { user_id: bob, room_id: room.room_id, via: [a.name], reason: "Hi, may I come in?", auto_join: true });
  say("B", `${bob} knocked (make_knock + send_knock to A); A answered with ${knock.room_state.length} state events: ${knock.room_state.map((s: any) => s.type).join(", ")}`);

  const knocks = await adminA("GET", `/rooms/${enc(room.room_id)}/knocks`);
  for (const k of knocks.knocks) say("A", `pending knock: ${k.user_id} says ${JSON.stringify(k.reason)}`);

  await adminA("POST", `/rooms/${enc(room.room_id)}/knocks/${enc(bob)}/accept`, { reason: "Welcome!" });
  say("A", `${alice} accepted the knock: invite sent to B over /v2/invite, countersigned by B`);

  const joined = await until("bob to join", async () => {
    const m = await adminA("GET", `/rooms/${enc(room.room_id)}/members`);
    return m.members[bob] === "join" ? m : null;
  });
  say("B", `${bob} joined by itself after the accepted knock (make_join + send_join to A)`);
  say("A", `members: ${Object.entries(joined.members).map(([u, m]) => `${u}=${m}`).join(", ")}`);

  const topic = await adminA("PUT", `/rooms/${enc(room.room_id)}/state/m.room.topic`, { content: { topic: "bob is here" }, sender: alice });
  say("A", `${alice} changed the topic (${topic.event_id}); the sender queues it for ${b.name}`);
  const delivered = await until("the topic to reach B", async () => {
    const q = await adminA("GET", `/queue/${enc(b.name)}`).catch(() => null);
    return q && q.pending_pdus === 0 && q.last_success_ts ? q : null;
  });
  say("A", `delivered to ${b.name}: queue empty, last transaction at ${new Date(delivered.last_success_ts).toISOString()}`);
  const remote = await adminB("GET", `/remote/memberships?user_id=${enc(bob)}`);
  say("B", `B's record: ${remote.memberships.map((m: any) => `${m.room_id} ${m.membership}`).join(", ")}`);
  console.log("\ndemo complete: knock → accept → join between two Gatehouse instances");
} finally {
  await a.gh.stop();
  await b.gh.stop();
  rmSync(a.dir, { recursive: true, force: true });
  rmSync(b.dir, { recursive: true, force: true });
}
