// The admin API: bearer token, createRoom semantics, state, messages, members and knocks.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import request from "supertest";
import { TestGatehouse, ADMIN, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";
import { stateField } from "../../src/store/room-store.js";
import type { Pdu } from "../../src/protocol/pdu.js";

let t: TestGatehouse;
let remote: RemoteServer;

before(async () => {
  t = await TestGatehouse.start({ name: "admin" });
  remote = await RemoteServer.start();
});
after(async () => {
  await t.cleanup();
  await remote.close();
});

function assertError(res: { status: number; body: Record<string, unknown> }, status: number, errcode: string) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(res.body.errcode, errcode, JSON.stringify(res.body));
}

async function create(body: Record<string, unknown>): Promise<{ roomId: string; res: request.Response }> {
  const res = await t.admin.post(`${ADMIN}/rooms`).send({ creator: t.creator, ...body });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return { roomId: res.body.room_id, res };
}

/** The room's events in acceptance order. */
async function timeline(roomId: string): Promise<Pdu[]> {
  const ids = (await t.store.timeline(roomId)).map((e) => e.eventId);
  const events = await t.store.getEvents(roomId, ids);
  return ids.map((id) => events.get(id)!);
}

const stateContent = async (roomId: string, type: string, stateKey = "") => (await t.store.getStateEvent(roomId, type, stateKey))?.content;

describe("admin token", () => {
  const rawAdmin = () => request(t.gh.adminApp);

  test("no Authorization header: 401 M_MISSING_TOKEN", async () => {
    assertError(await rawAdmin().get(`${ADMIN}/rooms`), 401, "M_MISSING_TOKEN");
    assertError(await rawAdmin().post(`${ADMIN}/rooms`).send({ creator: t.creator }), 401, "M_MISSING_TOKEN");
  });

  test("not a bearer token: 401 M_MISSING_TOKEN", async () => {
    assertError(await rawAdmin().get(`${ADMIN}/rooms`).set("Authorization", `Basic ${t.adminToken}`), 401, "M_MISSING_TOKEN");
  });

  test("wrong token (and a prefix of the right one): 401 M_UNKNOWN_TOKEN, nothing written", async () => {
    const res = await t.assertNothingWritten(() => rawAdmin().post(`${ADMIN}/rooms`).set("Authorization", "Bearer not-the-token").send({ creator: t.creator }));
    assertError(res, 401, "M_UNKNOWN_TOKEN");
    assertError(await rawAdmin().get(`${ADMIN}/rooms`).set("Authorization", `Bearer ${t.adminToken.slice(0, -1)}`), 401, "M_UNKNOWN_TOKEN");
  });

  test("the right token: 200", async () => {
    const res = await rawAdmin().get(`${ADMIN}/rooms`).set("Authorization", `Bearer ${t.adminToken}`);
    assert.equal(res.status, 200);
    assert.ok(Array.isArray(res.body.rooms));
  });

  test("unknown admin path: 404 M_UNRECOGNIZED", async () => {
    assertError(await t.admin.get(`${ADMIN}/nothing-here`), 404, "M_UNRECOGNIZED");
  });
});

