/**
 * The state at a gap get_missing_events leaves (rooms/gap-state.ts, rooms/missing-events.ts), over
 * HTTP with a real Redis and fake remote servers (test/support/fake-host.ts): while Gatehouse was
 * away the room moved on by more than GAP_LIMIT × MAX_GAP_ROUNDS events, a topic change and a new
 * member among them; the new member's next message arrives over /send. get_missing_events brings
 * the newest 50; the oldest of them hangs from an event Gatehouse never gets, so Gatehouse asks the
 * sender for the state there (/state_ids, then /state or /event), checks every event, stores them
 * as outliers, and persists the events on the gap against that state (resolved with its own).
 * Before, a room hosted elsewhere refused the message (and every later one of that server), and a
 * hosted room accepted it on the wrong state (the topic change and the join never arrived).
 *
 * Hostile or silent senders must write nothing: a state_ids answer naming an event whose
 * signature fails, a non-state event, an event the auth rules refuse, no create event; a sender
 * that does not answer; a state larger than GATEHOUSE_GAP_STATE_MAX_EVENTS (40 here).
 */
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, ADMIN, FED, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";
import { FakeHost } from "../support/fake-host.js";
import { stateField } from "../../src/store/room-store.js";
import type { Pdu } from "../../src/protocol/pdu.js";
import { GAP_LIMIT, MAX_GAP_ROUNDS, STATE_FALLBACK_BACKOFF_MS } from "../../src/rooms/missing-events.js";

const LIMIT = 40;
const TOPIC = stateField("m.room.topic", "");
const PL = stateField("m.room.power_levels", "");

let gh: TestGatehouse;
let host: RemoteServer;
let other: RemoteServer;

/** Added to the Gatehouse's clock: the backoff tests move time forward instead of waiting. */
let skewMs = 0;

before(async () => {
  gh = await TestGatehouse.start({ name: "gap-state", env: { GATEHOUSE_GAP_STATE_MAX_EVENTS: String(LIMIT) }, clock: () => Date.now() + skewMs });
  host = await RemoteServer.start();
  other = await RemoteServer.start();
});
after(async () => {
  await host.close();
  await other.close();
  await gh.cleanup();
});

const metric = async (outcome: string) => (await gh.gh.metrics.missingEvents.get()).values.find((v) => v.labels.outcome === outcome)?.value ?? 0;
const send = (from: RemoteServer, pdus: Pdu[]) =>
  gh.fed(from, "PUT", `${FED}/v1/send/t${Math.random().toString(36).slice(2)}`, { origin: from.serverName, origin_server_ts: Date.now(), pdus });
const path = (req: { url: string }) => req.url.split("?")[0]!;
const query = (req: { url: string }) => new URLSearchParams(req.url.split("?")[1] ?? "");
const fail503 = (): [number, unknown] => [503, { errcode: "M_UNKNOWN", error: "unavailable" }];

/** What the gap holds, and the events of it a test refers to. */
interface Gap {
  topic: { eventId: string; pdu: Pdu };
  /** The new member's join (rooms hosted elsewhere) or undefined. */
  join?: { eventId: string; pdu: Pdu };
  /** The event sent over /send, and the server that sends it. */
  pdu: { eventId: string; pdu: Pdu };
  from: RemoteServer;
  /** The newest event of the gap get_missing_events does not return (its prev is asked for with /state_ids). */
  farSide: string;
}

/**
 * Builds the gap: 5 messages, a topic change, (elsewhere) carol of `other` joins, `gapJoins`
 * members of the host join, 55 messages; then the PDU (carol's message, or the host's moderator's).
 */
