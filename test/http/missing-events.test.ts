/**
 * Gaps in a hosted room, over HTTP with a real Redis: a remote server sends over /send only the
 * newest of its events (as Synapse does when it catches up a destination after a restart), so
 * Gatehouse lacks its prev_events or auth_events. Gatehouse asks the origin for the events in
 * between (POST /get_missing_events, in several rounds when the gap is longer than one call) and
 * persists those on known ground first (src/rooms/missing-events.ts, shared with rooms hosted
 * elsewhere, where a gap left refuses the PDU: test/http/rooms-elsewhere.test.ts).
 * Before, the PDU was rejected ("Event references unknown auth events") or accepted on the
 * wrong state, and the room split from the sender's for good (found by
 * test/interop/state-fork-synapse.test.ts against a restarted Synapse).
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, ADMIN, FED, enc } from "../support/gatehouse.js";
import { RemoteServer, randomKey, type RecordedRequest } from "../support/remote-server.js";
import { stateField } from "../../src/store/room-store.js";
import type { Pdu } from "../../src/protocol/pdu.js";
import { GAP_LIMIT } from "../../src/rooms/missing-events.js";

let t: TestGatehouse;
let remote: RemoteServer;
let n = 0;

before(async () => {
  t = await TestGatehouse.start({ name: "missing-events" });
  remote = await RemoteServer.start();
});
after(async () => {
  await t.cleanup();
  await remote.close();
});

const TOPIC = stateField("m.room.topic", "");
const PL = stateField("m.room.power_levels", "");

function send(pdus: unknown[]) {
  return t.fed(remote, "PUT", `${FED}/v1/send/${enc(`txn-${Date.now()}-${++n}`)}`, { origin: remote.serverName, origin_server_ts: Date.now(), pdus });
}

/** A room where the remote server's moderator has power 100. */
async function roomWithRemoteModerator(version: string): Promise<{ roomId: string; mod: string }> {
  const roomId = await t.createRoom({ room_version: version });
  const mod = remote.userId(`mod${++n}`);
  await t.knockAcceptJoin(remote, roomId, mod);
  const g = await t.graph(roomId);
  const pl = structuredClone(g.state.get(PL)!.content) as { users: Record<string, number> };
  pl.users = { ...pl.users, [mod]: 100 };
  const res = await t.admin.put(`${ADMIN}/rooms/${enc(roomId)}/state/m.room.power_levels/`).send({ content: pl });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return { roomId, mod };
}

interface GapCase {
  name: string;
  why: string;
  /** The first (withheld) event: a topic, or new power levels the second event cites. */
  first: "topic" | "levels";
  /** How the origin answers get_missing_events. */
  serve: "events" | "error" | "bad-signature";
  /** The newest event's result in the /send answer: {} or the start of its error. */
  result: "accepted" | "unknown auth events";
  /** Whether the withheld event ends in Gatehouse's state. */
  firstInState: boolean;
}

const CASES: GapCase[] = [
  {
    name: "auth gap: a topic citing power levels Gatehouse never received",
    why: "the newest event's auth events include the withheld levels; fetched first, both are accepted (before: rejected, unknown auth events)",
    first: "levels",
    serve: "events",
    result: "accepted",
    firstInState: true,
  },
  {
    name: "prev gap: a message on top of a topic Gatehouse never received",
    why: "the message's auth events are known, so it was accepted on the wrong state and the topic never arrived; fetched first, the topic is current state",
    first: "topic",
    serve: "events",
    result: "accepted",
    firstInState: true,
  },
  {
    name: "the origin cannot fill the gap: the PDU is checked as before",
    why: "get_missing_events answers 500: nothing is fetched, the PDU with unknown auth events is rejected as before and the transaction still answers 200",
    first: "levels",
    serve: "error",
    result: "unknown auth events",
    firstInState: false,
  },
  {
    name: "an event get_missing_events returns with a bad signature is not persisted",
    why: "fetched events are verified like any PDU: the forged copy is dropped and the PDU's auth gap stays",
    first: "levels",
    serve: "bad-signature",
    result: "unknown auth events",
    firstInState: false,
  },
];