describe("POST /rooms (createRoom)", () => {
  test("defaults: v12, private_chat, events in the client API's order", async () => {
    const { roomId, res } = await create({});
    assert.equal(res.body.room_version, "12");
    assert.equal(res.body.room_alias, undefined);
    const events = await timeline(roomId);
    assert.deepEqual(
      events.map((e) => e.type),
      ["m.room.create", "m.room.member", "m.room.power_levels", "m.room.join_rules", "m.room.history_visibility", "m.room.guest_access"],
    );
    const [createEv, join] = events as [Pdu, Pdu];
    assert.equal(createEv.room_id, undefined, "a v12 create event has no room_id");
    assert.deepEqual(createEv.content, { room_version: "12" });
    assert.equal(roomId, `!${(await t.store.timeline(roomId))[0]!.eventId.slice(1)}`);
    assert.deepEqual(join.content, { membership: "join" });
    assert.equal(join.state_key, t.creator);
    // v12: creators are privileged and not listed in users.
    assert.deepEqual((await stateContent(roomId, "m.room.power_levels"))!.users, {});
    assert.deepEqual(await stateContent(roomId, "m.room.join_rules"), { join_rule: "invite" });
    assert.deepEqual(await stateContent(roomId, "m.room.history_visibility"), { history_visibility: "shared" });
    assert.deepEqual(await stateContent(roomId, "m.room.guest_access"), { guest_access: "can_join" });
    const list = await t.admin.get(`${ADMIN}/rooms`);
    assert.ok(list.body.rooms.includes(roomId));
  });

  test("public_chat: public join rule, no guest access, invite level 0", async () => {
    const { roomId } = await create({ preset: "public_chat" });
    assert.deepEqual(await stateContent(roomId, "m.room.join_rules"), { join_rule: "public" });
    assert.equal(await stateContent(roomId, "m.room.guest_access"), undefined);
    assert.equal((await stateContent(roomId, "m.room.power_levels"))!.invite, 0);
  });

  test("trusted_private_chat: local invitees are invited with power 100", async () => {
    const friend = t.local("friend");
    const { roomId } = await create({ preset: "trusted_private_chat", invite: [friend] });
    assert.equal(await t.store.getMembership(roomId, friend), "invite");
    assert.equal(((await stateContent(roomId, "m.room.power_levels"))!.users as Record<string, number>)[friend], 100);
  });

  test("room_version 10: legacy room ID, creator in the create content and in power levels", async () => {
    const { roomId, res } = await create({ room_version: "10", join_rule: "knock_restricted" });
    assert.equal(res.body.room_version, "10");
    assert.match(roomId, /^![A-Za-z0-9]+:gatehouse\.test$/);
    const createEv = (await timeline(roomId))[0]!;
    assert.equal(createEv.room_id, roomId);
    assert.deepEqual(createEv.content, { room_version: "10", creator: t.creator });
    assert.deepEqual((await stateContent(roomId, "m.room.power_levels"))!.users, { [t.creator]: 100 });
    assert.deepEqual(await stateContent(roomId, "m.room.join_rules"), { join_rule: "knock_restricted" });
  });

  test("room_alias_name, name, topic: canonical alias event and alias listed; a taken alias is 400 M_ROOM_IN_USE", async () => {
    const alias = `lobby${Date.now()}`;
    const { roomId, res } = await create({ room_alias_name: alias, name: "Lobby", topic: "Say hi" });
    assert.equal(res.body.room_alias, `#${alias}:gatehouse.test`);
    assert.deepEqual(await stateContent(roomId, "m.room.canonical_alias"), { alias: `#${alias}:gatehouse.test` });
    const summary = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}`);
    assert.equal(summary.status, 200);
    assert.deepEqual(summary.body.aliases, [`#${alias}:gatehouse.test`]);
    assert.equal(summary.body.name, "Lobby");
    assert.equal(summary.body.topic, "Say hi");
    assert.equal(summary.body.room_version, "12");
    assert.equal(summary.body.creator, t.creator);
    assert.deepEqual(summary.body.membership_counts, { join: 1 });
    assert.deepEqual(summary.body.joined_servers, ["gatehouse.test"]);

    const dup = await t.assertNothingWritten(() => t.admin.post(`${ADMIN}/rooms`).send({ creator: t.creator, room_alias_name: alias }));
    assertError(dup, 400, "M_ROOM_IN_USE");
    assertError(await t.admin.post(`${ADMIN}/rooms`).send({ creator: t.creator, room_alias_name: "bad alias" }), 400, "M_INVALID_PARAM");
  });

  test("initial_state replaces preset state and adds its own; join_rule shortcut", async () => {
    const { roomId } = await create({
      join_rule: "knock",
      initial_state: [
        { type: "m.room.history_visibility", content: { history_visibility: "joined" } },
        { type: "m.room.server_acl", state_key: "", content: { allow: ["*"], deny: ["evil.example"] } },
        { type: "org.example.custom", state_key: "k", content: { v: 1 } },
      ],
    });
    const events = await timeline(roomId);
    assert.equal(events.filter((e) => e.type === "m.room.history_visibility").length, 1, "preset history_visibility must not be sent too");
    assert.deepEqual(await stateContent(roomId, "m.room.history_visibility"), { history_visibility: "joined" });
    assert.deepEqual(await stateContent(roomId, "m.room.server_acl"), { allow: ["*"], deny: ["evil.example"] });
    assert.deepEqual(await stateContent(roomId, "org.example.custom", "k"), { v: 1 });
    assert.deepEqual(await stateContent(roomId, "m.room.join_rules"), { join_rule: "knock" });
  });

  test("power_level_content_override is merged over the defaults", async () => {
    const mod = t.local("mod");
    const { roomId } = await create({ room_version: "11", power_level_content_override: { invite: 0, users: { [t.creator]: 100, [mod]: 50 }, events_default: 10 } });
    const pl = (await stateContent(roomId, "m.room.power_levels"))!;
    assert.equal(pl.invite, 0);
    assert.equal(pl.events_default, 10);
    assert.deepEqual(pl.users, { [t.creator]: 100, [mod]: 50 });
    assert.equal(pl.kick, 50, "defaults not overridden are kept");
  });

  for (const version of ["1", "2", "99", "banana"]) {
    test(`room_version ${version}: 400 M_UNSUPPORTED_ROOM_VERSION, nothing written`, async () => {
      const res = await t.assertNothingWritten(() => t.admin.post(`${ADMIN}/rooms`).send({ creator: t.creator, room_version: version }));
      assertError(res, 400, "M_UNSUPPORTED_ROOM_VERSION");
    });
  }

  test("invalid requests: 400, nothing written", async () => {
    const bad = async (body: unknown, errcode: string) => {
      const res = await t.assertNothingWritten(() => t.admin.post(`${ADMIN}/rooms`).send(body as object));
      assertError(res, 400, errcode);
    };
    await bad({}, "M_INVALID_PARAM"); // no creator
    await bad({ creator: remote.userId("x") }, "M_INVALID_PARAM"); // not local
    await bad({ creator: t.creator, preset: "party" }, "M_INVALID_PARAM");
    await bad({ creator: t.creator, join_rule: "sometimes" }, "M_INVALID_PARAM");
    await bad({ creator: t.creator, room_version: "6", join_rule: "knock" }, "M_INVALID_PARAM");
    await bad({ creator: t.creator, room_version: "9", join_rule: "knock_restricted" }, "M_INVALID_PARAM");
    await bad({ creator: t.creator, invite: ["not-a-user"] }, "M_INVALID_PARAM");
    await bad({ creator: t.creator, initial_state: [{ type: "m.room.topic" }] }, "M_BAD_JSON");
    await bad({ creator: t.creator, power_level_content_override: [1] }, "M_BAD_JSON");
    await bad([1, 2], "M_BAD_JSON");
    const notJson = await t.admin.post(`${ADMIN}/rooms`).set("Content-Type", "application/json").send("{nope");
    assertError(notJson, 400, "M_NOT_JSON");
  });
});