function buildGap(h: FakeHost, sender: string, opts: { carol: boolean; gapJoins: number }): Gap {
  const say = (body: string) => h.build("m.room.message", sender, { msgtype: "m.text", body });
  for (let i = 0; i < 5; i++) say(`before the topic ${i}`);
  const topic = h.build("m.room.topic", sender, { topic: "changed while Gatehouse was away" }, "");
  const carol = h.user("carol", other);
  const join = opts.carol ? h.build("m.room.member", carol, { membership: "join" }, carol) : undefined;
  for (let i = 0; i < opts.gapJoins; i++) {
    const u = h.user(`joiner${i}`);
    h.build("m.room.member", u, { membership: "join" }, u);
  }
  const tail: string[] = [];
  for (let i = 0; i < 55; i++) tail.push(say(`after the topic ${i}`).eventId);
  const pdu = opts.carol ? h.build("m.room.message", carol, { msgtype: "m.text", body: "carol is back" }) : say("the newest");
  // get_missing_events returns the newest GAP_LIMIT × MAX_GAP_ROUNDS events before the PDU.
  const farSide = tail[tail.length - GAP_LIMIT * MAX_GAP_ROUNDS - 1]!;
  return { topic, ...(join ? { join } : {}), pdu, from: opts.carol ? other : h.servers[0]!, farSide };
}

interface HostileCase {
  name: string;
  why: string;
  /** Extra members of the host joined in the gap (the limit case). */
  gapJoins?: number;
  /** Answers the sender gives instead of the truth. */
  override?: (h: FakeHost, gap: Gap) => (req: { method: string; url: string; body: unknown }) => [number, unknown] | null;
}

/** A copy of `pdu` with a signed field changed: its signature no longer verifies. */
const forged = (pdu: Pdu): Pdu => ({ ...pdu, origin_server_ts: pdu.origin_server_ts + 1 });

const HOSTILE: HostileCase[] = [
  {
    name: "an event named by state_ids fails its signature check",
    why: "the topic served by /state and /event has a signed field changed: the whole fallback fails, no outlier is written",
    override: (h, gap) => (req) => {
      if (path(req).startsWith(`${FED}/v1/event/${enc(gap.topic.eventId)}`)) return [200, { origin: h.host.serverName, origin_server_ts: Date.now(), pdus: [forged(gap.topic.pdu)] }];
      if (path(req).startsWith(`${FED}/v1/state/`)) {
        const before = h.stateBefore.get(query(req).get("event_id") ?? "")!;
        const pdus = [...before.values()].map((id) => (id === gap.topic.eventId ? forged(gap.topic.pdu) : h.events.get(id)!));
        return [200, { pdus, auth_chain: h.authChain(before.values()) }];
      }
      return null;
    },
  },
  {
    name: "the sender does not answer",
    why: "get_missing_events, /state_ids, /state and /event all answer 503: nothing is fetched and nothing written",
    override: () => (req) => (path(req).startsWith(`${FED}/v1/`) && !path(req).startsWith(`${FED}/v1/send/`) ? fail503() : null),
  },
  {
    name: "/state_ids does not answer after get_missing_events did",
    why: "the fallback needs the state at the gap: without it the gap is left",
    override: () => (req) => (path(req).startsWith(`${FED}/v1/state_ids/`) ? fail503() : null),
  },
  {
    name: "state_ids names a message as state",
    why: "a non-state event cannot be in a state: refused, nothing written",
    override: (h, gap) => (req) => {
      if (!path(req).startsWith(`${FED}/v1/state_ids/`)) return null;
      const before = h.stateBefore.get(query(req).get("event_id") ?? "")!;
      return [200, { pdu_ids: [...before.values(), gap.farSide], auth_chain_ids: h.authChain(before.values()).map((e) => h.idOf(e)) }];
    },
  },
  {
    name: "state_ids names a state event the auth rules refuse",
    why: "bob (power 0) sets the room name where state_default is 50: the event fails against its own auth events, nothing written",
    override: (h) => {
      const bob = h.user("bob", h.servers[1]);
      const name = h.build("m.room.name", bob, { name: "hijacked" }, "", { apply: false });
      return (req) => {
        if (!path(req).startsWith(`${FED}/v1/state_ids/`)) return null;
        const before = new Map(h.stateBefore.get(query(req).get("event_id") ?? "")!).set(stateField("m.room.name", ""), name.eventId);
        return [200, { pdu_ids: [...before.values()], auth_chain_ids: h.authChain(before.values()).map((e) => h.idOf(e)) }];
      };
    },
  },
  {
    name: "state_ids leaves out the create event",
    why: "a state without the room's create event is not this room's state",
    override: (h) => (req) => {
      if (!path(req).startsWith(`${FED}/v1/state_ids/`)) return null;
      const before = h.stateBefore.get(query(req).get("event_id") ?? "")!;
      const ids = [...before].filter(([k]) => k !== stateField("m.room.create", "")).map(([, id]) => id);
      return [200, { pdu_ids: ids, auth_chain_ids: h.authChain(ids).map((e) => h.idOf(e)) }];
    },
  },
  {
    name: `a state larger than GATEHOUSE_GAP_STATE_MAX_EVENTS (${LIMIT})`,
    why: `${LIMIT + 5} members joined in the gap: the fallback would fetch more than ${LIMIT} events, so it fetches none`,
    gapJoins: LIMIT + 5,
  },
];

