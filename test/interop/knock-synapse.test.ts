/**
 * Interop with a real Synapse 1.160 (Debian package in a chroot, ../shared/peers): Synapse users
 * knock on Gatehouse rooms of versions 7, 10 (knock_restricted), 11 and 12, get accepted through
 * the admin API (an invite over /v2/invite), join (make_join/send_join), and both sides agree on
 * the membership. Refusals: a banned user and an ACL-denied server.
 *
 * Run: npm run test:interop (root). Synapse A serves the knocking users, Synapse B is the server
 * the ACL denies. Every test runs in both topologies (test/support/topology.ts): IP literals, and
 * named servers (gate.test; hs-a.test delegated by .well-known; hs-b.test reached only by SRV)
 * resolved through DNS, with CA-issued certificates verified in both directions.
 */
import { describe, test, before } from "node:test";
import assert from "node:assert/strict";
import type { AdminCall, LoopbackGatehouse } from "../../src/dev/loopback.js";
import { SynapsePeer, SynapseUser, waitFor } from "../support/synapse.js";
import { topologies, NamedTopology, NAMED } from "../support/topology.js";
import { useInteropSuite } from "../support/interop-suite.js";

for (const topology of topologies()) {
const unavailable = topology.unavailable();

describe(`interop (${topology.name}): Synapse knocks on Gatehouse rooms`, { skip: unavailable ?? false }, () => {
  let lb: LoopbackGatehouse;
  let ghName: string;
  let hsA: SynapsePeer;
  let hsB: SynapsePeer;
  let admin: AdminCall;
  const creator = () => `@admin:${ghName}`;

  const suite = useInteropSuite(topology, { peers: ["A", "B"], gatehouse: { label: `interop-${topology.name}` } });
  before(() => {
    ({ lb } = suite);
    hsA = suite.peer("A");
    hsB = suite.peer("B");
    ghName = lb.serverName;
    admin = lb.admin;
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

  test("events Gatehouse creates reach Synapse members: topic change, invite, kick (the outbound sender)", async () => {
    const member = await hsA.user("member1");
    const roomId = await createKnockRoom("12", "knock");
    assert.equal((await member.knock(roomId, ghName)).status, 200);
    assert.equal((await admin("POST", `/rooms/${enc(roomId)}/knocks/${enc(member.userId)}/accept`, {})).status, 200);
    await waitFor("invite on Synapse", async () => (await member.membershipIn(roomId)) === "invite");
    assert.equal((await member.join(roomId, ghName)).status, 200);

    const topic = await admin("PUT", `/rooms/${enc(roomId)}/state/m.room.topic`, { content: { topic: "delivered by /send" } });
    assert.equal(topic.status, 200, JSON.stringify(topic.body));
    const seen = await waitFor("Synapse to show the new topic", async () => {
      const t = await member.state(roomId, "m.room.topic");
      return t.body?.topic === "delivered by /send" ? t.body : null;
    });
    assert.equal(seen.topic, "delivered by /send");

    // A second Synapse user (same server) gets invited by Gatehouse's admin: Synapse A is in the
    // room, so the invite reaches it through /v2/invite and the member sees it in room state.
    const other = await hsA.user("member2");
    assert.equal((await admin("POST", `/rooms/${enc(roomId)}/invite`, { user_id: other.userId })).status, 200);
    await waitFor("the invitee to see the invite", async () => (await other.membershipIn(roomId)) === "invite");
    await waitFor("the member to see the invite in room state", async () => (await member.state(roomId, "m.room.member", other.userId)).body?.membership === "invite");

    assert.equal((await admin("POST", `/rooms/${enc(roomId)}/kick`, { user_id: member.userId, reason: "bye" })).status, 200);
    await waitFor("Synapse to show the kick", async () => (await member.membershipIn(roomId)) === "leave");
    const queue = await admin("GET", `/queue/${enc(hsA.serverName)}`);
    assert.equal(queue.status, 200, JSON.stringify(queue.body));
    assert.equal(queue.body.pending_pdus, 0);
  });

  test("room upgrade 10 → 12: a joined Synapse member sees the tombstone and joins the replacement after knocking", async () => {
    const member = await hsA.user("upgrader1");
    const oldRoom = await createKnockRoom("10", "knock");
    assert.equal((await member.knock(oldRoom, ghName)).status, 200);
    assert.equal((await admin("POST", `/rooms/${enc(oldRoom)}/knocks/${enc(member.userId)}/accept`, {})).status, 200);
    await waitFor("invite on Synapse", async () => (await member.membershipIn(oldRoom)) === "invite");
    assert.equal((await member.join(oldRoom, ghName)).status, 200);
    // A knock still pending at upgrade time is listed with the replacement afterwards.
    const pending = await hsA.user("upgrader2");
    assert.equal((await pending.knock(oldRoom, ghName, "before the upgrade")).status, 200);

    const up = await admin("POST", `/rooms/${enc(oldRoom)}/upgrade`, { new_version: "12" });
    assert.equal(up.status, 200, JSON.stringify(up.body));
    const newRoom: string = up.body.replacement_room;
    const again = await admin("POST", `/rooms/${enc(oldRoom)}/upgrade`, { new_version: "12" });
    assert.equal(again.body.replacement_room, newRoom, "repeating the upgrade gives the same replacement room");

    const tombstone = await waitFor("Synapse to show the tombstone", async () => {
      const t = await member.state(oldRoom, "m.room.tombstone");
      return t.status === 200 ? t.body : null;
    });
    assert.equal(tombstone.replacement_room, newRoom);
    const oldPl = await waitFor("Synapse to show the restricted power levels", async () => {
      const p = await member.state(oldRoom, "m.room.power_levels");
      return p.body?.events_default === 50 ? p.body : null;
    });
    assert.equal(oldPl.invite, 50);
    const knocks = await admin("GET", `/rooms/${enc(oldRoom)}/knocks`);
    assert.equal(knocks.body.replacement_room, newRoom);
    assert.deepEqual(knocks.body.knocks.map((k: any) => k.user_id), [pending.userId]);

    // A new knock through Gatehouse (make_knock from a server not in the room: Synapse B) is
    // refused, naming the replacement. (Synapse A is resident now and would knock locally.)
    const late = await hsB.user("upgrader3");
    const refused = await late.knock(oldRoom, ghName);
    assert.equal(refused.status, 403, JSON.stringify(refused.body));
    assert.match(refused.body.error, new RegExp(newRoom.replace(/[$!]/g, "\\$&")));

    // The member knocks on the replacement, is accepted and joins; Synapse sees the new room's state.
    assert.equal((await member.knock(newRoom, ghName, "following the tombstone")).status, 200);
    assert.equal((await admin("POST", `/rooms/${enc(newRoom)}/knocks/${enc(member.userId)}/accept`, {})).status, 200);
    await waitFor("invite to the new room", async () => (await member.membershipIn(newRoom)) === "invite");
    assert.equal((await member.join(newRoom, ghName)).status, 200);
    const create = await member.state(newRoom, "m.room.create");
    assert.equal(create.body.room_version, "12");
    assert.deepEqual(create.body.predecessor, { room_id: oldRoom });
    const name = await member.state(newRoom, "m.room.name");
    assert.equal(name.body.name, "v10 knock");
    console.log(`# upgrade: old room ${oldRoom} tombstone → ${newRoom}; Synapse sees create ${JSON.stringify(create.body)}`);
  });

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
      content: { allow: ["*"], deny: [topology.aclHost(hsB.serverName)], allow_ip_literals: true },
    });
    if (topology.aclHost(hsB.serverName) === topology.aclHost(ghName)) {
      // IP-literal run: ACLs match hosts without ports, and every server here is 127.0.0.1, so
      // denying B's host would deny Gatehouse too: refused as self-locking, nothing written.
      assert.equal(acl.status, 400, JSON.stringify(acl.body));
      assert.equal(acl.body.errcode, "M_INVALID_PARAM");
    } else {
      assert.equal(acl.status, 200, JSON.stringify(acl.body));
      const denied = await hsB.user("acldenied");
      const knock = await denied.knock(roomId, ghName);
      assert.equal(knock.status, 403, JSON.stringify(knock.body));
      assert.equal(knock.body.errcode, "M_FORBIDDEN");
    }
    // Then allow only A's host (and Gatehouse's: in the IP-literal run all three are 127.0.0.1)
    // and deny the rest.
    const acl2 = await admin("PUT", `/rooms/${enc(roomId)}/state/m.room.server_acl`, {
      content: { allow: [...new Set([topology.aclHost(hsA.serverName), topology.aclHost(ghName)])], deny: [], allow_ip_literals: true },
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

  if (topology instanceof NamedTopology) {
    const named = topology;
    test("named: Gatehouse found hs-a.test through its .well-known and hs-b.test through SRV; Synapse found gate.test by DNS", () => {
      const queries = named.dnsQueries();
      const count = (q: string) => queries.filter((x) => x === q).length;
      console.log(`# DNS queries: ${[...new Set(queries)].map((q) => `${q} ×${count(q)}`).join(", ")}; hs-a.test .well-known fetched ${named.wellKnownHits()}×`);
      assert.ok(named.wellKnownHits() >= 1, "hs-a.test's .well-known was fetched");
      assert.ok(count("query[SRV] _matrix-fed._tcp.hs-b.test") >= 1, "SRV of hs-b.test was looked up");
      assert.ok(count("query[A] fed-a.test") >= 1 && count("query[A] fed-b.test") >= 1, "the delegated and SRV target hosts were resolved");
      assert.ok(count("query[A] gate.test") >= 1, "Synapse resolved gate.test");
    });

    test("named: Synapse verifies certificates too: a Gatehouse presenting a certificate for another name is unreachable for it", async () => {
      // Its own embedded Redis: two Gatehouses must not share queues.
      const bad = await named.startGatehouse(`interop-badgate`, { REDIS_URL: undefined }, "badGate");
      try {
        const r = await bad.admin("POST", "/rooms", { creator: `@admin:${NAMED.badGate.name}`, join_rule: "knock", name: "bad certificate" });
        assert.equal(r.status, 200, JSON.stringify(r.body));
        const user = await hsA.user("badcertknocker");
        const knock = await user.knock(r.body.room_id, NAMED.badGate.name, "over a bad certificate");
        assert.notEqual(knock.status, 200, `Synapse must not reach ${NAMED.badGate.name}: ${JSON.stringify(knock.body)}`);
        assert.deepEqual((await bad.admin("GET", `/rooms/${enc(r.body.room_id)}/knocks`)).body.knocks, [], "the knock never arrived");
        console.log(`# Synapse → ${NAMED.badGate.name} (certificate for ${NAMED.badGate.certName}): ${knock.status} ${JSON.stringify(knock.body)}`);
      } finally {
        await bad.stop();
      }
    });
  }
});
}
