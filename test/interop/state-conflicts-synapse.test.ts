/**
 * Interop, state resolution under live concurrency: a Gatehouse-hosted room with three moderators
 * of power 100 — one on Synapse A, one on Synapse B, one Gatehouse-local (admin API) — who set the
 * topic, the power levels and a ban on the same user at the same moment, several rounds in a row.
 * Each server builds its events on its own extremities, so the room forks every round, and every
 * server resolves the forks itself (state resolution v2 in room version 10, v2.1 in 12). After
 * quiescence all three servers must show the same current state, key by key (event IDs), through
 * their own APIs: Synapse's client API and Gatehouse's admin API.
 *
 * Run: npm run test:interop (root). Synapse peers `srA`/`srB` (IP literals) and `srnA`/`srnB`
 * (named: hs-a.test by .well-known, hs-b.test by SRV; certificates verified).
 */
import { describe, test, before } from "node:test";
import assert from "node:assert/strict";
import type { AdminCall, LoopbackGatehouse } from "../../src/dev/loopback.js";
import { SynapsePeer, SynapseUser, waitFor } from "../support/synapse.js";
import { topologies } from "../support/topology.js";
import { useInteropSuite } from "../support/interop-suite.js";
import { gatehouseState, logOffset, readSynapseLog, stateDiff, synapseState, type StateIds } from "../support/interop-state.js";

/** Rounds per room version (GATEHOUSE_INTEROP_ROUNDS overrides it for a longer local run). */
const ROUNDS = Number(process.env.GATEHOUSE_INTEROP_ROUNDS ?? 4);
const enc = encodeURIComponent;