describe("a room hosted elsewhere: the state at a gap get_missing_events leaves is taken from the sender", () => {
  for (const versionId of ["10", "12"]) {
    for (const members of [0, 60]) {
      test(`v${versionId}, ${members} members before our join: the new member's message is accepted and the state matches the host's`, async () => {
        const h = await FakeHost.room([host, other], versionId);
        // In a larger room, the few events missing at the gap are fetched one by one (/event);
        // in a small one, most of the state is missing and it comes in one /state answer.
        for (let i = 0; i < members; i++) h.build("m.room.member", h.user(`m${i}`), { membership: "join" }, h.user(`m${i}`));
        const me = gh.local(`_gap${versionId}_${members}`);
        const joined = await gh.admin.post(`${ADMIN}/remote/join`).send({ user_id: me, room_id: h.roomId, via: [host.serverName] });
        assert.equal(joined.status, 200, JSON.stringify(joined.body));
        const ourJoin = h.tip;
        const gap = buildGap(h, h.user("alice"), { carol: true, gapJoins: 0 });
        const taken = await metric("state_taken");
        h.asked.length = 0;

        const res = await send(gap.from, [gap.pdu.pdu]);
        assert.equal(res.status, 200);
        assert.deepEqual(res.body.pdus, { [gap.pdu.eventId]: {} }, `carol's message is accepted: ${JSON.stringify(res.body)}`);

        assert.equal(h.asked.filter((a) => a.includes("/get_missing_events/")).length, MAX_GAP_ROUNDS);
        assert.deepEqual(h.asked.filter((a) => a.includes("/state_ids/")), [`GET ${FED}/v1/state_ids/${enc(h.roomId)}`], "one /state_ids, at the far side of the gap");
        const bulk = h.asked.filter((a) => a.includes("/v1/state/")).length;
        const single = h.asked.filter((a) => a.includes("/v1/event/")).length;
        if (members === 0) assert.equal(bulk, 1, "most of the state is missing: one /state");
        else assert.ok(bulk === 0 && single >= 2 && single < 10, `a few events one by one (/event: ${single})`);
        assert.equal((await metric("state_taken")) - taken, 1, "gatehouse_missing_events_total{outcome=state_taken}");

        const snap = await gh.gh.rooms.snapshot(h.roomId);
        // The current state is the host's: the topic changed in the gap, carol joined.
        assert.deepEqual(new Map(snap.stateIds), h.state, "Gatehouse's current state is the host's");
        assert.equal(snap.state.get(TOPIC)?.content.topic, "changed while Gatehouse was away");
        assert.equal(snap.state.get(stateField("m.room.member", h.user("carol", other)))?.content.membership, "join");
        // Forward extremities: our join (the gap never reached it) and carol's message.
        assert.deepEqual([...snap.extremities].sort(), [ourJoin, gap.pdu.eventId].sort());
        // The events of the gap's far side are outliers: stored for the state, not in the timeline.
        const [topicStream, joinStream, farStream, pduStream] = await gh.store.streamsOf(h.roomId, [gap.topic.eventId, gap.join!.eventId, gap.farSide, gap.pdu.eventId]);
        assert.equal(topicStream, null, "the topic is not a timeline event");
        assert.equal(joinStream, null);
        assert.equal(farStream, null, "the missing prev event is not a timeline event");
        assert.ok(pduStream !== null);
        assert.ok(await gh.store.getEvent(h.roomId, gap.topic.eventId), "the topic is stored (outlier)");
        assert.equal(await gh.store.getEvent(h.roomId, gap.farSide), null, "a non-state prev event is not stored at all");
        assert.equal((await gh.store.eventStatuses(h.roomId, [gap.topic.eventId])).get(gap.topic.eventId), "outlier");

        // The next message of the host, on top of carol's, is on known ground: no fetch.
        h.asked.length = 0;
        const next = h.build("m.room.message", h.user("alice"), { msgtype: "m.text", body: "welcome back" });
        assert.deepEqual((await send(host, [next.pdu])).body.pdus, { [next.eventId]: {} });
        assert.deepEqual(h.asked.filter((a) => a.includes("/_matrix/federation/")), [], "no gap: nothing asked");
      });
    }

    test(`v${versionId}: get_missing_events brings nothing: the state at the PDU's own prev event is taken`, async () => {
      const h = await FakeHost.room([host, other], versionId);
      const me = gh.local(`_pdugap${versionId}`);
      assert.equal((await gh.admin.post(`${ADMIN}/remote/join`).send({ user_id: me, room_id: h.roomId, via: [host.serverName] })).status, 200);
      const ourJoin = h.tip;
      const topic = h.build("m.room.topic", h.user("alice"), { topic: "beyond reach" }, "");
      const lost = h.build("m.room.message", h.user("alice"), { msgtype: "m.text", body: "lost" });
      const pdu = h.build("m.room.message", h.user("alice"), { msgtype: "m.text", body: "on the gap" });
      h.withholdMissing = true;
      try {
        assert.deepEqual((await send(host, [pdu.pdu])).body.pdus, { [pdu.eventId]: {} }, "the PDU is accepted on the state after its prev event");
      } finally {
        h.withholdMissing = false;
      }
      const snap = await gh.gh.rooms.snapshot(h.roomId);
      assert.deepEqual(new Map(snap.stateIds), h.state);
      assert.equal(snap.stateIds.get(TOPIC), topic.eventId);
      assert.deepEqual([...snap.extremities].sort(), [ourJoin, pdu.eventId].sort());
      assert.equal(await gh.store.getEvent(h.roomId, lost.eventId), null, "its non-state prev event is not stored");
    });

    for (const c of HOSTILE) {
      test(`v${versionId}: nothing written when ${c.name}`, async () => {
        const h = await FakeHost.room([host, other], versionId);
        const me = gh.local(`_hostile${Math.random().toString(36).slice(2, 8)}`);
        assert.equal((await gh.admin.post(`${ADMIN}/remote/join`).send({ user_id: me, room_id: h.roomId, via: [host.serverName] })).status, 200);
        const gap = buildGap(h, h.user("alice"), { carol: true, gapJoins: c.gapJoins ?? 0 });
        h.override = c.override?.(h, gap) ?? null;
        const failed = await metric("state_failed");
        await gh.assertNothingWritten(async () => {
          const res = await send(gap.from, [gap.pdu.pdu]);
          assert.equal(res.status, 200);
          assert.match(res.body.pdus[gap.pdu.eventId]?.error ?? "", /are unknown and could not be fetched/, `refused (${c.why}): ${JSON.stringify(res.body)}`);
        });
        assert.equal((await metric("state_failed")) - failed, 1, `gatehouse_missing_events_total{outcome=state_failed} (${c.why})`);
        h.override = null;
      });
    }
  }
});

