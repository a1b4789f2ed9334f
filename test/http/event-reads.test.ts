// The reads a joined peer makes: /event, /state_ids, /state, /get_missing_events, /backfill,
// /event_auth; each refused (403) to servers that are not in the room, or that the ACL denies.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, FED, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";
import { computeEventId } from "../../src/protocol/event-hashing.js";
import { getRoomVersion } from "../../src/protocol/room-versions.js";
import { stateField } from "../../src/store/room-store.js";
import type { Pdu } from "../../src/protocol/pdu.js";

const V12 = getRoomVersion("12")!;
let t: TestGatehouse;
let remote: RemoteServer; // joined
let knocker: RemoteServer; // has a pending knock only
let stranger: RemoteServer; // no membership at all
let roomId: string;
let user: string;
let joinId: string;
const msgs: { pdu: Pdu; eventId: string }[] = [];

before(async () => {
  t = await TestGatehouse.start({ name: "reads" });
  [remote, knocker, stranger] = await Promise.all([RemoteServer.start(), RemoteServer.start(), RemoteServer.start()]);
  roomId = await t.createRoom({ room_version: "12", name: "Reads" });
  user = remote.userId("reader");
  ({ joinEventId: joinId } = await t.knockAcceptJoin(remote, roomId, user));
  for (const body of ["m1", "m2", "m3"]) {
    const ev = await t.remoteEvent(remote, roomId, { type: "m.room.message", sender: user, content: { msgtype: "m.text", body } });
    const res = await t.fed(remote, "PUT", `${FED}/v1/send/reads-${body}`, { origin: remote.serverName, origin_server_ts: Date.now(), pdus: [ev.pdu] });
    assert.deepEqual(res.body, { pdus: { [ev.eventId]: {} } });
    msgs.push(ev);
  }
  await t.knock(knocker, roomId, knocker.userId("k"));
});
after(async () => {
  await t.cleanup();
  await Promise.all([remote.close(), knocker.close(), stranger.close()]);
});

const ids = (pdus: Pdu[]) => pdus.map((p) => computeEventId(p, V12));

/** Walks auth_events from `start` (exclusive) using the stored events. */
async function expectedAuthChain(start: string[]): Promise<Set<string>> {
  const seen = new Set<string>();
  let frontier = [...start];
  while (frontier.length) {
    const next: string[] = [];
    for (const id of frontier) {
      const ev = await t.store.getEvent(roomId, id);
      for (const a of (ev?.auth_events ?? []) as string[]) if (!seen.has(a)) (seen.add(a), next.push(a));
    }
    frontier = next;
  }
  return seen;
}

const reads = () => [
  { name: "/event", method: "GET" as const, uri: `${FED}/v1/event/${enc(msgs[2]!.eventId)}` },
  { name: "/state_ids", method: "GET" as const, uri: `${FED}/v1/state_ids/${enc(roomId)}?event_id=${enc(msgs[2]!.eventId)}` },
  { name: "/state", method: "GET" as const, uri: `${FED}/v1/state/${enc(roomId)}?event_id=${enc(msgs[2]!.eventId)}` },
  { name: "/get_missing_events", method: "POST" as const, uri: `${FED}/v1/get_missing_events/${enc(roomId)}`, body: { earliest_events: [], latest_events: [msgs[2]!.eventId], limit: 10 } },
  { name: "/backfill", method: "GET" as const, uri: `${FED}/v1/backfill/${enc(roomId)}?v=${enc(msgs[2]!.eventId)}&limit=5` },
  { name: "/event_auth", method: "GET" as const, uri: `${FED}/v1/event_auth/${enc(roomId)}/${enc(msgs[2]!.eventId)}` },
];

