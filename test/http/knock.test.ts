// make_knock / send_knock against a real Gatehouse (real Redis, real key fetch from a fake remote).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, ADMIN, FED, enc } from "../support/gatehouse.js";
import { RemoteServer, randomKey } from "../support/remote-server.js";
import { RoomStore, stateField } from "../../src/store/room-store.js";
import { DUMMY_EVENT_TYPE } from "../../src/rooms/room-service.js";
import { serverOfUserId } from "../../src/protocol/ids.js";
import type { Pdu } from "../../src/protocol/pdu.js";

const ALL_KNOCK_VERSIONS = ["7", "8", "9", "10", "11", "12"];
const TEMPLATE_KEYS = ["auth_events", "content", "depth", "origin_server_ts", "prev_events", "room_id", "sender", "state_key", "type"];

let t: TestGatehouse;
let remote: RemoteServer;
let other: RemoteServer;
let userCounter = 0;
const freshUser = (server: RemoteServer = remote) => server.userId(`knocker${++userCounter}`);

before(async () => {
  t = await TestGatehouse.start({ name: "knock" });
  [remote, other] = await Promise.all([RemoteServer.start(), RemoteServer.start()]);
});
after(async () => {
  await t.cleanup();
  await Promise.all([remote.close(), other.close()]);
});

async function makeKnock(roomId: string, userId: string, ver: string[] | null = ALL_KNOCK_VERSIONS, server: RemoteServer = remote) {
  const q = ver === null ? "" : "?" + ver.map((v) => `ver=${v}`).join("&");
  return t.fed(server, "GET", `${FED}/v1/make_knock/${enc(roomId)}/${enc(userId)}${q}`);
}

/** make_knock must succeed; returns the template and room version. */
async function knockTemplate(roomId: string, userId: string, server: RemoteServer = remote): Promise<{ event: Record<string, unknown>; version: string }> {
  const res = await makeKnock(roomId, userId, ALL_KNOCK_VERSIONS, server);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return { event: res.body.event, version: res.body.room_version };
}

function sendKnock(roomId: string, eventId: string, body: unknown, server: RemoteServer = remote, opts?: { rawBody?: string }) {
  return t.fed(server, "PUT", `${FED}/v1/send_knock/${enc(roomId)}/${enc(eventId)}`, body, opts);
}

function assertError(res: { status: number; body: Record<string, unknown> }, status: number, errcode: string, message?: RegExp) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(res.body.errcode, errcode, JSON.stringify(res.body));
  assert.equal(typeof res.body.error, "string");
  if (message) assert.match(res.body.error as string, message);
}

