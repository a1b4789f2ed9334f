/**
 * Interop: Gatehouse joins a room hosted by a real Synapse with partial state (rooms/partial-state.ts;
 * spec v1.19 send_join omit_members, MSC3706). Synapse answers members_omitted: the room is stored
 * partial. While partial (the resync held: this Gatehouse's runner is stopped), messages flow both
 * ways, including from a Synapse member whose join the answer omitted (Gatehouse fetches and
 * checks it), and member-list reads are refused (503). A restart resumes the resync from Redis; it
 * completes the state, which then equals Synapse's (same event per key), and messages flow both
 * ways again. In both topologies (test/support/topology.ts): IP literals, and hs-c.test by name.
 */
import { describe, test, before } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import type { LoopbackGatehouse } from "../../src/dev/loopback.js";
import { jsonRequest } from "../../src/dev/http-json.js";
import { SynapsePeer, SynapseUser, waitFor } from "../support/synapse.js";
import { topologies } from "../support/topology.js";
import { useInteropSuite } from "../support/interop-suite.js";

const enc = encodeURIComponent;

for (const topology of topologies()) {
  const unavailable = topology.unavailable();

  describe(`interop (${topology.name}): Gatehouse joins a Synapse room with partial state`, { skip: unavailable ?? false }, () => {
    let lb: LoopbackGatehouse;
    let hs: SynapsePeer;
    let owner: SynapseUser;
    let bob: SynapseUser;
    let asToken: string;

    // Its own peer in the IP-literal lab (ports no other suite uses); hs-c.test when named.
    const suite = useInteropSuite(topology, {
      peers: ["C"],
      ownIpLiteralPeers: { C: { name: "psC", clientPort: 19318, federationPort: 19758 } },
      gatehouse: { appservice: "ps", env: { GATEHOUSE_PARTIAL_STATE_JOINS: "true" } },
    });
    before(async () => {
      ({ lb, asToken } = suite);
      hs = suite.peer("C");
      owner = await hs.user("psowner");
      bob = await hs.user("psbob");
    });

    const client = suite.client.bind(suite);
    const onGatehouse = async (roomId: string, eventId: string) => (await lb.admin("GET", `/rooms/${enc(roomId)}/events/${enc(eventId)}`)).status === 200;
    const onSynapse = async (roomId: string, eventId: string) => (await owner.call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/event/${enc(eventId)}`)).status === 200;
    const synapseSend = async (u: SynapseUser, roomId: string, body: string): Promise<string> => {
      const r = await u.call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/t${randomBytes(6).toString("hex")}`, { msgtype: "m.text", body });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body.event_id;
    };
    const gatehouseSend = async (roomId: string, user: string, body: string): Promise<string> => {
      const r = await client("PUT", `/rooms/${enc(roomId)}/send/m.room.message/g${randomBytes(6).toString("hex")}`, user, { msgtype: "m.text", body });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body.event_id;
    };

    for (const version of ["10", "12"]) {
      test(`v${version}: partial join; messages both ways during and after the resync; the same state on both servers`, async () => {
        const created = await owner.call("POST", "/_matrix/client/v3/createRoom", { room_version: version, preset: "public_chat", name: `partial v${version}` });
        assert.equal(created.status, 200, JSON.stringify(created.body));
        const roomId: string = created.body.room_id;
        assert.equal((await bob.join(roomId, hs.serverName)).status, 200);
        const register = await jsonRequest(`http://127.0.0.1:${lb.gh.clientPort}/_matrix/client/v3/register`, "POST", asToken, { type: "m.login.application_service", username: `_ps_u${version}${topology.name === "named" ? "n" : "i"}` });
        assert.equal(register.status, 200, JSON.stringify(register.body));
        const user: string = register.body.user_id;

        // The resync is held: this process's runner stops (a restart below resumes it from Redis).
        await lb.gh.gatehouse.partialState.close();
        const joined = await client("POST", `/join/${enc(roomId)}?server_name=${enc(hs.serverName)}`, user, {});
        assert.equal(joined.status, 200, JSON.stringify(joined.body));
        const room = await lb.gh.gatehouse.store.getRoom(roomId);
        assert.ok(room?.partialState, "Synapse answered members_omitted: the room is partial");
        assert.ok(room.partialState.servers.includes(hs.serverName), "servers_in_room names Synapse");
        assert.equal((await owner.state(roomId, "m.room.member", user)).body.membership, "join");

        // While partial: member lists refused, never short; messages both ways, bob's too (his join was omitted).
        const members = await client("GET", `/rooms/${enc(roomId)}/joined_members`, user);
        assert.equal(members.status, 503, JSON.stringify(members.body));
        const fromOwner = await synapseSend(owner, roomId, "during the resync (owner)");
        const fromBob = await synapseSend(bob, roomId, "during the resync (bob)");
        await waitFor("Gatehouse to take Synapse's messages while partial", async () => (await onGatehouse(roomId, fromOwner)) && (await onGatehouse(roomId, fromBob)));
        const ours = await gatehouseSend(roomId, user, "during the resync (gatehouse)");
        await waitFor("Synapse to take Gatehouse's message while partial", () => onSynapse(roomId, ours));
        assert.ok((await lb.gh.gatehouse.store.getRoom(roomId))?.partialState, "still partial");

        // A restart resumes the resync (rooms listed in Redis); it completes the state.
        await lb.restart();
        await waitFor("the resync to complete", async () => (await lb.gh.gatehouse.store.getRoom(roomId))?.partialState === undefined, 60_000);
        const recheckFailed = (await lb.gh.gatehouse.metrics.partialStateResyncs.get()).values.find((v) => v.labels.outcome === "recheck_failed")?.value ?? 0;
        assert.equal(recheckFailed, 0, "the events accepted while partial pass the complete state too");
        const g = await lb.admin("GET", `/rooms/${enc(roomId)}/state`);
        assert.equal(g.status, 200, JSON.stringify(g.body));
        const s = await owner.call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/state`);
        assert.equal(s.status, 200, JSON.stringify(s.body));
        const key = (e: { type: string; state_key: string; event_id: string }) => `${e.type}|${e.state_key}|${e.event_id}`;
        assert.deepEqual(g.body.state.map(key).sort(), s.body.map(key).sort(), "the same state on both servers");
        const nowMembers = await client("GET", `/rooms/${enc(roomId)}/joined_members`, user);
        assert.equal(nowMembers.status, 200, JSON.stringify(nowMembers.body));
        assert.deepEqual(Object.keys(nowMembers.body.joined).sort(), [owner.userId, bob.userId, user].sort());

        // After: both ways again.
        const afterBob = await synapseSend(bob, roomId, "after the resync (bob)");
        await waitFor("Gatehouse to take bob's message", () => onGatehouse(roomId, afterBob));
        const afterOurs = await gatehouseSend(roomId, user, "after the resync (gatehouse)");
        await waitFor("Synapse to take Gatehouse's message", () => onSynapse(roomId, afterOurs));
      });
    }
  });
}