describe("a PDU whose prev or auth events are missing: the gap is fetched from its origin", () => {
  for (const version of ["10", "12"]) {
    for (const c of CASES) {
      test(`v${version}: ${c.name}`, async () => {
        const { roomId, mod } = await roomWithRemoteModerator(version);
        const base = await t.graph(roomId);
        let first: { pdu: Pdu; eventId: string };
        let second: { pdu: Pdu; eventId: string };
        if (c.first === "levels") {
          const pl = structuredClone(base.state.get(PL)!.content) as { events: Record<string, number> };
          pl.events = { ...pl.events, "org.example.gap": 1 };
          first = await t.remoteEvent(remote, roomId, { type: "m.room.power_levels", sender: mod, state_key: "", content: pl });
          const auth = (await t.template(roomId, { type: "m.room.topic", sender: mod, state_key: "", content: {} })).auth_events as string[];
          second = remote.signEvent(
            {
              type: "m.room.topic",
              sender: mod,
              state_key: "",
              content: { topic: "cites the withheld levels" },
              room_id: roomId,
              origin_server_ts: first.pdu.origin_server_ts + 1,
              depth: first.pdu.depth + 1,
              prev_events: [first.eventId],
              auth_events: auth.map((id) => (id === base.stateIds.get(PL) ? first.eventId : id)),
            },
            base.versionId,
          );
        } else {
          first = await t.remoteEvent(remote, roomId, { type: "m.room.topic", sender: mod, state_key: "", content: { topic: "withheld" } });
          const auth = (await t.template(roomId, { type: "m.room.message", sender: mod, content: {} })).auth_events as string[];
          second = remote.signEvent(
            {
              type: "m.room.message",
              sender: mod,
              content: { msgtype: "m.text", body: "on top of the withheld topic" },
              room_id: roomId,
              origin_server_ts: first.pdu.origin_server_ts + 1,
              depth: first.pdu.depth + 1,
              prev_events: [first.eventId],
              auth_events: auth,
            },
            base.versionId,
          );
        }
        const asked: RecordedRequest[] = [];
        remote.extraRoutes = (req) => {
          if (!req.url.startsWith(`${FED}/v1/get_missing_events/`)) return null;
          asked.push(req);
          if (c.serve === "error") return [500, { errcode: "M_UNKNOWN", error: "down" }];
          const served = c.serve === "bad-signature" ? remote.signEvent({ ...first.pdu }, base.versionId, randomKey(remote.key.keyId)).pdu : first.pdu;
          return [200, { events: [served] }];
        };
        try {
          const res = await send([second.pdu]);
          assert.equal(res.status, 200, JSON.stringify(res.body));
          const outcome = res.body.pdus[second.eventId];
          if (c.result === "accepted") assert.deepEqual(outcome, {}, `the newest event is accepted (${c.why})`);
          else assert.match(outcome?.error ?? "", /unknown auth events/, `refused as before (${c.why}): ${JSON.stringify(res.body)}`);
        } finally {
          remote.extraRoutes = null;
        }
        assert.equal(asked.length, 1, "one get_missing_events request to the origin");
        const body = asked[0]!.body as { earliest_events: string[]; latest_events: string[]; limit: number };
        assert.deepEqual([...body.earliest_events].sort(), base.extremities, "earliest: Gatehouse's forward extremities");
        assert.deepEqual(body.latest_events, [second.eventId]);
        assert.ok(body.limit > 0);

        const g = await t.graph(roomId);
        const key = c.first === "levels" ? PL : TOPIC;
        assert.equal(g.stateIds.get(key) === first.eventId, c.firstInState, `the withheld event in current state (${c.why})`);
        assert.equal((await t.store.getEvent(roomId, first.eventId)) !== null, c.firstInState, "the withheld event stored");
        if (c.result === "accepted") {
          assert.deepEqual(g.extremities, [second.eventId], "one branch, ending at the newest event");
          if (c.first === "levels") assert.equal(g.stateIds.get(TOPIC), second.eventId);
        } else {
          assert.deepEqual(g.extremities, base.extremities, "nothing changed");
        }
      });
    }
  }

  test("a PDU on the room's forward extremities asks for nothing", async () => {
    const { roomId, mod } = await roomWithRemoteModerator("12");
    const asked: RecordedRequest[] = [];
    remote.extraRoutes = (req) => (req.url.startsWith(`${FED}/v1/get_missing_events/`) ? (asked.push(req), [200, { events: [] }]) : null);
    try {
      const ev = await t.remoteEvent(remote, roomId, { type: "m.room.topic", sender: mod, state_key: "", content: { topic: "no gap" } });
      assert.deepEqual((await send([ev.pdu])).body, { pdus: { [ev.eventId]: {} } });
    } finally {
      remote.extraRoutes = null;
    }
    assert.equal(asked.length, 0);
  });
});

interface LongGapCase {
  name: string;
  why: string;
  /** Messages Gatehouse never received, oldest first, before the one sent over /send. */
  gap: number;
  /** Events of the gap (0-based, oldest first) the origin never returns. */
  withheld: number[];
  /** get_missing_events calls expected. */
  calls: number;
  /** Events of the gap stored afterwards. */
  stored: number;
  /** gatehouse_missing_events_total deltas. */
  metric: { persisted: number; gap_left: number };
}