describe("a sender whose state fallback failed is not asked again at once (backoff)", () => {
  test("v12: the second gap from a sender that does not answer /state_ids costs no fallback (state_backoff); the first was tried and failed; the backoff ends after a minute, then doubles", async () => {
    const h = await FakeHost.room([host, other], "12");
    const me = gh.local(`_backoff${Math.random().toString(36).slice(2, 8)}`);
    assert.equal((await gh.admin.post(`${ADMIN}/remote/join`).send({ user_id: me, room_id: h.roomId, via: [host.serverName] })).status, 200);
    const gap = buildGap(h, h.user("alice"), { carol: true, gapJoins: 0 });
    let stateIdsAsked = 0;
    h.override = (req) => {
      if (!path(req).startsWith(`${FED}/v1/state_ids/`)) return null;
      stateIdsAsked++;
      return fail503();
    };
    const [failed, backoff] = [await metric("state_failed"), await metric("state_backoff")];
    const first = await send(gap.from, [gap.pdu.pdu]);
    assert.match(first.body.pdus[gap.pdu.eventId]?.error ?? "", /are unknown and could not be fetched/);
    assert.ok(stateIdsAsked > 0, "the first gap tried the fallback");
    assert.equal((await metric("state_failed")) - failed, 1);
    // Carol's next message sits on the same gap: within the backoff nothing is asked again.
    const again = h.build("m.room.message", h.user("carol", other), { msgtype: "m.text", body: "carol, again" });
    const asked = stateIdsAsked;
    const second = await gh.assertNothingWritten(() => send(gap.from, [again.pdu]));
    assert.match(second.body.pdus[again.eventId]?.error ?? "", /are unknown and could not be fetched/);
    assert.equal(stateIdsAsked, asked, "no /state_ids during the backoff");
    assert.equal((await metric("state_failed")) - failed, 1, "not tried, so not failed again");
    assert.equal((await metric("state_backoff")) - backoff, 1);

    // The backoff ends: a minute later the fallback is tried again, fails again, and the next
    // backoff is twice as long (2 minutes).
    const message = (body: string) => h.build("m.room.message", h.user("carol", other), { msgtype: "m.text", body }).pdu;
    const attempt = async (body: string) => {
      const before = stateIdsAsked;
      const res = await gh.assertNothingWritten(() => send(gap.from, [message(body)]));
      assert.match(JSON.stringify(res.body), /are unknown and could not be fetched/);
      return stateIdsAsked > before;
    };
    skewMs += STATE_FALLBACK_BACKOFF_MS.first + 1_000;
    assert.equal(await attempt("after one minute"), true, "tried again once the first backoff ended");
    assert.equal((await metric("state_failed")) - failed, 2);
    skewMs += STATE_FALLBACK_BACKOFF_MS.first + 1_000;
    assert.equal(await attempt("one minute after the second failure"), false, "the second backoff is longer than a minute");
    assert.equal((await metric("state_backoff")) - backoff, 2);
    skewMs += STATE_FALLBACK_BACKOFF_MS.first;
    assert.equal(await attempt("two minutes after the second failure"), true, "tried again once the doubled backoff ended");
    assert.equal((await metric("state_failed")) - failed, 3);

    // Once the backoff ended, a sender that answers again has the state at its gap taken.
    skewMs += 4 * STATE_FALLBACK_BACKOFF_MS.first + 1_000;
    h.override = null;
    const taken = await metric("state_taken");
    const healed = await send(gap.from, [message("answered")]);
    assert.deepEqual(Object.values(healed.body.pdus as Record<string, { error?: string }>).filter((r) => r.error), [], JSON.stringify(healed.body));
    assert.equal((await metric("state_taken")) - taken, 1, "the fallback succeeded");
  });
});