describe("reads by a joined server", () => {
  test("/event returns the stored PDU", async () => {
    const res = await t.fed(remote, "GET", `${FED}/v1/event/${enc(msgs[1]!.eventId)}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.origin, t.serverName);
    assert.ok(Number.isSafeInteger(res.body.origin_server_ts));
    assert.deepEqual(res.body.pdus, [msgs[1]!.pdu]);
  });

  test("/event for an unknown event: 404 M_NOT_FOUND", async () => {
    const res = await t.fed(remote, "GET", `${FED}/v1/event/${enc("$nope")}`);
    assert.equal(res.status, 404);
    assert.equal(res.body.errcode, "M_NOT_FOUND");
  });

  test("/state_ids: the state before the event and its auth chain", async () => {
    const res = await t.fed(remote, "GET", `${FED}/v1/state_ids/${enc(roomId)}?event_id=${enc(msgs[2]!.eventId)}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const current = await t.graph(roomId);
    // Only the knocker's knock changed state after m3, so the state before m3 is the current state without it.
    const knockField = stateField("m.room.member", knocker.userId("k"));
    assert.ok(current.stateIds.has(knockField));
    const expected = [...current.stateIds].filter(([field]) => field !== knockField).map(([, id]) => id);
    assert.deepEqual([...res.body.pdu_ids].sort(), expected.sort());
    assert.deepEqual(new Set(res.body.auth_chain_ids), await expectedAuthChain(res.body.pdu_ids));
  });

  test("/state_ids at the join: the state before it has the invite, not the join", async () => {
    const res = await t.fed(remote, "GET", `${FED}/v1/state_ids/${enc(roomId)}?event_id=${enc(joinId)}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const state = await t.store.getEvents(roomId, res.body.pdu_ids);
    const member = [...state.values()].find((e) => e.type === "m.room.member" && e.state_key === user);
    assert.equal(member?.content.membership, "invite");
    assert.ok(!res.body.pdu_ids.includes(joinId));
  });

  test("/state: the same state as full PDUs", async () => {
    const [a, b] = await Promise.all([
      t.fed(remote, "GET", `${FED}/v1/state_ids/${enc(roomId)}?event_id=${enc(msgs[2]!.eventId)}`),
      t.fed(remote, "GET", `${FED}/v1/state/${enc(roomId)}?event_id=${enc(msgs[2]!.eventId)}`),
    ]);
    assert.equal(b.status, 200, JSON.stringify(b.body));
    assert.deepEqual(ids(b.body.pdus).sort(), [...a.body.pdu_ids].sort());
    assert.deepEqual(ids(b.body.auth_chain).sort(), [...a.body.auth_chain_ids].sort());
    for (const p of b.body.pdus as Pdu[]) assert.deepEqual(p, await t.store.getEvent(roomId, computeEventId(p, V12)));
  });

  test("/state_ids and /state need event_id (400 M_MISSING_PARAM) of this room (404)", async () => {
    const missing = await t.fed(remote, "GET", `${FED}/v1/state_ids/${enc(roomId)}`);
    assert.equal(missing.status, 400);
    assert.equal(missing.body.errcode, "M_MISSING_PARAM");
    const unknown = await t.fed(remote, "GET", `${FED}/v1/state/${enc(roomId)}?event_id=${enc("$unknown")}`);
    assert.equal(unknown.status, 404);
  });

  test("/get_missing_events: events between earliest and latest, oldest first, limit and min_depth", async () => {
    const [m1, m2, m3] = msgs as [{ pdu: Pdu; eventId: string }, { pdu: Pdu; eventId: string }, { pdu: Pdu; eventId: string }];
    const between = await t.fed(remote, "POST", `${FED}/v1/get_missing_events/${enc(roomId)}`, { earliest_events: [m1.eventId], latest_events: [m3.eventId], limit: 10 });
    assert.equal(between.status, 200, JSON.stringify(between.body));
    assert.deepEqual(between.body.events, [m2.pdu]);

    const limited = await t.fed(remote, "POST", `${FED}/v1/get_missing_events/${enc(roomId)}`, { earliest_events: [], latest_events: [m3.eventId], limit: 2 });
    assert.deepEqual(limited.body.events, [m1.pdu, m2.pdu]);

    const deep = await t.fed(remote, "POST", `${FED}/v1/get_missing_events/${enc(roomId)}`, { earliest_events: [], latest_events: [m3.eventId], limit: 10, min_depth: m2.pdu.depth });
    assert.deepEqual(deep.body.events, [m2.pdu]);

    const bad = await t.fed(remote, "POST", `${FED}/v1/get_missing_events/${enc(roomId)}`, { earliest_events: [] });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.errcode, "M_INVALID_PARAM");
  });

  test("/backfill: from v backwards through prev_events, up to limit", async () => {
    const [, m2, m3] = msgs as [unknown, { pdu: Pdu; eventId: string }, { pdu: Pdu; eventId: string }];
    const res = await t.fed(remote, "GET", `${FED}/v1/backfill/${enc(roomId)}?v=${enc(m3.eventId)}&limit=2`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.origin, t.serverName);
    assert.deepEqual(res.body.pdus, [m3.pdu, m2.pdu]);
    const all = await t.fed(remote, "GET", `${FED}/v1/backfill/${enc(roomId)}?v=${enc(m3.eventId)}&limit=100`);
    const timeline = await t.store.timeline(roomId);
    // Everything up to m3 (the knock after it is not an ancestor).
    const upToM3 = timeline.slice(0, timeline.findIndex((e) => e.eventId === m3.eventId) + 1).map((e) => e.eventId);
    assert.deepEqual(ids(all.body.pdus).sort(), upToM3.sort());

    const noV = await t.fed(remote, "GET", `${FED}/v1/backfill/${enc(roomId)}?limit=2`);
    assert.equal(noV.status, 400);
    assert.equal(noV.body.errcode, "M_MISSING_PARAM");
    const noLimit = await t.fed(remote, "GET", `${FED}/v1/backfill/${enc(roomId)}?v=${enc(m3.eventId)}`);
    assert.equal(noLimit.status, 400, "the spec marks limit required");
    assert.equal(noLimit.body.errcode, "M_MISSING_PARAM");
    const badLimit = await t.fed(remote, "GET", `${FED}/v1/backfill/${enc(roomId)}?v=${enc(m3.eventId)}&limit=0`);
    assert.equal(badLimit.status, 400);
    assert.equal(badLimit.body.errcode, "M_INVALID_PARAM");
  });

  test("/event_auth: the event's full auth chain", async () => {
    const res = await t.fed(remote, "GET", `${FED}/v1/event_auth/${enc(roomId)}/${enc(msgs[2]!.eventId)}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const expected = await expectedAuthChain([msgs[2]!.eventId]);
    assert.deepEqual(new Set(ids(res.body.auth_chain)), expected);
    assert.ok(expected.has(joinId));
    const unknown = await t.fed(remote, "GET", `${FED}/v1/event_auth/${enc(roomId)}/${enc("$unknown")}`);
    assert.equal(unknown.status, 404);
  });
});

describe("reads refused", () => {
  for (const [label, who] of [
    ["a server with no members in the room", () => stranger],
    ["a server whose only member is knocking", () => knocker],
  ] as const) {
    test(`${label}: 403 M_FORBIDDEN on every read`, async () => {
      for (const r of reads()) {
        const res = await t.fed(who(), r.method, r.uri, r.body);
        assert.equal(res.status, 403, `${r.name}: ${JSON.stringify(res.body)}`);
        assert.equal(res.body.errcode, "M_FORBIDDEN", r.name);
      }
    });
  }

  test("a knocking server cannot read messages whose IDs a make_knock template reveals", async () => {
    // prev_events of a fresh make_knock template are the room's latest events.
    const made = await t.makeMembership(knocker, "knock", roomId, knocker.userId(`k${Date.now()}`), ["12"]);
    assert.equal(made.status, 200, JSON.stringify(made.body));
    for (const id of made.body.event.prev_events as string[]) {
      const res = await t.fed(knocker, "GET", `${FED}/v1/event/${enc(id)}`);
      assert.equal(res.status, 403, JSON.stringify(res.body));
    }
    const m3 = await t.fed(knocker, "GET", `${FED}/v1/event/${enc(msgs[2]!.eventId)}`);
    assert.equal(m3.status, 403);
    assert.equal(m3.body.pdus, undefined);
  });

  test("an unknown room: 404 M_NOT_FOUND", async () => {
    const res = await t.fed(remote, "GET", `${FED}/v1/state_ids/${enc("!nope:gatehouse.test")}?event_id=${enc(msgs[0]!.eventId)}`);
    assert.equal(res.status, 404);
    assert.equal(res.body.errcode, "M_NOT_FOUND");
  });

  test("a joined server that the ACL denies: 403 M_FORBIDDEN on every read", async () => {
    await t.setState(roomId, "m.room.server_acl", "", { allow: ["*"], deny: ["127.0.0.1"] });
    try {
      for (const r of reads()) {
        const res = await t.fed(remote, r.method, r.uri, r.body);
        assert.equal(res.status, 403, `${r.name}: ${JSON.stringify(res.body)}`);
        assert.equal(res.body.errcode, "M_FORBIDDEN", r.name);
      }
    } finally {
      await t.setState(roomId, "m.room.server_acl", "", { allow: ["*"] });
    }
    // Allowed again.
    assert.equal((await t.fed(remote, "GET", reads()[0]!.uri)).status, 200);
  });
});