describe("state, messages, members", () => {
  let roomId: string;
  before(async () => {
    ({ roomId } = await create({ join_rule: "knock" }));
  });

  test("PUT then GET a state event; GET /state lists it with its event ID", async () => {
    const put = await t.admin.put(`${ADMIN}/rooms/${enc(roomId)}/state/m.room.topic/`).send({ content: { topic: "New topic" } });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    const get = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/state/m.room.topic`);
    assert.equal(get.status, 200);
    assert.deepEqual(get.body, { topic: "New topic" });
    const withKey = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/state/m.room.topic/`);
    assert.deepEqual(withKey.body, { topic: "New topic" });
    const all = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/state`);
    const topic = (all.body.state as (Pdu & { event_id: string })[]).find((e) => e.type === "m.room.topic");
    assert.equal(topic?.event_id, put.body.event_id);
    assert.deepEqual(topic?.content, { topic: "New topic" });
    const g = await t.graph(roomId);
    assert.equal(g.stateIds.get(stateField("m.room.topic", "")), put.body.event_id);
    assert.equal((all.body.state as unknown[]).length, g.stateIds.size);
  });

  test("state with a state key (URL-encoded user ID)", async () => {
    // A user-ID state key must be the sender's own (auth rules), so use the creator's.
    const key = t.creator;
    const put = await t.admin.put(`${ADMIN}/rooms/${enc(roomId)}/state/org.example.per_user/${enc(key)}`).send({ content: { x: 1 } });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    const get = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/state/org.example.per_user/${enc(key)}`);
    assert.deepEqual(get.body, { x: 1 });
    assert.equal((await t.store.getStateEvent(roomId, "org.example.per_user", key))?.content.x, 1);
  });

  test("GET of missing state: 404 M_NOT_FOUND; unknown room: 404", async () => {
    assertError(await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/state/m.room.avatar`), 404, "M_NOT_FOUND");
    assertError(await t.admin.get(`${ADMIN}/rooms/${enc("!nope:gatehouse.test")}/state/m.room.topic`), 404, "M_NOT_FOUND");
    assertError(await t.admin.get(`${ADMIN}/rooms/${enc("!nope:gatehouse.test")}`), 404, "M_NOT_FOUND");
  });

  test("PUT refused: content not an object (400 M_BAD_JSON), no power (403), remote sender (403), unknown room (404); nothing written", async () => {
    const member = t.local("lowly");
    assert.equal((await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/invite`).send({ user_id: member })).status, 200);
    assert.equal((await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/join`).send({ user_id: member })).status, 200);
    const put = (path: string, body: unknown) => t.assertNothingWritten(() => t.admin.put(`${ADMIN}/rooms/${enc(roomId)}/state/${path}`).send(body as object));
    assertError(await put("m.room.topic/", { content: "text" }), 400, "M_BAD_JSON");
    assertError(await put("m.room.power_levels/", { content: { users: { [member]: 100 } }, sender: member }), 403, "M_FORBIDDEN");
    assertError(await put("m.room.topic/", { content: { topic: "x" }, sender: remote.userId("r") }), 403, "M_FORBIDDEN");
    assertError(
      await t.assertNothingWritten(() => t.admin.put(`${ADMIN}/rooms/${enc("!nope:gatehouse.test")}/state/m.room.topic/`).send({ content: { topic: "x" } })),
      404,
      "M_NOT_FOUND",
    );
  });

  test("send a message and read it back through /events/{eventId}", async () => {
    const sent = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/send/m.room.message`).send({ content: { msgtype: "m.text", body: "hello" } });
    assert.equal(sent.status, 200, JSON.stringify(sent.body));
    const ev = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/events/${enc(sent.body.event_id)}`);
    assert.equal(ev.status, 200);
    assert.equal(ev.body.event_id, sent.body.event_id);
    assert.equal(ev.body.sender, t.creator);
    assert.deepEqual(ev.body.content, { msgtype: "m.text", body: "hello" });
    assertError(await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/events/${enc("$missing")}`), 404, "M_NOT_FOUND");
  });

  test("local join and leave; members list", async () => {
    const u = t.local("visitor");
    // Knock rule: an uninvited local user cannot join.
    assertError(await t.assertNothingWritten(() => t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/join`).send({ user_id: u })), 403, "M_FORBIDDEN");
    assert.equal((await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/invite`).send({ user_id: u })).status, 200);
    assert.equal((await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/join`).send({ user_id: u })).status, 200);
    let members = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/members`);
    assert.equal(members.body.members[u], "join");
    assert.equal(members.body.members[t.creator], "join");
    assert.equal((await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/leave`).send({ user_id: u })).status, 200);
    members = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/members`);
    assert.equal(members.body.members[u], "leave");
    assertError(await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/join`).send({}), 400, "M_INVALID_PARAM");
  });
});

describe("GET /rooms/{roomId}/knocks", () => {
  test("pending knocks in time order with reason and display name; tombstone names the replacement", async () => {
    const { roomId } = await create({ join_rule: "knock" });
    assert.deepEqual((await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/knocks`)).body, { knocks: [] });
    const a = remote.userId("first");
    const b = remote.userId("second");
    const ka = await t.knock(remote, roomId, a, { reason: "please" });
    const kb = await t.knock(remote, roomId, b, { displayname: "Second" });
    const res = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/knocks`);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.knocks, [
      { user_id: a, event_id: ka.eventId, reason: "please", displayname: null, ts: ka.pdu.origin_server_ts },
      { user_id: b, event_id: kb.eventId, reason: null, displayname: "Second", ts: kb.pdu.origin_server_ts },
    ]);
    const { roomId: replacement } = await create({});
    await t.setState(roomId, "m.room.tombstone", "", { body: "moved", replacement_room: replacement });
    const after = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/knocks`);
    assert.equal(after.body.replacement_room, replacement);
    assert.equal(after.body.knocks.length, 2);
    assertError(await t.admin.get(`${ADMIN}/rooms/${enc("!nope:gatehouse.test")}/knocks`), 404, "M_NOT_FOUND");
  });
});