describe("a hosted room: the state at a gap is taken from the sender too", () => {
  /** A room Gatehouse hosts where the host server's moderator has power 100, mirrored by a FakeHost. */
  async function hostedRoom(versionId: string): Promise<{ h: FakeHost; mod: string; roomId: string }> {
    const roomId = await gh.createRoom({ room_version: versionId });
    const mod = host.userId(`mod${Math.random().toString(36).slice(2, 8)}`);
    await gh.knockAcceptJoin(host, roomId, mod);
    const g = await gh.graph(roomId);
    const pl = structuredClone(g.state.get(PL)!.content) as { users: Record<string, number> };
    pl.users = { ...pl.users, [mod]: 100 };
    assert.equal((await gh.admin.put(`${ADMIN}/rooms/${enc(roomId)}/state/m.room.power_levels/`).send({ content: pl })).status, 200);
    const timeline = await gh.store.timeline(roomId);
    const events = await Promise.all(timeline.map(async (e) => ({ eventId: e.eventId, pdu: (await gh.store.getEvent(roomId, e.eventId))! })));
    const h = FakeHost.mirror([host], versionId, roomId, events);
    assert.deepEqual((await gh.graph(roomId)).extremities, [h.tip], "a linear room");
    return { h, mod, roomId };
  }

  for (const versionId of ["10", "12"]) {
    test(`v${versionId}: the moderator's topic change in the gap becomes current state`, async () => {
      const { h, mod, roomId } = await hostedRoom(versionId);
      const base = h.tip;
      const gap = buildGap(h, mod, { carol: false, gapJoins: 0 });
      const res = await send(host, [gap.pdu.pdu]);
      assert.deepEqual(res.body.pdus, { [gap.pdu.eventId]: {} }, JSON.stringify(res.body));
      const g = await gh.graph(roomId);
      const differs = [...new Set([...g.stateIds.keys(), ...h.state.keys()])].filter((k) => g.stateIds.get(k) !== h.state.get(k)).map((k) => `${k}: ${g.stateIds.get(k)} / ${h.state.get(k)}`);
      assert.deepEqual(differs, [], "Gatehouse's current state is the sender's");
      assert.equal(g.stateIds.get(TOPIC), gap.topic.eventId);
      assert.deepEqual([...g.extremities].sort(), [base, gap.pdu.eventId].sort());
      assert.equal((await gh.store.streamsOf(roomId, [gap.topic.eventId]))[0], null, "the topic is an outlier");
    });

    test(`v${versionId}: a forged state event: nothing of the fallback is written, the PDU is checked as before`, async () => {
      const { h, mod, roomId } = await hostedRoom(versionId);
      const gap = buildGap(h, mod, { carol: false, gapJoins: 0 });
      h.override = HOSTILE[0]!.override!(h, gap);
      const before = await gh.graph(roomId);
      const known = new Set((await gh.store.timeline(roomId)).map((e) => e.eventId));
      const failed = await metric("state_failed");
      const res = await send(host, [gap.pdu.pdu]);
      h.override = null;
      assert.deepEqual(res.body.pdus, { [gap.pdu.eventId]: {} }, "checked as it is (its auth events are known), as before the fallback existed");
      assert.equal((await metric("state_failed")) - failed, 1);
      assert.equal(await gh.store.getEvent(roomId, gap.topic.eventId), null, "the forged topic is not stored");
      // Of the sender's events Gatehouse did not have, only the PDU is stored: no outlier, and the
      // fetched events hanging from the gap are left out (known ground only).
      const stored: string[] = [];
      for (const id of h.events.keys()) if (!known.has(id) && (await gh.store.getEvent(roomId, id))) stored.push(id);
      assert.deepEqual(stored, [gap.pdu.eventId]);
      assert.equal((await gh.graph(roomId)).stateIds.get(TOPIC), before.stateIds.get(TOPIC), "the topic is unchanged");
    });
  }
});
