/**
 * Interop, a fork made on purpose: federation between Gatehouse and Synapse B is cut (iptables in
 * the interop network namespace refuses both federation listeners), each side sets conflicting
 * state on its own branch, in an order chosen so that the event that arrives at Gatehouse last
 * (Synapse B's, after the cut heals) is not the one arrival order would pick — or is the winner
 * only by a rule other than arrival. Then the cut heals, each server receives the other's branch,
 * and Gatehouse must end with the state Synapse ends with, key by key; both must match what state
 * resolution says (mainline, then origin_server_ts, then event ID; power checked in order).
 *
 * Synapse B keeps what it could not send in its per-destination queue (its retry interval is
 * seconds here, below the one-hour "catch-up" threshold) and sends it in order once a request from
 * Gatehouse (the sender's retry) tells it Gatehouse is back.
 *
 * Run: npm run test:interop (root). Synapse peer `sfB` (IP literals) / `sfnB` (named: hs-b.test,
 * reached by SRV; certificates verified).
 */
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import type { AdminCall, LoopbackGatehouse } from "../../src/dev/loopback.js";
import { SynapsePeer, SynapseUser, waitFor } from "../support/synapse.js";
import { topologies, NAMED } from "../support/topology.js";
import { useInteropSuite } from "../support/interop-suite.js";
import { gatehouseState, logOffset, NetCut, netCutUnavailable, readSynapseLog, stateDiff, synapseState, type StateIds } from "../support/interop-state.js";

const enc = encodeURIComponent;

/** A step on one side of the cut: G = Gatehouse (admin API), B = Synapse B (client API). */
type Step =
  | { side: "G" | "B"; set: "topic"; topic: string }
  /** Power levels with a harmless change (a custom event type's level), so this side's later events sit further down the mainline. */
  | { side: "G" | "B"; set: "levels" }
  /** Gatehouse's creator takes the Synapse moderator's power away. */
  | { side: "G"; set: "demote-b" }
  /** Gatehouse's moderator bans a user of Synapse B who never joined. */
  | { side: "G"; set: "ban-victim" }
  /** Synapse B's moderator invites that user (a local invite on Synapse B: no federation needed). */
  | { side: "B"; set: "invite-victim" };

interface ForkCase {
  name: string;
  why: string;
  /** Run in this order during the cut (so origin_server_ts grows along the list). */
  steps: Step[];
  /** The topic every server must end with. */
  topic: string;
  /** Whether Synapse's moderator keeps its power (else 0 afterwards). */
  bKeepsPower: boolean;
  /** The Synapse moderator's power level (default 100). */
  bPower?: number;
  /** The membership Synapse B's victim user ends with, when the case touches it. */
  victim?: string;
  /** B's events Gatehouse soft-fails on arrival (by their step index): they fail against its current state. */
  softFailedAtG?: number[];
}

const CASES: ForkCase[] = [
  {
    name: "newer topic from B arrives last and wins",
    why: "same mainline position: origin_server_ts orders them and the newer is applied last; here arrival order agrees",
    steps: [
      { side: "G", set: "topic", topic: "G, older" },
      { side: "B", set: "topic", topic: "B, newer" },
    ],
    topic: "B, newer",
    bKeepsPower: true,
  },
  {
    name: "older topic from B arrives last and loses",
    why: "the issue's split: arrival order would keep B's (it comes last), resolution orders by origin_server_ts and keeps Gatehouse's newer topic",
    steps: [
      { side: "B", set: "topic", topic: "B, older" },
      { side: "G", set: "topic", topic: "G, newer" },
    ],
    topic: "G, newer",
    bKeepsPower: true,
  },
  {
    name: "mainline beats origin_server_ts: Gatehouse's older topic on newer power levels wins over B's newer topic",
    why: "G's topic cites G's power levels, later on the resolved mainline than B's topic's; mainline position orders before the timestamp, so B's newer topic (arriving last) loses",
    steps: [
      { side: "G", set: "levels" },
      { side: "G", set: "topic", topic: "G, older, later mainline" },
      { side: "B", set: "topic", topic: "B, newer, earlier mainline" },
    ],
    topic: "G, older, later mainline",
    bKeepsPower: true,
  },
  {
    name: "mainline from B's side: B's older topic on B's newer power levels wins over Gatehouse's newer topic",
    why: "both sides changed the levels; the resolved levels are the one ordered last among them (power ordering: same power, then origin_server_ts); a topic citing them wins over one citing the older levels",
    steps: [
      { side: "G", set: "levels" },
      { side: "B", set: "levels" },
      { side: "B", set: "topic", topic: "B, older, later mainline" },
      { side: "G", set: "topic", topic: "G, newer, earlier mainline" },
    ],
    topic: "B, older, later mainline",
    bKeepsPower: true,
  },
  {
    name: "power: B's topic on its branch loses once Gatehouse's creator demotes B",
    why: "power events resolve first; replayed on the resolved levels, B's topic (allowed on its own branch) fails the auth rules and the older topic stays — Gatehouse soft-fails it on arrival",
    steps: [
      { side: "G", set: "demote-b" },
      { side: "B", set: "topic", topic: "B, after being demoted elsewhere" },
    ],
    topic: "before the cut",
    bKeepsPower: false,
    softFailedAtG: [1],
    // Below the creator's 100 in v10: a power level may only be lowered by someone above it.
    bPower: 99,
  },
  {
    name: "a ban beats a newer invite of the same user: power events first",
    why: "the ban is a power event and resolves before the (non-power) invite, which then fails against the ban; by timestamp alone the invite, newer and arriving last, would win",
    steps: [
      { side: "G", set: "ban-victim" },
      { side: "B", set: "invite-victim" },
    ],
    topic: "before the cut",
    bKeepsPower: true,
    victim: "ban",
    softFailedAtG: [1],
  },
];

