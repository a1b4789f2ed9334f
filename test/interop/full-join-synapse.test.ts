/**
 * Interop with a real Synapse 1.160: a full-state send_join (no omit_members), answered by
 * Gatehouse's streamed send_join (http/json-stream.ts). Synapse asks omit_members=true whenever
 * its server is not in the room yet; it asks the full state only when its server is in the room
 * already (with full state) and still has to join remotely: a restricted room in which none of
 * its users may invite (synapse/handlers/room_member.py, `_should_perform_remote_join`; then
 * handlers/federation.py sends `partial_state=not is_host_joined`).
 *
 * So: Gatehouse hosts a space S (public) and a room R restricted to S's members, where inviting
 * takes power level 50. A first Synapse user joins S then R (partial-state joins, through a
 * Gatehouse user's authorisation), Synapse resyncs R; a second Synapse user joins S, then R:
 * a remote join, with full state. The second join must be answered and applied, Synapse's log
 * must show the send_join with omit_members=false, and both servers must hold the same state.
 *
 * Run: npm run test:interop -- full-join (root). Both topologies (test/support/topology.ts).
 */
import { describe, test, before } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import type { AdminCall, LoopbackGatehouse } from "../../src/dev/loopback.js";
import { SynapsePeer, waitFor } from "../support/synapse.js";
import { topologies } from "../support/topology.js";
import { useInteropSuite } from "../support/interop-suite.js";
import { gatehouseState, stateDiff, synapseState } from "../support/interop-state.js";

for (const topology of topologies()) {
  const unavailable = topology.unavailable();

  describe(`interop (${topology.name}): a Synapse server already in a Gatehouse room joins another user with full state`, { skip: unavailable ?? false }, () => {
    let lb: LoopbackGatehouse;
    let ghName: string;
    let hsA: SynapsePeer;
    let admin: AdminCall;
    const enc = encodeURIComponent;

    const suite = useInteropSuite(topology, { peers: ["A"], gatehouse: { label: `fulljoin-${topology.name}` } });
    before(() => {
      ({ lb } = suite);
      hsA = suite.peer("A");
      ghName = lb.serverName;
      admin = lb.admin;
    });

    const logOf = (peer: SynapsePeer) => readFileSync(peer.logFile(), "utf8");

    test("a restricted v10 room of 12 members: the second Synapse user's join is a full send_join, answered and applied on both sides", async () => {
      const creator = `@admin:${ghName}`;
      const space = await admin("POST", "/rooms", { creator, room_version: "10", join_rule: "public", name: "full-join space" });
      assert.equal(space.status, 200, JSON.stringify(space.body));
      const spaceId = space.body.room_id as string;
      // Public while Gatehouse's own members join, restricted to the space's members after.
      const room = await admin("POST", "/rooms", { creator, room_version: "10", join_rule: "public", name: "full-join room", power_level_content_override: { invite: 50 } });
      assert.equal(room.status, 200, JSON.stringify(room.body));
      const roomId = room.body.room_id as string;
      const members = [creator];
      for (let i = 1; i <= 10; i++) {
        const userId = `@local${i}.${Date.now().toString(36)}:${ghName}`;
        const j = await admin("POST", `/rooms/${enc(roomId)}/join`, { user_id: userId });
        assert.equal(j.status, 200, JSON.stringify(j.body));
        members.push(userId);
      }
      const rules = await admin("PUT", `/rooms/${enc(roomId)}/state/m.room.join_rules/`, {
        content: { join_rule: "restricted", allow: [{ type: "m.room_membership", room_id: spaceId }] },
      });
      assert.equal(rules.status, 200, JSON.stringify(rules.body));
      const tag = topology.name.replace(/\W/g, "");

      // The first Synapse user: S, then R (its server is in neither: partial-state joins).
      const first = await hsA.user(`fullfirst${tag}`);
      assert.equal((await first.join(spaceId, ghName)).status, 200);
      const j1 = await first.join(roomId, ghName);
      assert.equal(j1.status, 200, `first join: ${JSON.stringify(j1.body)}`);
      await waitFor(`Synapse to resync ${roomId}`, () => logOf(hsA).includes(`State resync complete for ${roomId}`), 60_000, 250);
      await waitFor(`Synapse to resync ${spaceId}`, () => logOf(hsA).includes(`State resync complete for ${spaceId}`), 60_000, 250);

      // The second: S (its server is in S now: a local join Synapse sends over /send), then R.
      const second = await hsA.user(`fullsecond${tag}`);
      assert.equal((await second.join(spaceId, ghName)).status, 200);
      await waitFor("the second user in the space on Gatehouse", async () => (await admin("GET", `/rooms/${enc(spaceId)}/members`)).body.members?.[second.userId] === "join", 30_000, 250);
      const j2 = await second.join(roomId, ghName);
      assert.equal(j2.status, 200, `second join: ${JSON.stringify(j2.body)}`);

      // It was a remote join with full state: a send_join to Gatehouse for R with
      // omit_members=false (Synapse's query; Synapse's client encodes "!" too).
      const path = `/_matrix/federation/v2/send_join/${enc(roomId).replace(/!/g, "%21")}/`;
      const sendJoins = logOf(hsA)
        .split("\n")
        .filter((l) => l.includes(path) && l.includes("Completed request: 200"));
      assert.ok(sendJoins.some((l) => l.includes("omit_members=true")), `the first join was not a partial-state one:\n${sendJoins.join("\n")}`);
      assert.ok(
        sendJoins.some((l) => !l.includes("omit_members=true")),
        `no full send_join in Synapse's log for ${roomId}:\n${sendJoins.join("\n")}`,
      );

      const gm = await admin("GET", `/rooms/${enc(roomId)}/members`);
      assert.equal(gm.body.members[second.userId], "join");
      const jm = await second.call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/joined_members`);
      assert.equal(jm.status, 200, JSON.stringify(jm.body));
      assert.deepEqual(Object.keys(jm.body.joined).sort(), [...members, first.userId, second.userId].sort());
      const diff = stateDiff(await synapseState(second, roomId), await gatehouseState(admin, roomId), ["Synapse", "Gatehouse"]);
      assert.deepEqual(diff, []);
    });
  });
}
