/**
 * Interop with a real Synapse 1.160: a Synapse user joins a room Gatehouse hosts, and Synapse,
 * whose server is not in the room yet, asks send_join with omit_members=true (a partial-state
 * join, "faster joins"). Gatehouse answers without the members' events (but the heroes' in a
 * nameless room); Synapse completes the join at once, then resyncs the full state in the
 * background from Gatehouse (/state_ids, /state or /event) and clears its partial-state flag.
 * Both sides must then hold the same state, every member included.
 *
 * Evidence that the join was partial: Synapse logs "Syncing state for room R via S" and "State
 * resync complete for R" only for partial-state rooms (handlers/federation.py).
 *
 * Run: npm run test:interop -- partial-join (root). Both topologies (test/support/topology.ts).
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

  describe(`interop (${topology.name}): a Synapse user joins a Gatehouse room with partial state`, { skip: unavailable ?? false }, () => {
    let lb: LoopbackGatehouse;
    let ghName: string;
    let hsA: SynapsePeer;
    let admin: AdminCall;
    const enc = encodeURIComponent;

    const suite = useInteropSuite(topology, { peers: ["A"], gatehouse: { label: `partial-${topology.name}` } });
    before(() => {
      ({ lb } = suite);
      hsA = suite.peer("A");
      ghName = lb.serverName;
      admin = lb.admin;
    });

    /** A public v12 room with `locals` local members besides the creator; `name` when given. */
    async function roomWithMembers(locals: number, name?: string): Promise<{ roomId: string; members: string[] }> {
      const creator = `@admin:${ghName}`;
      const r = await admin("POST", "/rooms", { creator, room_version: "12", join_rule: "public", ...(name ? { name } : {}) });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const roomId = r.body.room_id as string;
      const members = [creator];
      for (let i = 1; i <= locals; i++) {
        const userId = `@local${i}.${Date.now().toString(36)}:${ghName}`;
        const j = await admin("POST", `/rooms/${enc(roomId)}/join`, { user_id: userId });
        assert.equal(j.status, 200, JSON.stringify(j.body));
        members.push(userId);
      }
      return { roomId, members };
    }

    const logOf = (peer: SynapsePeer) => readFileSync(peer.logFile(), "utf8");

    for (const name of [undefined, "partial lobby"]) {
      test(`${name ? "a named" : "a nameless"} room of 9 members: Synapse joins with partial state, resyncs, and both hold the same state`, async () => {
        const { roomId, members } = await roomWithMembers(8, name);
        const user = await hsA.user(`partial${name ? "named" : "nameless"}${topology.name.replace(/\W/g, "")}`);
        const joined = await user.join(roomId, ghName);
        assert.equal(joined.status, 200, `join: ${JSON.stringify(joined.body)}`);
        // The join took effect on Gatehouse at once (send_join answered).
        const gm = await admin("GET", `/rooms/${enc(roomId)}/members`);
        assert.equal(gm.body.members[user.userId], "join");

        // Synapse started a partial-state resync from Gatehouse and finished it.
        await waitFor(`Synapse to resync ${roomId} from ${ghName}`, () => logOf(hsA).includes(`State resync complete for ${roomId}`), 60_000, 250);
        assert.ok(logOf(hsA).includes(`Syncing state for room ${roomId} via ${ghName}`), "Synapse did not treat the join as a partial-state join");

        // Full state now on Synapse: every member, and the same events as Gatehouse's.
        const jm = await user.call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/joined_members`);
        assert.equal(jm.status, 200, JSON.stringify(jm.body));
        assert.deepEqual(Object.keys(jm.body.joined).sort(), [...members, user.userId].sort());
        const diff = stateDiff(await synapseState(user, roomId), await gatehouseState(admin, roomId), ["Synapse", "Gatehouse"]);
        assert.deepEqual(diff, []);

        // And the room lives on: a member Gatehouse adds after the resync reaches Synapse.
        const late = `@late.${Date.now().toString(36)}:${ghName}`;
        assert.equal((await admin("POST", `/rooms/${enc(roomId)}/join`, { user_id: late })).status, 200);
        await waitFor("the late member on Synapse", async () => (await user.state(roomId, "m.room.member", late)).body?.membership === "join", 30_000, 250);
      });
    }
  });
}
