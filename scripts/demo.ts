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
import { startLoopbackGatehouse, type LoopbackGatehouse } from "../src/dev/loopback.js";
import { waitFor } from "../src/dev/wait.js";

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const say = (who: string, text: string) => console.log(`${bold(who.padEnd(3))} ${text}`);

async function instance(label: string): Promise<LoopbackGatehouse> {
  // Each instance starts its own embedded redis-server (REDIS_URL is not passed on).
  const g = await startLoopbackGatehouse({ label: `demo-${label}`, env: { REDIS_URL: undefined }, logLevel: process.env.GATEHOUSE_LOG_LEVEL ?? "error" });
  say(label, `Gatehouse ${g.serverName} (federation https://127.0.0.1:${g.gh.federationPort}, admin :${g.gh.adminPort}, Redis ${g.gh.redisUrl})`);
  return g;
}

/** The admin API, throwing on errors (the demo stops at the first failure). */
function adminClient(g: LoopbackGatehouse) {
  return async (method: string, path: string, body?: unknown): Promise<any> => {
    const res = await g.admin(method, path, body);
    if (res.status >= 300) throw new Error(`${method} ${path} → ${res.status} ${JSON.stringify(res.body)}`);
    return res.body;
  };
}

const enc = encodeURIComponent;
const a = await instance("A");
const b = await instance("B");
const adminA = adminClient(a);
const adminB = adminClient(b);
try {
  const alice = `@alice:${a.serverName}`;
  const bob = `@bob:${b.serverName}`;
  const room = await adminA("POST", "/rooms", { creator: alice, join_rule: "knock", name: "Demo knock room", topic: "knock, knock" });
  say("A", `${alice} created ${room.room_id} (room version ${room.room_version}, join rule knock)`);

  const knock = await adminB("POST", "/remote/knock", { user_id: bob, room_id: room.room_id, via: [a.serverName], reason: "Hi, may I come in?", auto_join: true });
  say("B", `${bob} knocked (make_knock + send_knock to A); A answered with ${knock.room_state.length} state events: ${knock.room_state.map((s: any) => s.type).join(", ")}`);

  const knocks = await adminA("GET", `/rooms/${enc(room.room_id)}/knocks`);
  for (const k of knocks.knocks) say("A", `pending knock: ${k.user_id} says ${JSON.stringify(k.reason)}`);

  await adminA("POST", `/rooms/${enc(room.room_id)}/knocks/${enc(bob)}/accept`, { reason: "Welcome!" });
  say("A", `${alice} accepted the knock: invite sent to B over /v2/invite, countersigned by B`);

  const joined = await waitFor("bob to join", async () => {
    const m = await adminA("GET", `/rooms/${enc(room.room_id)}/members`);
    return m.members[bob] === "join" ? m : null;
  });
  say("B", `${bob} joined by itself after the accepted knock (make_join + send_join to A)`);
  say("A", `members: ${Object.entries(joined.members).map(([u, m]) => `${u}=${m}`).join(", ")}`);

  const topic = await adminA("PUT", `/rooms/${enc(room.room_id)}/state/m.room.topic`, { content: { topic: "bob is here" }, sender: alice });
  say("A", `${alice} changed the topic (${topic.event_id}); the sender queues it for ${b.serverName}`);
  const delivered = await waitFor("the topic to reach B", async () => {
    const q = await adminA("GET", `/queue/${enc(b.serverName)}`).catch(() => null);
    return q && q.pending_pdus === 0 && q.last_success_ts ? q : null;
  });
  say("A", `delivered to ${b.serverName}: queue empty, last transaction at ${new Date(delivered.last_success_ts).toISOString()}`);
  const remote = await adminB("GET", `/remote/memberships?user_id=${enc(bob)}`);
  say("B", `B's record: ${remote.memberships.map((m: any) => `${m.room_id} ${m.membership}`).join(", ")}`);
  console.log("\ndemo complete: knock → accept → join between two Gatehouse instances");
} finally {
  await a.stop();
  await b.stop();
}
