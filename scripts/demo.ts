/**
 * `npm run demo`: two Gatehouse instances on loopback, each with its own embedded redis-server,
 * play knock → accept → join between them and print what happens. On A, a bridge bot
 * (matrix-bot-sdk's Appservice, registered with an application service registration file) owns
 * the room and accepts the knock from the event Gatehouse pushes to it.
 *
 *   A (hosts; bot @demobot is an application service)   B (its user @bob knocks)
 *   bot: createRoom (v12, knock) through A's client API
 *                                                        admin: remote/knock @bob → make_knock/send_knock to A
 *   A pushes the knock to the bot (PUT /_matrix/app/v1/transactions/{txnId})
 *   bot's push handler: invite @bob → /v2/invite to B (B countersigns)
 *                                                        B joins by itself (auto_join): make_join/send_join to A
 *   A pushes the join; the bot says welcome; the message is delivered to B over /send
 *
 * `npm run demo -- --named` (root) plays the same between named servers, as on the internet, inside
 * a private network namespace: a dnsmasq answers for a.demo.test (A 127.0.0.10, port 8448) and
 * b.demo.test (whose .well-known on 127.0.0.11:443 delegates to gatehouse-b.demo.test:8449), a
 * private CA issues every certificate, and both instances verify them. The bot talks to A's
 * client listener on loopback.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import { Appservice, MemoryStorageProvider, LogService, LogLevel } from "matrix-bot-sdk";
import { startLoopbackGatehouse, type LoopbackGatehouse } from "../src/dev/loopback.js";
import { waitFor } from "../src/dev/wait.js";
import { freePort } from "../src/embedded-redis.js";
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

async function instance(label: string, env: Record<string, string> = {}): Promise<LoopbackGatehouse> {
  // Each instance starts its own embedded redis-server (REDIS_URL is not passed on).
  const g = await startLoopbackGatehouse({ label: `demo-${label}`, env: { REDIS_URL: undefined, ...env, ...namedEnv[label] }, logLevel: process.env.GATEHOUSE_LOG_LEVEL ?? "error" });
  const listen = namedEnv[label]?.GATEHOUSE_FEDERATION_LISTEN ?? `127.0.0.1:${g.gh.federationPort}`;
  const client = g.gh.clientPort !== null ? `, client API :${g.gh.clientPort}` : "";
  say(label, `Gatehouse ${g.serverName} (federation https://${listen}, admin :${g.gh.adminPort}${client}, Redis ${g.gh.redisUrl})`);
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
LogService.setLevel(LogLevel.ERROR);

// The bridge's registration file, as any homeserver takes it.
const botPort = await freePort();
const registrationDir = mkdtempSync(join(tmpdir(), "gatehouse-demo-registration-"));
const registration = {
  id: "demobridge",
  url: `http://127.0.0.1:${botPort}`,
  as_token: randomBytes(18).toString("base64url"),
  hs_token: randomBytes(18).toString("base64url"),
  sender_localpart: "demobot",
  rate_limited: false,
  namespaces: { users: [{ exclusive: true, regex: "@_demo_.*" }], aliases: [], rooms: [] },
};
writeFileSync(join(registrationDir, "demobridge.yaml"), JSON.stringify(registration, null, 2));

const a = await instance("A", {
  GATEHOUSE_APPSERVICE_REGISTRATION_FILES: join(registrationDir, "demobridge.yaml"),
  GATEHOUSE_CLIENT_LISTEN: "127.0.0.1:0",
  // matrix-bot-sdk 0.5 reads the hs_token from the query string only (see README).
  GATEHOUSE_APPSERVICE_LEGACY_AUTHORIZATION: "true",
});
const b = await instance("B");
const adminB = adminClient(b);
const adminA = adminClient(a);

const bot = new Appservice({
  port: botPort,
  bindAddress: "127.0.0.1",
  homeserverName: a.serverName,
  homeserverUrl: `http://127.0.0.1:${a.gh.clientPort}`,
  registration,
  storage: new MemoryStorageProvider(),
});
try {
  const bob = `@bob:${b.serverName}`;
  let greeted = "";
  bot.on("room.event", (roomId: string, ev: any) => {
    if (ev.type !== "m.room.member" || ev.state_key === bot.botUserId) return;
    const m = ev.content.membership;
    say("bot", `pushed to the bot: ${ev.state_key} ${m}${ev.content.reason ? ` (${JSON.stringify(ev.content.reason)})` : ""}`);
    if (m === "knock") {
      bot.botClient
        .inviteUser(ev.state_key, roomId)
        .then(() => say("bot", `accepted from the push handler: invited ${ev.state_key} (A → /v2/invite to B, countersigned by B)`))
        .catch((e: unknown) => say("bot", `invite failed: ${String(e)}`));
    }
    if (m === "join") {
      bot.botClient
        .sendText(roomId, `Welcome, ${ev.state_key}!`)
        .then((id: string) => {
          greeted = id;
          say("bot", `said welcome (${id})`);
        })
        .catch((e: unknown) => say("bot", `send failed: ${String(e)}`));
    }
  });
  await bot.begin(); // registers @demobot (POST /register, m.login.application_service)
  say("bot", `matrix-bot-sdk Appservice listening on :${botPort}, registered as ${bot.botUserId}`);

  const roomId: string = await bot.botClient.createRoom({
    preset: "private_chat",
    name: "Demo knock room",
    topic: "knock, knock",
    initial_state: [{ type: "m.room.join_rules", state_key: "", content: { join_rule: "knock" } }],
  });
  say("bot", `created ${roomId} through A's client API (room version 12, join rule knock)`);

  const knock = await adminB("POST", "/remote/knock", { user_id: bob, room_id: roomId, via: [a.serverName], reason: "Hi, may I come in?", auto_join: true });
  say("B", `${bob} knocked (make_knock + send_knock to A); A answered with ${knock.room_state.length} state events`);

  await waitFor("bob to join", async () => ((await adminA("GET", `/rooms/${enc(roomId)}/members`)).members[bob] === "join" ? true : null));
  say("B", `${bob} joined by itself after the accepted knock (make_join + send_join to A)`);

  await waitFor("the bot's welcome", () => greeted || null);
  const delivered = await waitFor("the welcome to reach B", async () => {
    const q = await adminA("GET", `/queue/${enc(b.serverName)}`).catch(() => null);
    return q && q.pending_pdus === 0 && q.last_success_ts ? q : null;
  });
  say("A", `delivered to ${b.serverName} over /send: queue empty, last transaction at ${new Date(delivered.last_success_ts).toISOString()}`);
  const pushQueue = await adminA("GET", `/queue/${enc("as:demobridge")}`);
  say("A", `the bot's queue (as:demobridge): ${pushQueue.txns_sent} transactions pushed, ${pushQueue.pending_pdus} pending`);
  const remote = await adminB("GET", `/remote/memberships?user_id=${enc(bob)}`);
  say("B", `B's record: ${remote.memberships.map((m: any) => `${m.room_id} ${m.membership}`).join(", ")}`);
  console.log(`\ndemo complete: a bridge bot accepted a knock from its pushed event; knock → accept → join between two Gatehouse instances${namedMode ? " with DNS names, .well-known delegation and verified certificates" : ""}`);
} finally {
  bot.stop();
  await a.stop();
  await b.stop();
  rmSync(registrationDir, { recursive: true, force: true });
  for (const c of cleanups.reverse()) await c();
}
