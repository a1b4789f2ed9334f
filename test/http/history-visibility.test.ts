// History visibility on the federation reads (issue 14): a server that joins late reads the
// messages sent before its user joined through GET /event, GET /backfill and POST
// /get_missing_events. With `joined` they come back redacted (as Synapse's
// filter_events_for_server does), with `invited` from the invite on, with `shared` and
// `world_readable` in full. Redacted copies still carry valid signatures.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, FED, ADMIN, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";
import { computeEventId, checkContentHash } from "../../src/protocol/event-hashing.js";
import { verifyEventSignatures } from "../../src/protocol/event-signing.js";
import { redactEvent } from "../../src/protocol/redaction.js";
import { defaultEd25519 } from "../../src/protocol/ed25519.js";
import { getRoomVersion } from "../../src/protocol/room-versions.js";
import type { VerifierLookup } from "../../src/protocol/json-signing.js";
import type { Pdu } from "../../src/protocol/pdu.js";
import type { HistoryVisibility } from "../../src/protocol/visibility.js";

const V12 = getRoomVersion("12")!;
let t: TestGatehouse;

before(async () => {
  t = await TestGatehouse.start({ name: "visibility" });
});
after(async () => {
  await t.cleanup();
});

/** Gatehouse's own key and the remotes' keys, for checking signatures as a receiving server would. */
function lookup(...remotes: RemoteServer[]): VerifierLookup {
  return (entity, keyId) => {
    if (entity === t.serverName && keyId === t.ownKeys.current.keyId) return defaultEd25519.verifier(t.ownKeys.current.publicKey);
    for (const r of remotes) if (entity === r.serverName && keyId === r.key.keyId) return defaultEd25519.verifier(r.key.publicKey);
    return undefined;
  };
}

async function send(roomId: string, body: string): Promise<string> {
  const res = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/send/m.room.message`).send({ content: { msgtype: "m.text", body } });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.event_id as string;
}

/**
 * A v12 room with `visibility`, and a remote server whose user knocks, is invited and joins, with
 * a local message before each step: m1 (no member of the remote), m2 (knocking), m3 (invited),
 * m4 (joined).
 */
async function scenario(visibility: HistoryVisibility) {
  const remote = await RemoteServer.start();
  const roomId = await t.createRoom({ room_version: "12", initial_state: [{ type: "m.room.history_visibility", content: { history_visibility: visibility } }] });
  const user = remote.userId("late");
  const m1 = await send(roomId, "before anyone of the remote server");
  await t.knock(remote, roomId, user);
  const m2 = await send(roomId, "while knocking");
  const acc = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/knocks/${enc(user)}/accept`).send({});
  assert.equal(acc.status, 200, JSON.stringify(acc.body));
  const invite = acc.body.event_id as string;
  const m3 = await send(roomId, "while invited");
  const { eventId: join } = await t.join(remote, roomId, user);
  const m4 = await send(roomId, "after the join");
  return { remote, roomId, user, m1, m2, m3, m4, invite, join };
}

// Which of the scenario's events the late server may read in full.
const FULL: Record<HistoryVisibility, readonly string[]> = {
  joined: ["m4", "join"],
  invited: ["m3", "m4", "invite", "join"],
  shared: ["m1", "m2", "m3", "m4", "invite", "join"],
  world_readable: ["m1", "m2", "m3", "m4", "invite", "join"],
};

