/**
 * Property test with Synapse as the oracle: random small forked rooms (test/support/forked-rooms.ts)
 * are resolved by Gatehouse's state resolution and by Synapse's own synapse.state.v2, in the
 * Synapse peers chroot (test/support/synapse-state-res.ts), and the answers must be equal. Room
 * versions 10 (v2) and 12 (v2.1). Synapse also checks that it computes the same event IDs and
 * that every generated event passes its auth rules against its own auth events, so the rooms
 * are ones Synapse would accept.
 *
 * Skips, saying why, when not root or the chroot is absent. GATEHOUSE_STATE_RES_ORACLE_SEED /
 * _CASES choose other rooms.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { getRoomVersion } from "../../src/protocol/room-versions.js";
import { resolveState } from "../../src/protocol/state-res/index.js";
import { makeForkedRoom, type ForkedRoom } from "../support/forked-rooms.js";
import { forkOf } from "../support/state-fork.js";
import { resolveWithSynapse, synapseOracleSkipReason, triples } from "../support/synapse-state-res.js";

const SEED = Number(process.env.GATEHOUSE_STATE_RES_ORACLE_SEED ?? 1);
const CASES = Number(process.env.GATEHOUSE_STATE_RES_ORACLE_CASES ?? 150);

const reason = synapseOracleSkipReason();
if (reason) console.log(`# state-res oracle skipped: ${reason}`);

test(`state resolution agrees with Synapse's synapse.state.v2 on ${CASES} random forked rooms × room versions 10 and 12 (seed ${SEED})`, { skip: reason ?? false }, async () => {
  const rooms: ForkedRoom[] = [];
  for (let i = 0; i < CASES; i++) {
    for (const v of ["10", "12"]) rooms.push(await makeForkedRoom(getRoomVersion(v)!, SEED * 100_003 + i));
  }
  const ours = [];
  const forked = [];
  for (const room of rooms) {
    const events = new Map(room.events.map((e) => [e.eventId, e.pdu] as const));
    const input = {
      roomVersion: room.roomVersion,
      roomId: room.roomId,
      stateSets: room.stateSets,
      fetchEvents: (ids: readonly string[]) => new Map(ids.filter((id) => events.has(id)).map((id) => [id, events.get(id)!] as const)),
    };
    ours.push(await resolveState(input));
    // As room-state.ts resolves forks of state groups: a shared base and a delta per set.
    forked.push(await resolveState({ ...input, fork: await forkOf(input, { moveToDeltas: 0.25, seed: room.seed }) }));
  }
  const synapse = resolveWithSynapse(rooms.map((r) => ({ roomVersion: r.roomVersion.id, roomId: r.roomId, events: r.events, stateSets: r.stateSets })));
  assert.equal(synapse.length, rooms.length);
  let conflicted = 0;
  for (let i = 0; i < rooms.length; i++) {
    const room = rooms[i]!;
    const where = `room seed ${room.seed}, v${room.roomVersion.id}`;
    assert.deepEqual(synapse[i]!.problems, [], `${where}: Synapse would not accept the generated room`);
    if (new Set(room.stateSets.map((s) => JSON.stringify(triples(s)))).size > 1) conflicted++;
    assert.deepEqual(triples(ours[i]!), synapse[i]!.resolved, `${where}: resolved state differs from Synapse's`);
    assert.deepEqual(triples(forked[i]!), synapse[i]!.resolved, `${where}: resolved from a fork (base + deltas), the state differs from Synapse's`);
  }
  // The generator must produce real conflicts, or the test proves little.
  assert.ok(conflicted > rooms.length * 0.8, `only ${conflicted} of ${rooms.length} rooms had differing state sets`);
  console.log(`# state-res oracle: ${rooms.length} rooms (${conflicted} with conflicting state sets) agree with Synapse`);
});