const LONG_CASES: LongGapCase[] = [
  {
    name: "a gap longer than one call fills in two rounds",
    why: `13 events, ${GAP_LIMIT} per call: the oldest fetched event's prev is still unknown, so it is the next call's latest_events; all 13 end stored, the PDU on them`,
    gap: 13,
    withheld: [],
    calls: 2,
    stored: 13,
    metric: { persisted: 13, gap_left: 0 },
  },
  {
    name: "a gap the origin leaves open: nothing off known ground is stored, the PDU is checked as before",
    why: "the oldest event is never returned: the 12 fetched ones hang from an unknown event and are left out; in a hosted room the PDU is then checked as it is (accepted: its auth events are known) and counted gap_left, where a room hosted elsewhere refuses it",
    gap: 13,
    withheld: [0],
    calls: 3,
    stored: 0,
    metric: { persisted: 0, gap_left: 1 },
  },
];

describe("a hosted room: several get_missing_events rounds, known ground, the metric", () => {
  const metric = async (outcome: string) => (await t.gh.metrics.missingEvents.get()).values.find((v) => v.labels.outcome === outcome)?.value ?? 0;
  for (const c of LONG_CASES) {
    test(c.name, async () => {
      const { roomId, mod } = await roomWithRemoteModerator("12");
      const base = await t.graph(roomId);
      const auth = (await t.template(roomId, { type: "m.room.message", sender: mod, content: {} })).auth_events as string[];
      // A chain of messages on the room's extremity, none of them sent to Gatehouse but the last.
      const chain: { pdu: Pdu; eventId: string }[] = [];
      for (let i = 0; i <= c.gap; i++) {
        const prev = chain[i - 1];
        chain.push(
          remote.signEvent(
            {
              type: "m.room.message",
              sender: mod,
              content: { msgtype: "m.text", body: `gap ${i}` },
              room_id: roomId,
              origin_server_ts: Date.now() + i,
              depth: base.depth + 1 + i,
              prev_events: prev ? [prev.eventId] : base.extremities,
              auth_events: auth,
            },
            base.versionId,
          ),
        );
      }
      const newest = chain[c.gap]!;
      const byId = new Map(chain.map((e, i) => [e.eventId, { ...e, i }]));
      const asked: { earliest_events: string[]; latest_events: string[]; limit: number; min_depth: number }[] = [];
      // The origin walks back from latest_events' prev events to earliest_events, as Synapse does.
      remote.extraRoutes = (req) => {
        if (!req.url.startsWith(`${FED}/v1/get_missing_events/`)) return null;
        const b = req.body as (typeof asked)[number];
        asked.push(b);
        const out: Pdu[] = [];
        const seen = new Set(b.earliest_events);
        let frontier = b.latest_events.flatMap((id) => (byId.get(id)?.pdu.prev_events as string[]) ?? []);
        while (frontier.length > 0 && out.length < b.limit) {
          const next: string[] = [];
          for (const id of frontier) {
            const e = byId.get(id);
            if (seen.has(id) || !e || out.length >= b.limit) continue;
            seen.add(id);
            if (!c.withheld.includes(e.i)) out.push(e.pdu);
            next.push(...(e.pdu.prev_events as string[]));
          }
          frontier = next;
        }
        return [200, { events: out }];
      };
      const before = { persisted: await metric("persisted"), gap_left: await metric("gap_left") };
      try {
        const res = await send([newest.pdu]);
        assert.equal(res.status, 200, JSON.stringify(res.body));
        assert.deepEqual(res.body.pdus[newest.eventId], {}, `the PDU is accepted (${c.why})`);
      } finally {
        remote.extraRoutes = null;
      }
      assert.equal(asked.length, c.calls, `get_missing_events calls (${c.why})`);
      for (const b of asked) {
        assert.equal(b.limit, GAP_LIMIT);
        assert.equal(b.min_depth, 1, "never below the room's oldest event, its create event");
        assert.deepEqual([...b.earliest_events].sort(), base.extremities);
      }
      assert.deepEqual(asked[0]!.latest_events, [newest.eventId]);
      if (c.calls > 1) assert.deepEqual(asked[1]!.latest_events, [chain[c.gap - GAP_LIMIT]!.eventId], "the next round asks for the oldest fetched event's prev events");
      let stored = 0;
      for (const e of chain.slice(0, c.gap)) if (await t.store.getEvent(roomId, e.eventId)) stored++;
      assert.equal(stored, c.stored, `gap events stored (${c.why})`);
      assert.equal((await metric("persisted")) - before.persisted, c.metric.persisted, "gatehouse_missing_events_total{outcome=persisted}");
      assert.equal((await metric("gap_left")) - before.gap_left, c.metric.gap_left, "gatehouse_missing_events_total{outcome=gap_left}");
      if (c.stored === c.gap) assert.deepEqual((await t.graph(roomId)).extremities, [newest.eventId], "one branch, ending at the PDU");
    });
  }
});