for (const visibility of ["joined", "invited", "shared", "world_readable"] as const) {
  describe(`history_visibility ${visibility}: a server whose user joined late`, () => {
    let s: Awaited<ReturnType<typeof scenario>>;
    let named: [string, string][];
    before(async () => {
      s = await scenario(visibility);
      named = (["m1", "m2", "m3", "m4", "invite", "join"] as const).map((n) => [n, s[n]]);
    });
    after(async () => {
      await s.remote.close();
    });

    /** Asserts each served PDU is the stored event, in full or redacted as FULL says, and still verifies. */
    async function expectServed(pdus: Pdu[], names: readonly string[], label: string) {
      const byId = new Map(pdus.map((p) => [computeEventId(p, V12), p]));
      for (const [name, id] of named.filter(([n]) => names.includes(n))) {
        const served = byId.get(id);
        assert.ok(served, `${label}: ${name} is served`);
        const stored = (await t.store.getEvent(s.roomId, id))!;
        const full = FULL[visibility].includes(name);
        assert.deepEqual(served, full ? stored : redactEvent(stored, V12), `${label}: ${name} is ${full ? "full" : "redacted"}`);
        // The ID is unchanged and the signatures still verify: the redacted copy is what is signed.
        assert.deepEqual(verifyEventSignatures(served as Record<string, unknown>, V12, lookup(s.remote)).ok, true, `${label}: ${name} signature`);
        // A redacted message no longer matches its content hash, which tells the receiver it was
        // redacted (a membership event's content may survive redaction unchanged).
        if (full) assert.equal(checkContentHash(served as Record<string, unknown>), true, `${label}: ${name} content hash`);
        else if (name.startsWith("m")) assert.equal(checkContentHash(served as Record<string, unknown>), false, `${label}: ${name} content hash`);
      }
    }

    test("GET /event: each event as the spec allows", async () => {
      const pdus: Pdu[] = [];
      for (const [name, id] of named) {
        const res = await t.fed(s.remote, "GET", `${FED}/v1/event/${enc(id)}`);
        assert.equal(res.status, 200, `${name}: ${JSON.stringify(res.body)}`);
        assert.equal(res.body.pdus.length, 1);
        pdus.push(res.body.pdus[0]);
      }
      await expectServed(pdus, ["m1", "m2", "m3", "m4", "invite", "join"], "/event");
    });

    test("GET /backfill from the last message", async () => {
      const res = await t.fed(s.remote, "GET", `${FED}/v1/backfill/${enc(s.roomId)}?v=${enc(s.m4)}&limit=100`);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      await expectServed(res.body.pdus, ["m1", "m2", "m3", "m4", "invite", "join"], "/backfill");
    });

    test("GET /backfill of events stored before state groups existed (no event-state entry): the timeline replay serves the same", async () => {
      const key = t.gh.keys.eventState(s.roomId);
      const saved = await t.redis.hgetall(key);
      await t.redis.del(key);
      try {
        const res = await t.fed(s.remote, "GET", `${FED}/v1/backfill/${enc(s.roomId)}?v=${enc(s.m4)}&limit=100`);
        assert.equal(res.status, 200, JSON.stringify(res.body));
        await expectServed(res.body.pdus, ["m1", "m2", "m3", "m4", "invite", "join"], "/backfill without state groups");
      } finally {
        await t.redis.hset(key, saved);
      }
    });

    test("POST /get_missing_events up to the last message", async () => {
      const res = await t.fed(s.remote, "POST", `${FED}/v1/get_missing_events/${enc(s.roomId)}`, { earliest_events: [], latest_events: [s.m4], limit: 100 });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      // latest_events themselves are not returned.
      await expectServed(res.body.events, ["m1", "m2", "m3", "invite", "join"], "/get_missing_events");
    });

    test("GET /state and /event_auth: state and auth events are served in full (as Synapse does)", async () => {
      const state = await t.fed(s.remote, "GET", `${FED}/v1/state/${enc(s.roomId)}?event_id=${enc(s.m1)}`);
      assert.equal(state.status, 200, JSON.stringify(state.body));
      for (const p of [...state.body.pdus, ...state.body.auth_chain] as Pdu[]) assert.deepEqual(p, await t.store.getEvent(s.roomId, computeEventId(p, V12)));
      const auth = await t.fed(s.remote, "GET", `${FED}/v1/event_auth/${enc(s.roomId)}/${enc(s.m1)}`);
      assert.equal(auth.status, 200, JSON.stringify(auth.body));
      assert.ok(auth.body.auth_chain.length > 0);
      for (const p of auth.body.auth_chain as Pdu[]) assert.deepEqual(p, await t.store.getEvent(s.roomId, computeEventId(p, V12)));
    });
  });
}