describe("make_knock", () => {
  for (const [version, joinRule] of [
    ["7", "knock"],
    ["10", "knock_restricted"],
    ["11", "knock"],
    ["12", "knock"],
  ] as const) {
    test(`room version ${version} (${joinRule}): template shape per knock.md, then send_knock succeeds`, async () => {
      const roomId = await t.createRoom({ room_version: version, join_rule: joinRule });
      const user = freshUser();
      const g = await t.graph(roomId);
      const res = await t.assertNothingWritten(() => makeKnock(roomId, user, [version]));
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.room_version, version);
      const ev = res.body.event as Record<string, unknown>;
      // A full PDU minus hashes, signatures and unsigned; no event_id in v3+ formats.
      assert.deepEqual(Object.keys(ev).filter((k) => k !== "origin").sort(), TEMPLATE_KEYS);
      assert.equal(ev.type, "m.room.member");
      assert.equal(ev.room_id, roomId);
      assert.equal(ev.sender, user);
      assert.equal(ev.state_key, user);
      assert.deepEqual(ev.content, { membership: "knock" });
      assert.ok(Number.isSafeInteger(ev.origin_server_ts) && Math.abs((ev.origin_server_ts as number) - Date.now()) < 60_000);
      assert.equal(ev.depth, g.depth + 1);
      assert.deepEqual(ev.prev_events, g.extremities);
      // Auth events: create (not in v12), power levels, join rules; the knocker has no member event yet.
      const expectedAuth = [
        ...(version === "12" ? [] : [g.stateIds.get(stateField("m.room.create", ""))]),
        g.stateIds.get(stateField("m.room.power_levels", "")),
        g.stateIds.get(stateField("m.room.join_rules", "")),
      ];
      assert.deepEqual([...(ev.auth_events as string[])].sort(), (expectedAuth as string[]).sort());
      if (version === "12") assert.ok(!(ev.auth_events as string[]).includes(`$${roomId.slice(1)}`));

      const { pdu, eventId } = remote.signEvent(ev, version);
      const sent = await sendKnock(roomId, eventId, pdu);
      assert.equal(sent.status, 200, JSON.stringify(sent.body));
      assert.equal(await t.store.getMembership(roomId, user), "knock");
      assert.deepEqual(await t.store.getExtremities(roomId), [eventId]);
    });
  }

  test("the room's version missing from several ver values: 400 M_INCOMPATIBLE_ROOM_VERSION with room_version", async () => {
    const roomId = await t.createRoom({ room_version: "12" });
    const res = await t.assertNothingWritten(() => makeKnock(roomId, freshUser(), ["7", "10", "11"]));
    assertError(res, 400, "M_INCOMPATIBLE_ROOM_VERSION");
    assert.equal(res.body.room_version, "12");
  });

  test("no ver: 400 M_MISSING_PARAM", async () => {
    const roomId = await t.createRoom();
    const res = await t.assertNothingWritten(() => makeKnock(roomId, freshUser(), null));
    assertError(res, 400, "M_MISSING_PARAM");
  });

  test("unknown room: 404 M_NOT_FOUND", async () => {
    const res = await makeKnock("!doesnotexist:gatehouse.test", freshUser());
    assertError(res, 404, "M_NOT_FOUND");
  });

  test("user not on the requesting server: 403 M_FORBIDDEN", async () => {
    const roomId = await t.createRoom();
    const res = await t.assertNothingWritten(() => makeKnock(roomId, freshUser(other)));
    assertError(res, 403, "M_FORBIDDEN", /does not belong/);
  });

  test("malformed user ID: 400 M_INVALID_PARAM", async () => {
    const roomId = await t.createRoom();
    const res = await makeKnock(roomId, "not-a-user-id");
    assertError(res, 400, "M_INVALID_PARAM");
  });

  test("banned user: 403 M_FORBIDDEN", async () => {
    const roomId = await t.createRoom();
    const user = freshUser();
    const ban = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/ban`).send({ user_id: user, reason: "spam" });
    assert.equal(ban.status, 200, JSON.stringify(ban.body));
    const res = await t.assertNothingWritten(() => makeKnock(roomId, user));
    assertError(res, 403, "M_FORBIDDEN", /banned/);
  });

  test("already invited user: 403 M_FORBIDDEN", async () => {
    const roomId = await t.createRoom();
    const user = freshUser();
    const inv = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/invite`).send({ user_id: user });
    assert.equal(inv.status, 200, JSON.stringify(inv.body));
    assert.equal(await t.store.getMembership(roomId, user), "invite");
    const res = await t.assertNothingWritten(() => makeKnock(roomId, user));
    assertError(res, 403, "M_FORBIDDEN", /already invited/);
  });

  test("already joined user: 403 M_FORBIDDEN", async () => {
    const roomId = await t.createRoom();
    const user = freshUser();
    await t.knockAcceptJoin(remote, roomId, user);
    assert.equal(await t.store.getMembership(roomId, user), "join");
    const res = await t.assertNothingWritten(() => makeKnock(roomId, user));
    assertError(res, 403, "M_FORBIDDEN", /already joined/);
  });

  test("join rule invite: 403 M_FORBIDDEN", async () => {
    const roomId = await t.createRoom({ join_rule: "invite" });
    const res = await t.assertNothingWritten(() => makeKnock(roomId, freshUser()));
    assertError(res, 403, "M_FORBIDDEN", /join rule is invite/);
  });

  test("room version without knocking (6): 403 M_FORBIDDEN", async () => {
    const roomId = await t.createRoom({ room_version: "6", join_rule: "invite" });
    const res = await t.assertNothingWritten(() => makeKnock(roomId, freshUser(), ["6"]));
    assertError(res, 403, "M_FORBIDDEN", /does not support knocking/);
  });

  test("origin denied by the room's server ACL (set through the admin API): 403 M_FORBIDDEN", async () => {
    const roomId = await t.createRoom();
    await t.setState(roomId, "m.room.server_acl", "", { allow: ["*"], deny: ["127.0.0.1"], allow_ip_literals: true });
    const res = await t.assertNothingWritten(() => makeKnock(roomId, freshUser()));
    assertError(res, 403, "M_FORBIDDEN");
    // ACL-only: an ACL that allows the origin lets it through again.
    await t.setState(roomId, "m.room.server_acl", "", { allow: ["*"], deny: ["evil.example"] });
    assert.equal((await makeKnock(roomId, freshUser())).status, 200);
  });

  test("tombstoned room: 403 M_FORBIDDEN naming the replacement", async () => {
    const roomId = await t.createRoom();
    const replacement = await t.createRoom();
    await t.setState(roomId, "m.room.tombstone", "", { body: "moved", replacement_room: replacement });
    const res = await t.assertNothingWritten(() => makeKnock(roomId, freshUser()));
    assertError(res, 403, "M_FORBIDDEN");
    assert.equal(res.body.replacement_room, replacement);
    assert.match(res.body.error, new RegExp(replacement.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")));
  });
});