for (const topology of topologies("sr")) {
const unavailable = topology.unavailable();

describe(`interop (${topology.name}): concurrent conflicting state from two Synapses and Gatehouse`, { skip: unavailable ?? false }, () => {
  let lb: LoopbackGatehouse;
  let ghName: string;
  let hsA: SynapsePeer;
  let hsB: SynapsePeer;
  let admin: AdminCall;
  let modA: SynapseUser;
  let modB: SynapseUser;

  const suite = useInteropSuite(topology, { peers: ["A", "B"], gatehouse: { label: `interop-stateres-${topology.name}` } });
  before(async () => {
    ({ lb } = suite);
    hsA = suite.peer("A");
    hsB = suite.peer("B");
    ghName = lb.serverName;
    admin = lb.admin;
    modA = await hsA.user("stateresmoda");
    modB = await hsB.user("stateresmodb");
  });

  for (const version of ["10", "12"]) {
    test(`room v${version}: topics, power levels and bans set at the same moment, ${ROUNDS} rounds: the three servers end on the same state`, async () => {
      const creator = `@admin:${ghName}`;
      const modG = `@stateresmodg:${ghName}`;
      // v12: the creator has unlimited power and must not be listed in `users`.
      const users: Record<string, number> = { [modG]: 100, [modA.userId]: 100, [modB.userId]: 100, ...(version === "12" ? {} : { [creator]: 100 }) };
      const created = await admin("POST", "/rooms", {
        creator,
        room_version: version,
        join_rule: "public",
        name: `concurrent state v${version}`,
        power_level_content_override: { users },
      });
      assert.equal(created.status, 200, JSON.stringify(created.body));
      const roomId = created.body.room_id as string;
      assert.equal((await admin("POST", `/rooms/${enc(roomId)}/join`, { user_id: modG })).status, 200);
      for (const m of [modA, modB]) {
        const j = await m.join(roomId, ghName);
        assert.equal(j.status, 200, `${m.userId} join: ${JSON.stringify(j.body)}`);
      }
      // Everyone knows everyone before the rounds start: each server sends to the other two.
      for (const m of [modA, modB]) {
        await waitFor(`${m.userId}'s server to see all three moderators joined`, async () => {
          for (const u of [modG, modA.userId, modB.userId]) if ((await m.state(roomId, "m.room.member", u)).body?.membership !== "join") return false;
          return true;
        });
      }

      const logs = [hsA, hsB].map((hs) => ({ hs, file: hs.logFile(), offset: logOffset(hs.logFile()) }));
      const sent: string[] = [];
      const ok = (what: string) => (r: { status: number; body: any }) => {
        assert.equal(r.status, 200, `${what}: ${JSON.stringify(r.body)}`);
        if (typeof r.body?.event_id === "string") sent.push(r.body.event_id); // (Synapse answers a ban with {})
        return r;
      };
      for (let round = 1; round <= ROUNDS; round++) {
        const victim = `@victim${round}:${ghName}`;
        // Power levels: each moderator changes its own entry from the levels its server shows now.
        const [plA, plB, plG] = await Promise.all([
          modA.state(roomId, "m.room.power_levels").then((r) => r.body),
          modB.state(roomId, "m.room.power_levels").then((r) => r.body),
          admin("GET", `/rooms/${enc(roomId)}/state/m.room.power_levels`).then((r) => r.body),
        ]);
        const bump = (pl: any, who: string) => ({ ...pl, events: { ...pl.events, [`org.gatehouse.interop.${who}`]: round } });
        await Promise.all([
          modA.call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.topic/`, { topic: `A round ${round}` }).then(ok("A topic")),
          modB.call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.topic/`, { topic: `B round ${round}` }).then(ok("B topic")),
          admin("PUT", `/rooms/${enc(roomId)}/state/m.room.topic`, { sender: modG, content: { topic: `G round ${round}` } }).then(ok("G topic")),
          modA.call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.power_levels/`, bump(plA, "a")).then(ok("A power levels")),
          modB.call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.power_levels/`, bump(plB, "b")).then(ok("B power levels")),
          admin("PUT", `/rooms/${enc(roomId)}/state/m.room.power_levels`, { sender: modG, content: bump(plG, "g") }).then(ok("G power levels")),
          modA.call("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/ban`, { user_id: victim, reason: `A round ${round}` }).then(ok("A ban")),
          modB.call("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/ban`, { user_id: victim, reason: `B round ${round}` }).then(ok("B ban")),
          admin("POST", `/rooms/${enc(roomId)}/ban`, { sender: modG, user_id: victim, reason: `G round ${round}` }).then(ok("G ban")),
        ]);
      }

      // Quiescence: the three servers show the same state, key by key, twice in a row.
      let last: { g: StateIds; a: StateIds; b: StateIds } | null = null;
      let agreedBefore = false;
      try {
        await waitFor(
          "Gatehouse, Synapse A and Synapse B to show the same room state",
          async () => {
            const [g, a, b] = await Promise.all([gatehouseState(admin, roomId), synapseState(modA, roomId), synapseState(modB, roomId)]);
            last = { g, a, b };
            const agree = stateDiff(g, a, ["G", "A"]).length === 0 && stateDiff(g, b, ["G", "B"]).length === 0;
            const settled = agree && agreedBefore;
            agreedBefore = agree;
            return settled;
          },
          60_000,
          250,
        );
      } catch (e) {
        const l = last as { g: StateIds; a: StateIds; b: StateIds } | null;
        if (l) console.log(`# state differs:\n#   ${[...stateDiff(l.g, l.a, ["G", "A"]), ...stateDiff(l.g, l.b, ["G", "B"])].join("\n#   ")}`);
        throw e;
      }
      const { g } = last!;
      // The rounds did fork the room: events (from any of the three) that merge several extremities.
      const prevCounts = await Promise.all(
        sent.map(async (id) => {
          const r = await admin("GET", `/rooms/${enc(roomId)}/events/${enc(id)}`);
          assert.equal(r.status, 200, `Gatehouse holds ${id}: ${JSON.stringify(r.body)}`);
          return (r.body.prev_events as string[]).length;
        }),
      );
      const merges = prevCounts.filter((n) => n > 1).length;
      assert.ok(merges > 0, "some events merge concurrent branches");
      // Neither Synapse rejected or soft-failed anything it received (from the other Synapse or
      // from Gatehouse); the copies Gatehouse relays of the other Synapse's events are ignored as
      // already seen (or arrive first, and the direct copy is the one ignored).
      const dupes: string[] = [];
      for (const l of logs) {
        const seen = readSynapseLog(l.file, l.offset);
        assert.deepEqual(seen.refused, [], `${l.hs.serverName} refused events`);
        dupes.push(`${l.hs.serverName} ignored ${seen.duplicates} PDUs already seen`);
      }
      // Every round's ban is in the agreed state, and the topic and levels are one of the contenders.
      for (let round = 1; round <= ROUNDS; round++) assert.ok(g.has(`m.room.member|@victim${round}:${ghName}`), `round ${round}'s ban`);
      const topic = (await admin("GET", `/rooms/${enc(roomId)}/state/m.room.topic`)).body.topic as string;
      assert.match(topic, /^[ABG] round \d+$/);
      const pl = (await admin("GET", `/rooms/${enc(roomId)}/state/m.room.power_levels`)).body;
      assert.deepEqual(pl.users, users, "no moderator lost power");
      console.log(
        `# v${version}: ${g.size} state keys agree on all three servers; ${merges} of ${sent.length} events merge branches; topic "${topic}"; ` +
          `levels ${JSON.stringify(Object.entries(pl.events).filter(([k]) => k.startsWith("org.")))}; ${dupes.join(", ")}`,
      );
    });
  }
});
}