describe("two servers reading the same events in turn", () => {
  test("each server's verdicts are its own, asked again and after one more of its users joined (why: the server's member fields are remembered per state and server, and consecutive events' states are derived from their parents')", async () => {
    const [early, late] = await Promise.all([RemoteServer.start(), RemoteServer.start()]);
    try {
      const roomId = await t.createRoom({ room_version: "12", join_rule: "public", initial_state: [{ type: "m.room.history_visibility", content: { history_visibility: "joined" } }] });
      await t.join(early, roomId, early.userId("e1"));
      const m1 = await send(roomId, "only the early server's user is joined");
      const { eventId: lateJoin } = await t.join(late, roomId, late.userId("l1"));
      const m2 = await send(roomId, "both servers have a joined user");
      const backfill = async (server: RemoteServer, from: string) => {
        const res = await t.fed(server, "GET", `${FED}/v1/backfill/${enc(roomId)}?v=${enc(from)}&limit=100`);
        assert.equal(res.status, 200, JSON.stringify(res.body));
        return new Map((res.body.pdus as Pdu[]).map((p) => [computeEventId(p, V12), p]));
      };
      const expect = async (served: Map<string, Pdu>, full: readonly string[], redacted: readonly string[], label: string) => {
        for (const id of full) assert.deepEqual(served.get(id), await t.store.getEvent(roomId, id), `${label}: ${id} in full`);
        for (const id of redacted) assert.deepEqual(served.get(id), redactEvent((await t.store.getEvent(roomId, id))!, V12), `${label}: ${id} redacted`);
      };
      for (let round = 0; round < 2; round++) {
        await expect(await backfill(early, m2), [m1, lateJoin, m2], [], `early, round ${round}`);
        await expect(await backfill(late, m2), [lateJoin, m2], [m1], `late, round ${round}`);
      }
      // One more user of the late server joins: the current state is a new version; the old events keep their verdicts.
      await t.join(late, roomId, late.userId("l2"));
      const m3 = await send(roomId, "after the second late user");
      await expect(await backfill(late, m3), [lateJoin, m2, m3], [m1], "late, after its second user joined");
      await expect(await backfill(early, m3), [m1, lateJoin, m2, m3], [], "early, after the late server's second user joined");
    } finally {
      await Promise.all([early.close(), late.close()]);
    }
  });
});

describe("a server whose users leave", () => {
  test("joined: events sent after its last user left are refused (403: not in the room); those while joined stay readable to a server still in it", async () => {
    const s = await scenario("joined");
    try {
      // The remote's user leaves: make_leave + send_leave.
      const made = await t.makeMembership(s.remote, "leave", s.roomId, s.user, []);
      assert.equal(made.status, 200, JSON.stringify(made.body));
      const { pdu, eventId: leave } = s.remote.signEvent(made.body.event, made.body.room_version);
      const sent = await t.fed(s.remote, "PUT", `${FED}/v2/send_leave/${enc(s.roomId)}/${enc(leave)}`, pdu);
      assert.equal(sent.status, 200, JSON.stringify(sent.body));
      const after = await send(s.roomId, "after the leave");
      const res = await t.fed(s.remote, "GET", `${FED}/v1/event/${enc(after)}`);
      assert.equal(res.status, 403);
      assert.equal(res.body.errcode, "M_FORBIDDEN");
    } finally {
      await s.remote.close();
    }
  });
});

describe("visibility at an event is its state group, not its place in the timeline", () => {
  test("a message built before the change to joined, arriving after it, keeps shared: a server that joined later reads it in full (as Synapse, from the state at the event)", async () => {
    const a = await RemoteServer.start();
    const b = await RemoteServer.start();
    try {
      const roomId = await t.createRoom({ room_version: "12", initial_state: [{ type: "m.room.history_visibility", content: { history_visibility: "shared" } }] });
      const author = a.userId("author");
      await t.knockAcceptJoin(a, roomId, author);
      // Built on the shared state...
      const msg = await t.remoteEvent(a, roomId, { type: "m.room.message", sender: author, content: { msgtype: "m.text", body: "from the shared branch" } });
      const change = await t.admin.put(`${ADMIN}/rooms/${enc(roomId)}/state/m.room.history_visibility/`).send({ content: { history_visibility: "joined" } });
      assert.equal(change.status, 200, JSON.stringify(change.body));
      // ...accepted after the change: later in the timeline, on the other branch of the graph.
      const sent = await t.fed(a, "PUT", `${FED}/v1/send/fork-${msg.eventId}`, { origin: a.serverName, origin_server_ts: Date.now(), pdus: [msg.pdu] });
      assert.deepEqual(sent.body, { pdus: { [msg.eventId]: {} } });
      const later = await send(roomId, "on the joined branch");
      await t.knockAcceptJoin(b, roomId, b.userId("late"));
      const stored = (await t.store.getEvent(roomId, msg.eventId))!;
      const forked = await t.fed(b, "GET", `${FED}/v1/event/${enc(msg.eventId)}`);
      assert.equal(forked.status, 200, JSON.stringify(forked.body));
      assert.deepEqual(forked.body.pdus[0], stored, "shared in the state after the message: full");
      const linear = await t.fed(b, "GET", `${FED}/v1/event/${enc(later)}`);
      assert.deepEqual(linear.body.pdus[0], redactEvent((await t.store.getEvent(roomId, later))!, V12), "joined in the state after this one, and b had no member: redacted");
    } finally {
      await a.close();
      await b.close();
    }
  });
});