describe("send_knock", () => {
  let roomId: string;
  let otherRoomId: string;

  before(async () => {
    roomId = await t.createRoom({ name: "Support", topic: "Knock to get help", room_alias_name: "support" });
    otherRoomId = await t.createRoom();
  });

  test("success: knock_room_state holds full PDUs incl. m.room.create; the knock is in state and in admin /knocks", async () => {
    const user = freshUser();
    const { event, version } = await knockTemplate(roomId, user);
    const { pdu, eventId } = remote.signEvent({ ...event, content: { membership: "knock", reason: "let me in", displayname: "Knocker" } }, version);
    const res = await sendKnock(roomId, eventId, pdu);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const state = res.body.knock_room_state as Pdu[];
    assert.ok(Array.isArray(state));
    const current = await t.graph(roomId);
    const byType = new Map(state.map((e) => [e.type, e]));
    for (const type of ["m.room.create", "m.room.join_rules", "m.room.name", "m.room.topic", "m.room.canonical_alias"]) {
      const ev = byType.get(type);
      assert.ok(ev, `knock_room_state lacks ${type}`);
      // Full PDUs, exactly as stored: hashes and Gatehouse's signature included.
      assert.deepEqual(ev, current.state.get(stateField(type, "")));
      assert.equal(typeof ev.hashes?.sha256, "string");
      assert.ok(ev.signatures?.[t.serverName]?.[t.ownKeys.current.keyId]);
    }
    // v12: the create event is the room ID's preimage and has no room_id.
    assert.equal(byType.get("m.room.create")!.room_id, undefined);
    // Nothing private: no member events or power levels.
    assert.ok(state.every((e) => e.type !== "m.room.member" && e.type !== "m.room.power_levels"));

    assert.equal(await t.store.getMembership(roomId, user), "knock");
    assert.equal((await t.store.getStateEvent(roomId, "m.room.member", user))?.content.reason, "let me in");
    const timeline = await t.store.timeline(roomId);
    assert.equal(timeline.at(-1)?.eventId, eventId);

    const knocks = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/knocks`);
    assert.equal(knocks.status, 200);
    const mine = (knocks.body.knocks as { user_id: string }[]).find((k) => k.user_id === user);
    assert.deepEqual(mine, { user_id: user, event_id: eventId, reason: "let me in", displayname: "Knocker", ts: pdu.origin_server_ts });
  });

  test("another replica taking state group IDs between send_knock's plan and its write: the knock is planned again and written once, on fresh IDs (why: a run numbers its groups from its snapshot and the write checks the counter)", async () => {
    const room = await t.createRoom({ room_version: "12" });
    const user = freshUser();
    const { event, version } = await knockTemplate(room, user);
    const { pdu, eventId } = remote.signEvent(event, version);
    const store = (t.gh.rooms as unknown as { store: RoomStore }).store;
    const replica = new RoomStore(t.redis, t.store.keys);
    const original = store.persistEvents;
    const results: unknown[] = [];
    const calls: Parameters<RoomStore["persistEvents"]>[2][] = [];
    let taken: string[] = [];
    store.persistEvents = async function (roomId, events, opts) {
      calls.push(opts);
      if (calls.length === 1) taken = await replica.allocateStateGroups(roomId, 3);
      const r = await original.call(store, roomId, events, opts);
      results.push(r);
      return r;
    };
    let res;
    try {
      res = await sendKnock(room, eventId, pdu);
    } finally {
      store.persistEvents = original;
    }
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(results, ["conflict", ["persisted"]]);
    // Planned again on the counter the replica left, and numbered after its IDs.
    assert.equal(calls[1]!.groupSeq?.expected, Number(taken.at(-1)));
    const groups = (await replica.eventStateGroups(room, [eventId])).get(eventId)!;
    assert.ok(Number(groups.after) > Number(taken.at(-1)), `${JSON.stringify(groups)} after ${taken.join(",")}`);
    assert.equal((await replica.getRoom(room))?.stateGroupSeq, calls[1]!.groupSeq!.last);
    assert.equal(await t.store.getMembership(room, user), "knock");
    assert.equal((await t.store.timeline(room)).filter((e) => e.eventId === eventId).length, 1);
  });

  test("re-sending the same knock is idempotent", async () => {
    const user = freshUser();
    const { event, version } = await knockTemplate(roomId, user);
    const { pdu, eventId } = remote.signEvent(event, version);
    assert.equal((await sendKnock(roomId, eventId, pdu)).status, 200);
    const res = await t.assertNothingWritten(() => sendKnock(roomId, eventId, pdu));
    assert.equal(res.status, 200, JSON.stringify(res.body));
  });

  /** Every rejected send_knock below must leave Redis exactly as it was. */
  async function rejected(eventId: string, body: unknown, status: number, errcode: string, opts?: { server?: RemoteServer; rawBody?: string; room?: string; message?: RegExp }) {
    const res = await t.assertNothingWritten(() => sendKnock(opts?.room ?? roomId, eventId, body, opts?.server ?? remote, opts?.rawBody !== undefined ? { rawBody: opts.rawBody } : undefined));
    assertError(res, status, errcode, opts?.message);
  }

  test("not an m.room.member event: 400 M_INVALID_PARAM", async () => {
    const { event, version } = await knockTemplate(roomId, freshUser());
    const { pdu, eventId } = remote.signEvent({ ...event, type: "m.room.message", content: { msgtype: "m.text", body: "hi", membership: "knock" } }, version);
    await rejected(eventId, pdu, 400, "M_INVALID_PARAM");
  });

  test("member event without state_key: 400 M_INVALID_PARAM", async () => {
    const { event, version } = await knockTemplate(roomId, freshUser());
    const { state_key: _s, ...rest } = event;
    const { pdu, eventId } = remote.signEvent(rest, version);
    await rejected(eventId, pdu, 400, "M_INVALID_PARAM");
  });

  for (const membership of ["join", "leave", "invite"]) {
    test(`membership ${membership}: 400 M_INVALID_PARAM`, async () => {
      const { event, version } = await knockTemplate(roomId, freshUser());
      const { pdu, eventId } = remote.signEvent({ ...event, content: { membership } }, version);
      await rejected(eventId, pdu, 400, "M_INVALID_PARAM");
    });
  }

  test("state_key differs from sender: 400 M_INVALID_PARAM", async () => {
    const { event, version } = await knockTemplate(roomId, freshUser());
    const { pdu, eventId } = remote.signEvent({ ...event, state_key: freshUser() }, version);
    await rejected(eventId, pdu, 400, "M_INVALID_PARAM");
  });

  test("sender not on the requesting server: 400 M_INVALID_PARAM", async () => {
    // A knock by a user of `other`, properly signed by `other`, relayed by `remote`.
    const user = freshUser(other);
    const { event, version } = await knockTemplate(roomId, user, other);
    const { pdu, eventId } = other.signEvent(event, version);
    await rejected(eventId, pdu, 400, "M_INVALID_PARAM", { server: remote, message: /does not belong/ });
  });

  test("room_id in the event differs from the path: 400 M_INVALID_PARAM", async () => {
    const { event, version } = await knockTemplate(otherRoomId, freshUser());
    const { pdu, eventId } = remote.signEvent(event, version);
    await rejected(eventId, pdu, 400, "M_INVALID_PARAM", { room: roomId });
    // ... and it was not written to its own room either.
    assert.equal(await t.store.getEvent(otherRoomId, eventId), null);
  });

  test("bad signature (a different key under the published key ID): 400 M_INVALID_PARAM", async () => {
    const { event, version } = await knockTemplate(roomId, freshUser());
    const { pdu, eventId } = remote.signEvent(event, version, randomKey(remote.key.keyId));
    await rejected(eventId, pdu, 400, "M_INVALID_PARAM", { message: /signature/ });
  });

  test("signature by an unknown key ID: 400 M_INVALID_PARAM", async () => {
    const { event, version } = await knockTemplate(roomId, freshUser());
    const { pdu, eventId } = remote.signEvent(event, version, randomKey("ed25519:notpublished"));
    await rejected(eventId, pdu, 400, "M_INVALID_PARAM", { message: /signature/ });
  });

  test("event ID in the path differs from the event's: 400 M_INVALID_PARAM", async () => {
    const { event, version } = await knockTemplate(roomId, freshUser());
    const { pdu } = remote.signEvent(event, version);
    const otherId = remote.signEvent({ ...event, origin_server_ts: (event.origin_server_ts as number) + 1 }, version).eventId;
    await rejected(otherId, pdu, 400, "M_INVALID_PARAM", { message: /does not match/ });
  });

  test("event larger than 65536 bytes: 413 M_TOO_LARGE", async () => {
    const { event, version } = await knockTemplate(roomId, freshUser());
    const { pdu, eventId } = remote.signEvent({ ...event, content: { membership: "knock", reason: "x".repeat(66_000) } }, version);
    await rejected(eventId, pdu, 413, "M_TOO_LARGE");
  });

  test("a float in the body (1.0, which parses to a signed integer): 400 M_BAD_JSON", async () => {
    const { event, version } = await knockTemplate(roomId, freshUser());
    const { pdu, eventId } = remote.signEvent(event, version);
    const raw = JSON.stringify(pdu).replace(`"depth":${pdu.depth}`, `"depth":${pdu.depth}.0`);
    assert.notEqual(raw, JSON.stringify(pdu));
    // The X-Matrix signature covers the parsed body, so only the canonical-JSON check can refuse it.
    await rejected(eventId, pdu, 400, "M_BAD_JSON", { rawBody: raw });
  });

  test("origin denied by the server ACL after make_knock: 403 M_FORBIDDEN", async () => {
    const aclRoom = await t.createRoom();
    const { event, version } = await knockTemplate(aclRoom, freshUser());
    await t.setState(aclRoom, "m.room.server_acl", "", { allow: ["*"], deny: ["127.0.0.1"] });
    const { pdu, eventId } = remote.signEvent(event, version);
    await rejected(eventId, pdu, 403, "M_FORBIDDEN", { room: aclRoom });
  });

  test("auth rules refuse the knock (join rule changed to invite after make_knock): 403 M_FORBIDDEN", async () => {
    const authRoom = await t.createRoom();
    const { event, version } = await knockTemplate(authRoom, freshUser());
    await t.setState(authRoom, "m.room.join_rules", "", { join_rule: "invite" });
    const { pdu, eventId } = remote.signEvent(event, version);
    await rejected(eventId, pdu, 403, "M_FORBIDDEN", { room: authRoom });
  });

  test("auth rules refuse the knock (user banned after make_knock): 403 M_FORBIDDEN", async () => {
    const banRoom = await t.createRoom();
    const user = freshUser();
    const { event, version } = await knockTemplate(banRoom, user);
    assert.equal((await t.admin.post(`${ADMIN}/rooms/${enc(banRoom)}/ban`).send({ user_id: user })).status, 200);
    const { pdu, eventId } = remote.signEvent(event, version);
    await rejected(eventId, pdu, 403, "M_FORBIDDEN", { room: banRoom });
    assert.equal(await t.store.getMembership(banRoom, user), "ban");
  });

  test("tombstoned after make_knock: 403 M_FORBIDDEN", async () => {
    const oldRoom = await t.createRoom();
    const { event, version } = await knockTemplate(oldRoom, freshUser());
    await t.setState(oldRoom, "m.room.tombstone", "", { body: "moved", replacement_room: otherRoomId });
    const { pdu, eventId } = remote.signEvent(event, version);
    await rejected(eventId, pdu, 403, "M_FORBIDDEN", { room: oldRoom });
  });

  test("unknown room: 404 M_NOT_FOUND", async () => {
    const { event, version } = await knockTemplate(roomId, freshUser());
    const { pdu, eventId } = remote.signEvent({ ...event, room_id: "!unknown:gatehouse.test" }, version);
    await rejected(eventId, pdu, 404, "M_NOT_FOUND", { room: "!unknown:gatehouse.test" });
  });

  test("a body that is not a JSON object: 400", async () => {
    const res = await t.assertNothingWritten(() => sendKnock(roomId, "$abc", ["not", "an", "event"]));
    assert.equal(res.status, 400);
  });
});

describe("concurrent knocks", () => {
  test("10 users knock at once: every knock is in state, the DAG forks into 10 extremities", async () => {
    const roomId = await t.createRoom({ room_version: "11" });
    const before = await t.graph(roomId);
    const users = Array.from({ length: 10 }, () => freshUser());
    // All templates first: they share prev_events, so the knocks are siblings in the DAG.
    const templates = await Promise.all(users.map((u) => knockTemplate(roomId, u)));
    for (const tpl of templates) assert.deepEqual(tpl.event.prev_events, before.extremities);
    const signed = templates.map((tpl) => remote.signEvent(tpl.event, tpl.version));
    const results = await Promise.all(signed.map((s) => sendKnock(roomId, s.eventId, s.pdu)));
    for (const r of results) assert.equal(r.status, 200, JSON.stringify(r.body));
    const members = await t.members(roomId);
    for (const u of users) assert.equal(members[u], "knock", `${u} is not knocking`);
    const after = await t.graph(roomId);
    assert.deepEqual(after.extremities, signed.map((s) => s.eventId).sort());
    for (const s of signed) assert.equal(after.stateIds.get(stateField("m.room.member", s.pdu.sender)), s.eventId);
    const knocks = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/knocks`);
    assert.deepEqual((knocks.body.knocks as { user_id: string }[]).map((k) => k.user_id).sort(), [...users].sort());
    // The next local event merges the fork.
    const merged = await t.setState(roomId, "m.room.topic", "", { topic: "merged" });
    const mergedPdu = await t.store.getEvent(roomId, merged);
    assert.deepEqual([...(mergedPdu!.prev_events as string[])].sort(), signed.map((s) => s.eventId).sort());
    assert.deepEqual(await t.store.getExtremities(roomId), [merged]);
  });

  for (const version of ["11", "12"]) {
    test(`v${version}: 25 forked knocks are merged by dummy events down to 10 extremities`, async () => {
      const roomId = await t.createRoom({ room_version: version });
      const before = await t.graph(roomId);
      const users = Array.from({ length: 25 }, () => freshUser());
      const templates = await Promise.all(users.map((u) => knockTemplate(roomId, u)));
      const signed = templates.map((tpl) => remote.signEvent(tpl.event, tpl.version));
      const results = await Promise.all(signed.map((s) => sendKnock(roomId, s.eventId, s.pdu)));
      for (const r of results) assert.equal(r.status, 200, JSON.stringify(r.body));
      await t.gh.rooms.settled();
      const after = await t.graph(roomId);
      assert.ok(after.extremities.length <= 10, `${after.extremities.length} extremities left`);
      const timeline = await t.store.timeline(roomId);
      const dummies = [...(await t.store.getEvents(roomId, timeline.map((e) => e.eventId))).values()].filter((e) => e.type === DUMMY_EVENT_TYPE);
      assert.ok(dummies.length >= 1);
      for (const d of dummies) {
        assert.ok((d.prev_events as string[]).length <= 20);
        assert.equal(serverOfUserId(d.sender), "gatehouse.test");
        assert.deepEqual(d.content, {});
        assert.equal(d.state_key, undefined);
      }
      // Every knock is still in state, and nothing but the knocks changed it.
      for (const s of signed) assert.equal(after.stateIds.get(stateField("m.room.member", s.pdu.sender)), s.eventId);
      assert.equal(after.stateIds.size, before.stateIds.size + users.length);
    });
  }
});