for (const topology of topologies("sf")) {
const unavailable = topology.unavailable() ?? netCutUnavailable();

describe(`interop (${topology.name}): a fork between Gatehouse and Synapse with arrival order against resolution order`, { skip: unavailable ?? false }, () => {
  let lb: LoopbackGatehouse;
  let ghName: string;
  let hsB: SynapsePeer;
  let admin: AdminCall;
  let modB: SynapseUser;
  let victim: SynapseUser;
  let cut: NetCut;

  // Retries at most 1 s apart: the outage is short and the heal should be seen soon.
  const suite = useInteropSuite(topology, {
    peers: ["B"],
    gatehouse: { label: `interop-fork-${topology.name}`, env: { GATEHOUSE_SENDER_BACKOFF_INITIAL_MS: "100", GATEHOUSE_SENDER_BACKOFF_MAX_MS: "1000" } },
  });
  before(async () => {
    ({ lb } = suite);
    hsB = suite.peer("B");
    ghName = lb.serverName;
    admin = lb.admin;
    modB = await hsB.user("forkmodb");
    victim = await hsB.user("forkvictim");
    const gate = topology.name === "named" ? { address: NAMED.gate.address, port: NAMED.gate.port } : { address: "127.0.0.1", port: Number(ghName.split(":").pop()) };
    cut = new NetCut([gate, { address: hsB.named?.federationAddress ?? "127.0.0.1", port: hsB.federationPort }]);
  });

  after(() => cut?.heal());

  /** A room for `c`, both moderators joined, both servers agreeing on its state. */
  async function roomFor(version: string, c: ForkCase): Promise<{ roomId: string; creator: string; modG: string; bPower: number }> {
    const creator = `@admin:${ghName}`;
    const modG = `@forkmodg:${ghName}`;
    const bPower = c.bPower ?? 100;
    const users: Record<string, number> = { [modG]: 100, [modB.userId]: bPower, ...(version === "12" ? {} : { [creator]: 100 }) };
    const created = await admin("POST", "/rooms", {
      creator,
      room_version: version,
      join_rule: "public",
      name: `fork v${version}: ${c.name}`,
      topic: "before the cut",
      power_level_content_override: { users },
    });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    const roomId = created.body.room_id as string;
    assert.equal((await admin("POST", `/rooms/${enc(roomId)}/join`, { user_id: modG })).status, 200);
    const j = await modB.join(roomId, ghName);
    assert.equal(j.status, 200, `join: ${JSON.stringify(j.body)}`);
    await waitFor("Synapse B to see Gatehouse's moderator joined", async () => (await modB.state(roomId, "m.room.member", modG)).body?.membership === "join");
    await waitFor("both servers to agree before the cut", async () => stateDiff(await gatehouseState(admin, roomId), await synapseState(modB, roomId), ["G", "B"]).length === 0);
    return { roomId, creator, modG, bPower };
  }

  /** Runs `c`'s steps in order (during the cut); the events made, in order. */
  async function runSteps(c: ForkCase, room: { roomId: string; creator: string; modG: string }): Promise<{ side: "G" | "B"; eventId: string }[]> {
    const { roomId, creator, modG } = room;
    const made: { side: "G" | "B"; eventId: string }[] = [];
    for (const s of c.steps) {
      let r: { status: number; body: any };
      if (s.set === "ban-victim") {
        r = await admin("POST", `/rooms/${enc(roomId)}/ban`, { sender: modG, user_id: victim.userId, reason: "fork" });
      } else if (s.set === "invite-victim") {
        r = await modB.call("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/invite`, { user_id: victim.userId });
        // Synapse answers an invite with {}: its event ID is in B's state.
        if (r.status === 200) r = { status: 200, body: { event_id: (await synapseState(modB, roomId)).get(`m.room.member|${victim.userId}`) } };
      } else if (s.side === "G") {
        if (s.set === "topic") r = await admin("PUT", `/rooms/${enc(roomId)}/state/m.room.topic`, { sender: modG, content: { topic: s.topic } });
        else {
          const pl = (await admin("GET", `/rooms/${enc(roomId)}/state/m.room.power_levels`)).body;
          const content = s.set === "levels" ? { ...pl, events: { ...pl.events, "org.gatehouse.fork.g": 1 } } : { ...pl, users: { ...pl.users, [modB.userId]: 0 } };
          r = await admin("PUT", `/rooms/${enc(roomId)}/state/m.room.power_levels`, { sender: s.set === "demote-b" ? creator : modG, content });
        }
      } else if (s.set === "topic") {
        r = await modB.call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.topic/`, { topic: s.topic });
      } else {
        const pl = (await modB.state(roomId, "m.room.power_levels")).body;
        r = await modB.call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.power_levels/`, { ...pl, events: { ...pl.events, "org.gatehouse.fork.b": 1 } });
      }
      assert.equal(r.status, 200, `${s.side} ${s.set}: ${JSON.stringify(r.body)}`);
      assert.equal(typeof r.body.event_id, "string");
      made.push({ side: s.side, eventId: r.body.event_id });
      // origin_server_ts has millisecond resolution: keep the steps' timestamps apart.
      const at = Date.now();
      await waitFor("the clock to move on", () => Date.now() > at + 2, 1000, 1);
    }
    return made;
  }

  const onOtherSide = (roomId: string, m: { side: "G" | "B"; eventId: string }) =>
    m.side === "B" ? admin("GET", `/rooms/${enc(roomId)}/events/${enc(m.eventId)}`) : modB.call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/event/${enc(m.eventId)}`);

  // One cut per room version: every case in a room of its own, their steps during the same cut
  // (Synapse's first failed send to Gatehouse waits about 4 s before its own retry, whatever the
  // length of the cut), one heal, then each case is checked as a subtest.
  for (const version of ["10", "12"]) {
    test(`room v${version}: ${CASES.length} forks, one room each, healed together`, async (t) => {
      const rooms = await Promise.all(CASES.map((c) => roomFor(version, c)));
      const log = { file: hsB.logFile(), offset: logOffset(hsB.logFile()) };
      const tCut = Date.now();
      cut.cut();
      let made: { side: "G" | "B"; eventId: string }[][];
      try {
        made = await Promise.all(CASES.map((c, i) => runSteps(c, rooms[i]!)));
        // The forks exist: neither side has the other's events yet.
        for (const [i, list] of made.entries())
          for (const m of list) assert.equal((await onOtherSide(rooms[i]!.roomId, m)).status, 404, `${m.side}'s event did not cross the cut (${CASES[i]!.name})`);
      } finally {
        cut.heal();
      }
      const tHeal = Date.now();

      // Quiescence: in every room, both branches on both sides and the same state twice in a row.
      const last = new Map<string, { g: StateIds; b: StateIds }>();
      const agreedBefore = new Set<string>();
      try {
        await waitFor(
          "Gatehouse and Synapse B to hold both branches and show the same state in every room",
          async () => {
            let settled = true;
            for (const [i, { roomId }] of rooms.entries()) {
              for (const m of made[i]!) if ((await onOtherSide(roomId, m)).status !== 200) return false;
              const [g, b] = await Promise.all([gatehouseState(admin, roomId), synapseState(modB, roomId)]);
              last.set(roomId, { g, b });
              const agree = stateDiff(g, b, ["G", "B"]).length === 0;
              if (!agree || !agreedBefore.has(roomId)) settled = false;
              if (agree) agreedBefore.add(roomId);
              else agreedBefore.delete(roomId);
            }
            return settled;
          },
          60_000,
          200,
        );
      } catch (e) {
        for (const [i, { roomId }] of rooms.entries()) {
          const l = last.get(roomId);
          const diff = l ? stateDiff(l.g, l.b, ["G", "B"]) : [];
          if (diff.length) console.log(`# ${CASES[i]!.name}: state differs:\n#   ${diff.join("\n#   ")}`);
        }
        throw e;
      }
      const tConverged = Date.now();
      const seen = readSynapseLog(log.file, log.offset);
      console.log(
        `# v${version}: ${CASES.length} forks made in ${tHeal - tCut} ms, agreed ${tConverged - tHeal} ms after the heal; Synapse B refused ${seen.refused.length} events` +
          (seen.refused.length ? `: ${seen.refused.map((l) => l.replace(/^.* - (WARNING|ERROR) - /, "")).join(" | ")}` : ""),
      );

      for (const [i, c] of CASES.entries()) {
        await t.test(c.name, async () => {
          const { roomId, bPower } = rooms[i]!;
          const topicG = (await admin("GET", `/rooms/${enc(roomId)}/state/m.room.topic`)).body.topic;
          const topicB = (await modB.state(roomId, "m.room.topic")).body.topic;
          assert.equal(topicB, c.topic, `Synapse ends on the topic resolution picks (${c.why})`);
          assert.equal(topicG, c.topic, `Gatehouse ends as Synapse does (${c.why})`);
          const power = (await admin("GET", `/rooms/${enc(roomId)}/state/m.room.power_levels`)).body.users[modB.userId];
          assert.equal(power, c.bKeepsPower ? bPower : 0, "B's power afterwards");
          if (c.victim) {
            assert.equal((await modB.state(roomId, "m.room.member", victim.userId)).body.membership, c.victim, "the victim's membership on Synapse");
            assert.equal((await admin("GET", `/rooms/${enc(roomId)}/state/m.room.member/${enc(victim.userId)}`)).body.membership, c.victim, "on Gatehouse");
          }
          // Gatehouse checked B's late events against its current state (spec step 6) as they came.
          for (const k of c.softFailedAtG ?? []) {
            const ev = await admin("GET", `/rooms/${enc(roomId)}/events/${enc(made[i]![k]!.eventId)}`);
            assert.equal(ev.body.gatehouse_status, "soft_failed", `step ${k} soft-failed at Gatehouse: ${JSON.stringify(ev.body)}`);
          }
          console.log(`# v${version} ${c.name}: both end on "${topicG}"`);
        });
      }
    });
  }

  // Synapse keeps unsent PDUs in memory only. After a restart (or an outage long enough for a
  // retry interval over an hour) it "catches up" a destination by sending only its newest event
  // in each room; the receiver must fetch the events between (get_missing_events), as Synapse
  // does on its side.
  test("Synapse B restarts during the cut and catches up with its newest event only: Gatehouse fetches the gap and ends as Synapse does", async () => {
    const c: ForkCase = {
      name: "catch-up after a restart",
      why: "B's levels and topic: the topic cites B's levels, later on the resolved mainline",
      steps: [
        { side: "G", set: "levels" },
        { side: "B", set: "levels" },
        { side: "B", set: "topic", topic: "B, older, later mainline" },
        { side: "G", set: "topic", topic: "G, newer, earlier mainline" },
      ],
      topic: "B, older, later mainline",
      bKeepsPower: true,
    };
    const rooms = await Promise.all(["10", "12"].map((v) => roomFor(v, c)));
    cut.cut();
    let made: { side: "G" | "B"; eventId: string }[][];
    try {
      made = await Promise.all(rooms.map((r) => runSteps(c, r)));
      hsB.stop();
    } finally {
      cut.heal();
    }
    hsB.start();
    try {
      await waitFor(
        "Gatehouse and Synapse B to hold both branches and show the same state",
        async () => {
          for (const [i, { roomId }] of rooms.entries()) {
            for (const m of made[i]!) if ((await onOtherSide(roomId, m)).status !== 200) return false;
            if (stateDiff(await gatehouseState(admin, roomId), await synapseState(modB, roomId), ["G", "B"]).length > 0) return false;
          }
          return true;
        },
        60_000,
        250,
      );
    } catch (e) {
      for (const { roomId } of rooms) {
        const missing = [];
        for (const [i, r] of rooms.entries()) if (r.roomId === roomId) for (const m of made[i]!) if ((await onOtherSide(roomId, m)).status !== 200) missing.push(`${m.side}:${m.eventId}`);
        console.log(`# ${roomId}: not across: ${missing.join(", ") || "none"}; differs: ${stateDiff(await gatehouseState(admin, roomId), await synapseState(modB, roomId), ["G", "B"]).join("; ")}`);
      }
      throw e;
    }
    for (const { roomId } of rooms) {
      assert.equal((await admin("GET", `/rooms/${enc(roomId)}/state/m.room.topic`)).body.topic, c.topic);
      assert.equal((await modB.state(roomId, "m.room.topic")).body.topic, c.topic);
    }
  });
});
}
