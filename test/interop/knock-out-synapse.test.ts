/**
 * Interop, the other direction: a Gatehouse user knocks on a knock room hosted by a real Synapse
 * (make_knock/send_knock from Gatehouse), Synapse's room admin accepts (Synapse sends /v2/invite to
 * Gatehouse, which countersigns), and the Gatehouse user joins (make_join/send_join), with and
 * without auto_join. Synapse's client API shows each step. In both topologies (test/support/topology.ts):
 * IP literals, and the named server hs-c.test (DNS, port 8448, CA-issued certificate, verified).
 */
import { describe, test, before } from "node:test";
import assert from "node:assert/strict";
import type { AdminCall, LoopbackGatehouse } from "../../src/dev/loopback.js";
import { SynapsePeer, SynapseUser, waitFor } from "../support/synapse.js";
import { topologies } from "../support/topology.js";
import { useInteropSuite } from "../support/interop-suite.js";

for (const topology of topologies()) {
const unavailable = topology.unavailable();

describe(`interop (${topology.name}): Gatehouse users knock on Synapse rooms`, { skip: unavailable ?? false }, () => {
  let lb: LoopbackGatehouse;
  let ghName: string;
  let hs: SynapsePeer;
  let owner: SynapseUser;
  let admin: AdminCall;
  const enc = encodeURIComponent;

  const suite = useInteropSuite(topology, { peers: ["C"], gatehouse: { label: `interop-out-${topology.name}` } });
  before(async () => {
    ({ lb } = suite);
    hs = suite.peer("C");
    owner = await hs.user("owner");
    ghName = lb.serverName;
    admin = lb.admin;
  });

  async function synapseKnockRoom(version: string, joinRule: string): Promise<string> {
    const r = await owner.call("POST", "/_matrix/client/v3/createRoom", {
      room_version: version,
      preset: "private_chat",
      name: `synapse v${version}`,
      initial_state: [{ type: "m.room.join_rules", state_key: "", content: { join_rule: joinRule } }],
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body.room_id;
  }

  async function memberOnSynapse(roomId: string, userId: string): Promise<string | undefined> {
    const r = await owner.call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.member/${enc(userId)}`);
    return r.status === 200 ? r.body.membership : undefined;
  }

  for (const [version, joinRule] of [["12", "knock"], ["10", "knock_restricted"]] as const) {
    test(`room v${version} (${joinRule}) on Synapse: knock → Synapse accepts → join`, async () => {
      const roomId = await synapseKnockRoom(version, joinRule);
      const user = `@out${version}:${ghName}`;
      const knock = await admin("POST", "/remote/knock", { user_id: user, room_id: roomId, via: [hs.serverName], reason: "hello from gatehouse" });
      assert.equal(knock.status, 200, JSON.stringify(knock.body));
      assert.equal(knock.body.membership, "knock");
      assert.equal(knock.body.room_version, version);
      assert.ok(knock.body.room_state.some((s: any) => s.type === "m.room.create"), "knock_room_state holds the create event");
      assert.equal(await memberOnSynapse(roomId, user), "knock");

      const invite = await owner.call("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/invite`, { user_id: user });
      assert.equal(invite.status, 200, JSON.stringify(invite.body));
      const rec = await waitFor("Gatehouse to record the invite", async () => {
        const m = await admin("GET", `/remote/memberships?user_id=${enc(user)}`);
        return m.body.memberships.find((x: any) => x.room_id === roomId && x.membership === "invite");
      });
      assert.ok(rec);

      const joined = await admin("POST", "/remote/join", { user_id: user, room_id: roomId });
      assert.equal(joined.status, 200, JSON.stringify(joined.body));
      assert.equal(joined.body.membership, "join");
      assert.equal(await waitFor("Synapse to show the join", async () => (await memberOnSynapse(roomId, user)) === "join"), true);
    });
  }

  test("auto_join: the Gatehouse user joins as soon as Synapse accepts the knock", async () => {
    const roomId = await synapseKnockRoom("11", "knock");
    const user = `@auto:${ghName}`;
    const knock = await admin("POST", "/remote/knock", { user_id: user, room_id: roomId, via: [hs.serverName], auto_join: true });
    assert.equal(knock.status, 200, JSON.stringify(knock.body));
    assert.equal((await owner.call("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/invite`, { user_id: user })).status, 200);
    assert.equal(await waitFor("Synapse to show the automatic join", async () => (await memberOnSynapse(roomId, user)) === "join"), true);
  });

  test("rescind: the Gatehouse user's leave reaches Synapse (make_leave/send_leave)", async () => {
    const roomId = await synapseKnockRoom("12", "knock");
    const user = `@rescind:${ghName}`;
    assert.equal((await admin("POST", "/remote/knock", { user_id: user, room_id: roomId, via: [hs.serverName] })).status, 200);
    const left = await admin("POST", "/remote/leave", { user_id: user, room_id: roomId });
    assert.equal(left.status, 200, JSON.stringify(left.body));
    assert.equal(await memberOnSynapse(roomId, user), "leave");
  });

  test("a Synapse invite for a Gatehouse user who does not exist is refused (403 M_FORBIDDEN to Synapse, nothing stored); once the operator adds the user, it is taken", async () => {
    const roomId = await synapseKnockRoom("12", "invite");
    const user = `@stranger${Date.now()}:${ghName}`;
    const refused = await owner.call("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/invite`, { user_id: user });
    assert.equal(refused.status, 403, JSON.stringify(refused.body));
    assert.equal(refused.body.errcode, "M_FORBIDDEN");
    assert.deepEqual((await admin("GET", `/remote/memberships?user_id=${enc(user)}`)).body.memberships, []);
    assert.equal((await admin("POST", `/users/${enc(user)}`, {})).status, 200);
    const taken = await owner.call("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/invite`, { user_id: user });
    assert.equal(taken.status, 200, JSON.stringify(taken.body));
    const rec = await waitFor("Gatehouse to record the invite", async () => (await admin("GET", `/remote/memberships?user_id=${enc(user)}`)).body.memberships.find((x: any) => x.membership === "invite"));
    assert.equal(rec.room_id, roomId);
  });

  test("refusals are reported clearly: invite-only room, unsupported version offer, unreachable server", async () => {
    const inviteOnly = await synapseKnockRoom("12", "invite");
    const r = await admin("POST", "/remote/knock", { user_id: `@nope:${ghName}`, room_id: inviteOnly, via: [hs.serverName] });
    assert.equal(r.status, 403, JSON.stringify(r.body));
    assert.equal(r.body.errcode, "M_FORBIDDEN");
    assert.ok(r.body.error.includes(hs.serverName), `the error names the server: ${r.body.error}`);
    const noKnockVersion = await synapseKnockRoom("6", "invite");
    const v6 = await admin("POST", "/remote/knock", { user_id: `@nope:${ghName}`, room_id: noKnockVersion, via: [hs.serverName] });
    assert.ok(v6.status === 400 || v6.status === 403, JSON.stringify(v6.body));
    const unreachable = await admin("POST", "/remote/knock", { user_id: `@nope:${ghName}`, room_id: "!x:127.0.0.1:1", via: ["127.0.0.1:1"] });
    assert.equal(unreachable.status, 502, JSON.stringify(unreachable.body));
    assert.match(unreachable.body.error, /unreachable/);
  });
});
}
