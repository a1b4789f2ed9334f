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
 *
 * `npm run demo -- --named` (root) plays the same between named servers, as on the internet, inside
 * a private network namespace: a dnsmasq answers for a.demo.test (A 127.0.0.10, port 8448) and
 * b.demo.test (whose .well-known on 127.0.0.11:443 delegates to gatehouse-b.demo.test:8449), a
 * private CA issues every certificate, and both instances verify them.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startLoopbackGatehouse, type LoopbackGatehouse } from "../src/dev/loopback.js";
import { waitFor } from "../src/dev/wait.js";
import { inPrivateNamespace, privateNamespaceAvailable, runInPrivateNamespace, setUpPrivateNamespace } from "../src/dev/netns.js";
import { TestCa, TestDns, TestHttpsServer, DNS_SERVER } from "../src/dev/named-federation.js";

const namedMode = process.argv.includes("--named");
if (namedMode && !inPrivateNamespace()) {
  if (!privateNamespaceAvailable()) {
    console.error("demo --named needs root and `unshare --net --mount` (a private network namespace)");
    process.exit(2);
  }
  process.exit(runInPrivateNamespace([process.execPath, ...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)]));
}

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const say = (who: string, text: string) => console.log(`${bold(who.padEnd(3))} ${text}`);

/** The named federation (--named): DNS, CA, the .well-known of b.demo.test, and each instance's settings. */
const cleanups: (() => Promise<void> | void)[] = [];
const namedEnv: Record<string, Record<string, string>> = {};
if (namedMode) {
  setUpPrivateNamespace(DNS_SERVER);
  const dns = new TestDns({ hosts: { "a.demo.test": "127.0.0.10", "b.demo.test": "127.0.0.11", "gatehouse-b.demo.test": "127.0.0.12" } });
  await dns.start();
  cleanups.push(() => dns.stop());
  const ca = await TestCa.create("Gatehouse demo CA");
  const wellKnown = new TestHttpsServer("127.0.0.11", 443, await ca.issue(["b.demo.test"]), {
    "/.well-known/matrix/server": { json: { "m.server": "gatehouse-b.demo.test:8449" } },
  });
  await wellKnown.start();
  cleanups.push(() => wellKnown.stop());
  const dir = mkdtempSync(join(tmpdir(), "gatehouse-demo-named-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "ca.pem"), ca.cert);
  for (const [label, serverName, listen, certName] of [
    ["A", "a.demo.test", "127.0.0.10:8448", "a.demo.test"],
    ["B", "b.demo.test", "127.0.0.12:8449", "gatehouse-b.demo.test"],
  ] as const) {
    const tls = await ca.issue([certName]);
    writeFileSync(join(dir, `${label}.crt`), tls.cert);
    writeFileSync(join(dir, `${label}.key`), tls.key, { mode: 0o600 });
    namedEnv[label] = {
      GATEHOUSE_SERVER_NAME: serverName,
      GATEHOUSE_FEDERATION_LISTEN: listen,
      GATEHOUSE_TLS: "files",
      GATEHOUSE_TLS_CERT: join(dir, `${label}.crt`),
      GATEHOUSE_TLS_KEY: join(dir, `${label}.key`),
      GATEHOUSE_FEDERATION_INSECURE_SKIP_TLS_VERIFY: "false",
      GATEHOUSE_FEDERATION_ALLOW_PRIVATE_ADDRESSES: "false",
      GATEHOUSE_FEDERATION_IP_RANGE_ALLOWLIST: "127.0.0.0/8",
      GATEHOUSE_FEDERATION_CA_FILE: join(dir, "ca.pem"),
    };
  }
  say("DNS", `dnsmasq at ${DNS_SERVER}: a.demo.test → 127.0.0.10; b.demo.test → 127.0.0.11 (its .well-known says gatehouse-b.demo.test:8449); gatehouse-b.demo.test → 127.0.0.12`);
  say("CA", "a private CA issued every certificate; both instances verify them (GATEHOUSE_FEDERATION_CA_FILE)");
}

async function instance(label: string): Promise<LoopbackGatehouse> {
  // Each instance starts its own embedded redis-server (REDIS_URL is not passed on).
  const g = await startLoopbackGatehouse({ label: `demo-${label}`, env: { REDIS_URL: undefined, ...namedEnv[label] }, logLevel: process.env.GATEHOUSE_LOG_LEVEL ?? "error" });
  const listen = namedEnv[label]?.GATEHOUSE_FEDERATION_LISTEN ?? `127.0.0.1:${g.gh.federationPort}`;
  say(label, `Gatehouse ${g.serverName} (federation https://${listen}, admin :${g.gh.adminPort}, Redis ${g.gh.redisUrl})`);
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
  console.log(`\ndemo complete: knock → accept → join between two Gatehouse instances${namedMode ? " with DNS names, .well-known delegation and verified certificates" : ""}`);
} finally {
  await a.stop();
  await b.stop();
  for (const c of cleanups.reverse()) await c();
}
