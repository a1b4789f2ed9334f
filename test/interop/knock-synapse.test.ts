/**
 * Interop with a real Synapse 1.160 (Debian package in a chroot, ../shared/peers): Synapse users
 * knock on Gatehouse rooms of versions 7, 10 (knock_restricted), 11 and 12, get accepted through
 * the admin API (an invite over /v2/invite), join (make_join/send_join), and both sides agree on
 * the membership. Refusals: a banned user and an ACL-denied server.
 *
 * Run: npm run test:interop (root). Synapse A serves the knocking users, Synapse B is the server
 * the ACL denies.
 */
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../../src/config.js";
import { createLogger } from "../../src/logger.js";
import { startGatehouse, type RunningGatehouse } from "../../src/server.js";
import { freePort } from "../../src/embedded-redis.js";
import { installPeers, interopUnavailable, SynapsePeer, SynapseUser, waitFor } from "../support/synapse.js";

const unavailable = interopUnavailable();

describe("interop: Synapse knocks on Gatehouse rooms", { skip: unavailable ?? false }, () => {
  let gh: RunningGatehouse;
  let dataDir: string;
  let ghName: string;
  const hsA = new SynapsePeer("ghA", 18108, 18548);
  const hsB = new SynapsePeer("ghB", 18208, 18648);
  let admin: (method: string, path: string, body?: unknown) => Promise<{ status: number; body: any }>;
  const creator = () => `@admin:${ghName}`;

  before(async () => {
    installPeers();
    hsA.start();
    hsB.start();
    dataDir = mkdtempSync(join(tmpdir(), "gatehouse-interop-"));
    const port = await freePort();
    ghName = `127.0.0.1:${port}`;
    const config = loadConfig({
      GATEHOUSE_DATA_DIR: dataDir,
      GATEHOUSE_FEDERATION_LISTEN: `127.0.0.1:${port}`,
      GATEHOUSE_ADMIN_LISTEN: "127.0.0.1:0",
      GATEHOUSE_METRICS_LISTEN: "off",
      GATEHOUSE_FEDERATION_INSECURE_SKIP_TLS_VERIFY: "true",
      GATEHOUSE_FEDERATION_ALLOW_PRIVATE_ADDRESSES: "true",
      GATEHOUSE_LOG_LEVEL: process.env.GATEHOUSE_LOG_LEVEL ?? "warn",
      REDIS_URL: process.env.REDIS_URL,
    });
    gh = await startGatehouse(config, createLogger(config.logLevel));
    admin = async (method, path, body) => {
      const res = await fetch(`http://127.0.0.1:${gh.adminPort}/_gatehouse/admin/v1${path}`, {
        method,
        headers: { Authorization: `Bearer ${gh.adminToken}`, "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: res.status, body: await res.json().catch(() => null) };
    };
  });

  after(async () => {
    await gh?.stop();
    hsA.stop();
    hsB.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  const enc = encodeURIComponent;

  async function createKnockRoom(version: string, joinRule: string): Promise<string> {
    const r = await admin("POST", "/rooms", { creator: creator(), room_version: version, join_rule: joinRule, name: `v${version} ${joinRule}`, topic: "interop" });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body.room_id;
  }

  async function knockAcceptJoin(user: SynapseUser, version: string, joinRule: string): Promise<void> {
    const roomId = await createKnockRoom(version, joinRule);
    const knock = await user.knock(roomId, ghName, `let me in (v${version})`);
    assert.equal(knock.status, 200, `knock: ${JSON.stringify(knock.body)}`);
    assert.equal(knock.body.room_id, roomId);

    const knocks = await admin("GET", `/rooms/${enc(roomId)}/knocks`);
    assert.deepEqual(knocks.body.knocks.map((k: any) => [k.user_id, k.reason]), [[user.userId, `let me in (v${version})`]]);
    assert.equal(await waitFor("Synapse to show the knock", async () => (await user.membershipIn(roomId)) === "knock"), true);

    const accept = await admin("POST", `/rooms/${enc(roomId)}/knocks/${enc(user.userId)}/accept`, { reason: "welcome" });
    assert.equal(accept.status, 200, `accept: ${JSON.stringify(accept.body)}`);
    await waitFor("Synapse to show the invite", async () => (await user.membershipIn(roomId)) === "invite");

    const joined = await user.join(roomId, ghName);
    assert.equal(joined.status, 200, `join: ${JSON.stringify(joined.body)}`);
    const members = await admin("GET", `/rooms/${enc(roomId)}/members`);
    assert.equal(members.body.members[user.userId], "join");
    const own = await user.state(roomId, "m.room.member", user.userId);
    assert.equal(own.body.membership, "join");
    // Synapse now holds the room's state: the join rule and name Gatehouse set.
    const rules = await user.state(roomId, "m.room.join_rules");
    assert.equal(rules.body.join_rule, joinRule);
  }

  for (const [version, joinRule] of [["7", "knock"], ["10", "knock_restricted"], ["11", "knock"], ["12", "knock"]] as const) {
    test(`room v${version} (${joinRule}): knock → accept → join`, async () => {
      const user = await hsA.user(`knocker${version}`);
      await knockAcceptJoin(user, version, joinRule);
    });
  }

  test("a banned user cannot knock; Synapse shows Gatehouse's reason", async () => {
    const roomId = await createKnockRoom("12", "knock");
    const user = await hsA.user("banned1");
    const ban = await admin("POST", `/rooms/${enc(roomId)}/ban`, { user_id: user.userId, reason: "spam" });
    assert.equal(ban.status, 200, JSON.stringify(ban.body));
    const knock = await user.knock(roomId, ghName, "please");
    assert.equal(knock.status, 403, JSON.stringify(knock.body));
    assert.equal(knock.body.errcode, "M_FORBIDDEN");
    assert.match(knock.body.error, /banned/);
    const knocks = await admin("GET", `/rooms/${enc(roomId)}/knocks`);
    assert.deepEqual(knocks.body.knocks, []);
  });

  test("an ACL-denied server cannot knock; an allowed one can", async () => {
    const roomId = await createKnockRoom("12", "knock");
    const acl = await admin("PUT", `/rooms/${enc(roomId)}/state/m.room.server_acl`, {
      content: { allow: ["*"], deny: ["127.0.0.1"], allow_ip_literals: true },
    });
    assert.equal(acl.status, 200, JSON.stringify(acl.body));
    const denied = await hsB.user("acldenied");
    const knock = await denied.knock(roomId, ghName);
    assert.equal(knock.status, 403, JSON.stringify(knock.body));
    assert.equal(knock.body.errcode, "M_FORBIDDEN");
    // Gatehouse's own name is 127.0.0.1:<port> too, so deny by exact port-less host would ban it;
    // instead allow only A's name pattern and deny the rest.
    const acl2 = await admin("PUT", `/rooms/${enc(roomId)}/state/m.room.server_acl`, {
      content: { allow: ["127.0.0.1"], deny: [], allow_ip_literals: true },
    });
    assert.equal(acl2.status, 200);
    const allowed = await hsA.user("aclallowed");
    const ok = await allowed.knock(roomId, ghName);
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
  });

  test("a knocker's leave is local in Synapse 1.160 (it does not rescind over federation); deny still works", async () => {
    // Synapse's remote_rescind_knock only writes a local out-of-band leave ("we don't know which
    // homeserver to send it to"), so Gatehouse keeps the knock pending until the operator acts.
    const roomId = await createKnockRoom("11", "knock");
    const user = await hsA.user("rescinder");
    assert.equal((await user.knock(roomId, ghName)).status, 200);
    const left = await user.leave(roomId);
    assert.equal(left.status, 200, JSON.stringify(left.body));
    assert.equal((await admin("GET", `/rooms/${enc(roomId)}/members`)).body.members[user.userId], "knock");
    const deny = await admin("POST", `/rooms/${enc(roomId)}/knocks/${enc(user.userId)}/deny`, { reason: "gone" });
    assert.equal(deny.status, 200, JSON.stringify(deny.body));
    assert.equal((await admin("GET", `/rooms/${enc(roomId)}/members`)).body.members[user.userId], "leave");
    // And the user may knock again afterwards (leave → knock is allowed).
    assert.equal((await user.knock(roomId, ghName, "again")).status, 200);
    assert.equal((await admin("GET", `/rooms/${enc(roomId)}/members`)).body.members[user.userId], "knock");
  });
});
