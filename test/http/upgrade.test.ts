// The admin room upgrade: POST /_gatehouse/admin/v1/rooms/{roomId}/upgrade {new_version, sender?}
// (src/rooms/upgrade.ts, ../shared/spec/upgrades.md), against a real Gatehouse on real Redis with a
// fake remote server that knocks and joins.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, ADMIN, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";
import { stateField } from "../../src/store/room-store.js";
import { TRANSFERABLE_STATE } from "../../src/rooms/upgrade.js";
import type { LocalEventInput, PersistedEvent } from "../../src/rooms/room-service.js";
import type { PersistInput, PersistResult } from "../../src/store/room-store.js";

let t: TestGatehouse;
let remote: RemoteServer;
let n = 0;
const fresh = (what = "user") => remote.userId(`${what}${++n}`);

before(async () => {
  t = await TestGatehouse.start({ name: "upgrade" });
  remote = await RemoteServer.start();
});
after(async () => {
  await t.cleanup();
  await remote.close();
});

function assertError(res: { status: number; body: Record<string, unknown> }, status: number, errcode: string, message?: RegExp) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(res.body.errcode, errcode, JSON.stringify(res.body));
  if (message) assert.match(res.body.error as string, message);
}

const upgrade = (roomId: string, body: Record<string, unknown>) => t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/upgrade`).send(body);
const content = async (roomId: string, type: string, stateKey = "") => (await t.store.getStateEvent(roomId, type, stateKey))?.content as Record<string, unknown> | undefined;

const ACL = { allow: ["*"], deny: ["evil.example"], allow_ip_literals: true };

interface RichRoom {
  roomId: string;
  alias: string;
  member: string;
  pendingKnocker: string;
  banned: string;
}

/**
 * A knock room with every kind of transferable state, a local alias (canonical), a remote member
 * (joined through knock → accept → join), a pending knock and a ban.
 */
async function richRoom(version: string, extra: Record<string, unknown> = {}): Promise<RichRoom> {
  const aliasName = `upgrade${++n}`;
  const roomId = await t.createRoom({
    room_version: version,
    join_rule: "knock",
    name: `Room ${n}`,
    topic: "What we talk about",
    room_alias_name: aliasName,
    initial_state: [
      { type: "m.room.avatar", content: { url: "mxc://gatehouse.test/avatar" } },
      { type: "m.room.server_acl", content: ACL },
      { type: "m.room.encryption", content: { algorithm: "m.megolm.v1.aes-sha2" } },
      { type: "m.room.guest_access", content: { guest_access: "forbidden" } },
      { type: "m.room.history_visibility", content: { history_visibility: "joined" } },
    ],
    ...extra,
  });
  const member = fresh("member");
  await t.knockAcceptJoin(remote, roomId, member);
  const banned = fresh("banned");
  const ban = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/ban`).send({ user_id: banned, reason: "spam" });
  assert.equal(ban.status, 200, JSON.stringify(ban.body));
  const pendingKnocker = fresh("knocker");
  await t.knock(remote, roomId, pendingKnocker, { reason: "let me in" });
  return { roomId, alias: `#${aliasName}:${t.serverName}`, member, pendingKnocker, banned };
}

/** Hosted rooms whose create event names `roomId` as predecessor. */
async function replacementsOf(roomId: string): Promise<string[]> {
  const out: string[] = [];
  for (const r of await t.store.listRooms()) {
    const create = await content(r, "m.room.create");
    if ((create?.predecessor as { room_id?: string } | undefined)?.room_id === roomId) out.push(r);
  }
  return out;
}

/** Everything a finished upgrade of a richRoom must show, in both rooms. */
async function assertUpgraded(room: RichRoom, newRoom: string, target: string, before: Map<string, Record<string, unknown> | undefined>) {
  const { roomId: old } = room;
  assert.deepEqual(await replacementsOf(old), [newRoom], "exactly one replacement room");
  const summary = (await t.admin.get(`${ADMIN}/rooms/${enc(newRoom)}`)).body;
  assert.equal(summary.room_version, target);
  assert.equal(summary.creator, t.creator);

  // The create event: predecessor (event_id only before v12), room_version, no `type` for a plain room.
  const createId = (await t.graph(newRoom)).stateIds.get(stateField("m.room.create", ""))!;
  const create = await t.store.getEvent(newRoom, createId);
  assert.equal(create!.content.room_version, target);
  const predecessor = create!.content.predecessor as Record<string, unknown>;
  assert.equal(predecessor.room_id, old);
  if (target === "12") {
    assert.deepEqual(Object.keys(predecessor), ["room_id"], "v12: no predecessor.event_id (the tombstone needs the new room ID: a cycle)");
    assert.equal(createId, `$${newRoom.slice(1)}`, "v12: the room ID is the create event's hash");
  } else {
    assert.equal(typeof predecessor.event_id, "string");
    assert.ok(await t.store.getEvent(old, predecessor.event_id as string), "predecessor.event_id is an event of the old room");
  }
  assert.ok(!("type" in create!.content));

  // Transferable state, copied as it was.
  for (const type of TRANSFERABLE_STATE) assert.deepEqual(await content(newRoom, type), before.get(type), type);
  assert.deepEqual(await content(newRoom, "m.room.server_acl"), ACL);

  // Power levels: the old ones with the target's creator rule.
  const oldPl = before.get("m.room.power_levels")!;
  const newPl = (await content(newRoom, "m.room.power_levels"))!;
  const users = newPl.users as Record<string, number>;
  const events = newPl.events as Record<string, number>;
  if (target === "12") {
    assert.ok(!(t.creator in users), "v12: the upgrader (a creator) must not be in users");
    assert.ok(events["m.room.tombstone"]! > (newPl.state_default as number), "v12: m.room.tombstone above state_default");
  } else {
    assert.equal(users[t.creator], 100);
  }
  for (const key of ["ban", "kick", "redact", "invite", "events_default", "state_default", "users_default"]) assert.equal(newPl[key], oldPl[key], key);

  // Memberships are not copied, bans are; the upgrader joined.
  const members = await t.members(newRoom);
  assert.deepEqual(members, { [t.creator]: "join", [room.banned]: "ban" });
  assert.deepEqual(await content(newRoom, "m.room.member", room.banned), { membership: "ban", reason: "spam" });

  // Aliases: the local alias points at the new room, the canonical alias moved.
  assert.equal(await t.store.aliasTarget(room.alias), newRoom);
  assert.deepEqual(await t.store.aliasesOf(old), []);
  assert.deepEqual(await content(newRoom, "m.room.canonical_alias"), { alias: room.alias });
  assert.deepEqual(await content(old, "m.room.canonical_alias"), {});

  // The old room: tombstone, restricted power levels (max(50, users_default + 1)).
  const tombstone = await content(old, "m.room.tombstone");
  assert.deepEqual(tombstone, { body: "This room has been replaced", replacement_room: newRoom });
  const restricted = (await content(old, "m.room.power_levels"))!;
  const restrictTo = Math.max(50, ((oldPl.users_default as number) ?? 0) + 1);
  assert.equal(restricted.events_default, Math.max(restrictTo, oldPl.events_default as number));
  assert.equal(restricted.invite, Math.max(restrictTo, oldPl.invite as number));
  assert.deepEqual(restricted.users, oldPl.users, "the old room's users keep their levels");
  assert.equal((await t.store.getRoom(old))!.tombstone, newRoom);
}

async function stateBefore(roomId: string): Promise<Map<string, Record<string, unknown> | undefined>> {
  const out = new Map<string, Record<string, unknown> | undefined>();
  for (const type of [...TRANSFERABLE_STATE, "m.room.power_levels"]) out.set(type, await content(roomId, type));
  return out;
}

describe("permissions and input", () => {
  test("a joined user without power for m.room.tombstone: 403 M_FORBIDDEN, nothing written", async () => {
    const roomId = await t.createRoom({ room_version: "11" });
    const weak = t.local(`weak${++n}`);
    assert.equal((await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/invite`).send({ user_id: weak })).status, 200);
    assert.equal((await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/join`).send({ user_id: weak })).status, 200);
    const res = await t.assertNothingWritten(() => upgrade(roomId, { new_version: "12", sender: weak }));
    assertError(res, 403, "M_FORBIDDEN", /may not send m\.room\.tombstone/);
    assert.deepEqual(await replacementsOf(roomId), []);
  });

  test("a user with the power level who is not joined: 403 M_FORBIDDEN before any replacement room exists", async () => {
    const roomId = await t.createRoom({ room_version: "11" });
    const absent = t.local(`absent${++n}`);
    const pl = (await content(roomId, "m.room.power_levels"))!;
    await t.setState(roomId, "m.room.power_levels", "", { ...pl, users: { ...(pl.users as object), [absent]: 100 } });
    const res = await t.assertNothingWritten(() => upgrade(roomId, { new_version: "12", sender: absent }));
    assertError(res, 403, "M_FORBIDDEN");
    assert.deepEqual(await replacementsOf(roomId), []);
  });

  test("sender not on Gatehouse's server: 400 M_INVALID_PARAM", async () => {
    const roomId = await t.createRoom();
    assertError(await upgrade(roomId, { new_version: "12", sender: fresh() }), 400, "M_INVALID_PARAM");
  });

  test("unknown or unsupported version: 400 M_UNSUPPORTED_ROOM_VERSION; missing: 400 M_INVALID_PARAM; unknown room: 404", async () => {
    const roomId = await t.createRoom({ room_version: "11" });
    for (const v of ["1", "2", "13", "banana", "org.example.custom"]) {
      const res = await t.assertNothingWritten(() => upgrade(roomId, { new_version: v }));
      assertError(res, 400, "M_UNSUPPORTED_ROOM_VERSION");
    }
    assertError(await upgrade(roomId, {}), 400, "M_INVALID_PARAM");
    assertError(await upgrade(roomId, { new_version: 12 }), 400, "M_INVALID_PARAM");
    assertError(await upgrade("!nowhere:gatehouse.test", { new_version: "12" }), 404, "M_NOT_FOUND");
  });
});

describe("a finished upgrade", () => {
  test("11 → 12: new room, state, power levels, bans, aliases, tombstone, restriction; knocks on the old room", async () => {
    const room = await richRoom("11");
    const before = await stateBefore(room.roomId);
    const res = await upgrade(room.roomId, { new_version: "12" });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.room_version, "12");
    assert.equal(res.body.resumed, false);
    const newRoom = res.body.replacement_room as string;
    assert.match(newRoom, /^![A-Za-z0-9_-]{43}$/, "v12 room ID: ! + unpadded url-safe base64 hash, no server name");
    await assertUpgraded(room, newRoom, "12", before);
    // The old room's knock join rule carried over (v12 supports knocking).
    assert.deepEqual(await content(newRoom, "m.room.join_rules"), { join_rule: "knock" });

    // make_knock on the old room: 403 naming the replacement. The exact body:
    //   {"errcode":"M_FORBIDDEN","error":"This room has been replaced by <new room>","replacement_room":"<new room>"}
    const made = await t.makeMembership(remote, "knock", room.roomId, fresh(), ["11", "12"]);
    assert.equal(made.status, 403);
    assert.deepEqual(made.body, { errcode: "M_FORBIDDEN", error: `This room has been replaced by ${newRoom}`, replacement_room: newRoom });
    // make_join likewise; make_leave still works (members may leave the old room).
    assert.equal((await t.makeMembership(remote, "join", room.roomId, fresh(), ["11"])).body.replacement_room, newRoom);
    assert.equal((await t.makeMembership(remote, "leave", room.roomId, room.member, ["11"])).status, 200);

    // The knock pending at upgrade time is listed, with the replacement room to point the knocker at.
    const knocks = await t.admin.get(`${ADMIN}/rooms/${enc(room.roomId)}/knocks`);
    assert.equal(knocks.status, 200);
    assert.deepEqual(knocks.body.knocks.map((k: { user_id: string; reason: string }) => [k.user_id, k.reason]), [[room.pendingKnocker, "let me in"]]);
    assert.equal(knocks.body.replacement_room, newRoom);
    assert.equal((await t.admin.get(`${ADMIN}/rooms/${enc(room.roomId)}`)).body.replacement_room, newRoom);
    // The new room knows nothing of the old room's knocks.
    assert.deepEqual((await t.admin.get(`${ADMIN}/rooms/${enc(newRoom)}/knocks`)).body, { knocks: [] });
  });

  test("the old room's events reach the remote member's server; the new room's reach it once it joins there", async () => {
    const room = await richRoom("11");
    const queueKey = t.gh.keys.outboundPdus(remote.serverName);
    const queuedBefore = (await t.redis.lrange(queueKey, 0, -1)).length;
    const res = await upgrade(room.roomId, { new_version: "12" });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const newRoom = res.body.replacement_room as string;
    const added = (await t.redis.lrange(queueKey, 0, -1)).slice(queuedBefore);
    const oldIds = await t.graph(room.roomId);
    const id = (type: string) => `${room.roomId} ${oldIds.stateIds.get(stateField(type, ""))}`;
    // Old room: canonical alias cleared, tombstone, restricted power levels, in that order.
    assert.deepEqual(added, [id("m.room.canonical_alias"), id("m.room.tombstone"), id("m.room.power_levels")]);
    // New room: only Gatehouse is in it, so nothing is queued for anyone yet.
    assert.ok(!added.some((e) => e.startsWith(`${newRoom} `)));

    // The remote member follows the tombstone: knocks on the new room, is accepted, joins.
    await t.knockAcceptJoin(remote, newRoom, room.member);
    const sent = await t.admin.post(`${ADMIN}/rooms/${enc(newRoom)}/send/m.room.message`).send({ content: { msgtype: "m.text", body: "welcome to the new room" } });
    assert.equal(sent.status, 200);
    assert.equal((await t.redis.lrange(queueKey, -1, -1))[0], `${newRoom} ${sent.body.event_id}`);
    // The sender's view: the remote server is a destination with the PDUs pending (workers are off here).
    const q = await t.admin.get(`${ADMIN}/queue/${enc(remote.serverName)}`);
    assert.equal(q.status, 200);
    assert.equal(q.body.pending_pdus, (await t.redis.llen(queueKey)));
    assert.ok(q.body.pending_pdus >= added.length + 1);
  });

  test("10 → 11: predecessor.event_id, upgrader at 100, restriction to users_default + 1", async () => {
    const room = await richRoom("10", { power_level_content_override: { users_default: 60, invite: 70 } });
    const before = await stateBefore(room.roomId);
    const res = await upgrade(room.roomId, { new_version: "11" });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.room_version, "11");
    const newRoom = res.body.replacement_room as string;
    assert.match(newRoom, /^!.+:gatehouse\.test$/);
    await assertUpgraded(room, newRoom, "11", before);
    const restricted = (await content(room.roomId, "m.room.power_levels"))!;
    assert.equal(restricted.events_default, 61);
    assert.equal(restricted.invite, 70, "a level already above the restriction is kept, not lowered");
  });

  test("a space: the create event's type and m.space.child are copied; a plain room's m.space.child is not", async () => {
    const child = (k: string) => ({ type: "m.space.child", state_key: k, content: { via: [t.serverName], order: k.slice(1, 4) } });
    const space = await t.createRoom({
      room_version: "11",
      join_rule: "invite",
      creation_content: { type: "m.space" },
      initial_state: [child("!aaa:gatehouse.test"), child("!bbb:elsewhere.example")],
    });
    const res = await upgrade(space, { new_version: "12" });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const newSpace = res.body.replacement_room as string;
    const create = (await content(newSpace, "m.room.create"))!;
    assert.equal(create.type, "m.space");
    assert.deepEqual(create.predecessor, { room_id: space });
    for (const c of [child("!aaa:gatehouse.test"), child("!bbb:elsewhere.example")]) {
      assert.deepEqual(await content(newSpace, "m.space.child", c.state_key), c.content);
    }

    const plain = await t.createRoom({ room_version: "11", initial_state: [child("!ccc:gatehouse.test")] });
    const up = await upgrade(plain, { new_version: "12" });
    assert.equal(up.status, 200);
    assert.equal(await content(up.body.replacement_room, "m.space.child", "!ccc:gatehouse.test"), undefined);
    assert.ok(!("type" in (await content(up.body.replacement_room, "m.room.create"))!));
  });

  test("repeating a finished upgrade returns the same replacement room and writes nothing", async () => {
    const room = await richRoom("11");
    const first = await upgrade(room.roomId, { new_version: "12" });
    assert.equal(first.status, 200);
    for (const body of [{ new_version: "12" }, { new_version: "11" }]) {
      const again = await t.assertNothingWritten(() => upgrade(room.roomId, body));
      assert.equal(again.status, 200, JSON.stringify(again.body));
      // room_version is the replacement room's, whatever this call asked for.
      assert.deepEqual(again.body, { replacement_room: first.body.replacement_room, room_version: "12", resumed: true });
    }
    assert.deepEqual(await replacementsOf(room.roomId), [first.body.replacement_room]);
  });

  test("two upgrade calls at once build one replacement room", async () => {
    const room = await richRoom("11");
    const before = await stateBefore(room.roomId);
    const [a, b] = await Promise.all([upgrade(room.roomId, { new_version: "12" }), upgrade(room.roomId, { new_version: "12" })]);
    assert.equal(a.status, 200, JSON.stringify(a.body));
    assert.equal(b.status, 200, JSON.stringify(b.body));
    assert.equal(a.body.replacement_room, b.body.replacement_room);
    await assertUpgraded(room, a.body.replacement_room, "12", before);
    // One tombstone event in the old room's timeline.
    const ids = (await t.store.timeline(room.roomId)).map((e) => e.eventId);
    const events = await t.store.getEvents(room.roomId, ids);
    assert.equal([...events.values()].filter((e) => e.type === "m.room.tombstone").length, 1);
  });
});

describe("resuming an interrupted upgrade", () => {
  type Where = { room: "old" | "new"; type: string; membership?: string };
  // Every write of the upgrade after the replacement room was recorded, in order.
  const points: [string, Where][] = [
    ["the upgrader's join in the new room", { room: "new", type: "m.room.member", membership: "join" }],
    ["the new room's power levels", { room: "new", type: "m.room.power_levels" }],
    ["the copied topic (mid-way through the state)", { room: "new", type: "m.room.topic" }],
    ["the copied ban", { room: "new", type: "m.room.member", membership: "ban" }],
    ["the new room's canonical alias", { room: "new", type: "m.room.canonical_alias" }],
    ["clearing the old room's canonical alias", { room: "old", type: "m.room.canonical_alias" }],
    ["the tombstone", { room: "old", type: "m.room.tombstone" }],
    ["restricting the old room (after the tombstone)", { room: "old", type: "m.room.power_levels" }],
  ];

  for (const [label, where] of points) {
    test(`fails once at ${label}: the second call resumes into the same room and completes it`, async () => {
      const room = await richRoom("11");
      const before = await stateBefore(room.roomId);
      const rooms = t.gh.rooms;
      const original = rooms.sendLocalEvent;
      let failed = 0;
      // The RoomService instance the admin route uses: fail the matching write once, like a crash.
      rooms.sendLocalEvent = async function (this: typeof rooms, roomId: string, input: LocalEventInput, extra?: readonly string[]): Promise<PersistedEvent> {
        const isOld = roomId === room.roomId;
        const matches =
          (where.room === "old") === isOld &&
          input.type === where.type &&
          (where.membership === undefined || (input.content as { membership?: string }).membership === where.membership);
        if (matches && failed === 0) {
          failed++;
          throw new Error(`simulated crash at ${label}`);
        }
        return original.call(this, roomId, input, extra);
      };
      let first;
      try {
        first = await upgrade(room.roomId, { new_version: "12" });
      } finally {
        rooms.sendLocalEvent = original;
      }
      assert.equal(failed, 1, "the interruption happened");
      assert.equal(first.status, 500, JSON.stringify(first.body));
      const recorded = await t.store.getRoomField(room.roomId, "upgrade_to");
      assert.ok(recorded, "the replacement room was recorded before the interruption");
      assert.deepEqual(await replacementsOf(room.roomId), [recorded]);

      const second = await upgrade(room.roomId, { new_version: "12" });
      assert.equal(second.status, 200, JSON.stringify(second.body));
      assert.equal(second.body.replacement_room, recorded);
      assert.equal(second.body.resumed, true);
      assert.equal(second.body.room_version, "12");
      await assertUpgraded(room, recorded, "12", before);

      const third = await t.assertNothingWritten(() => upgrade(room.roomId, { new_version: "12" }));
      assert.deepEqual(third.body, { replacement_room: recorded, room_version: "12", resumed: true });
    });
  }

  test("fails between recording the replacement room and persisting its create event", async () => {
    const room = await richRoom("10");
    const before = await stateBefore(room.roomId);
    const store = t.gh.store;
    const original = store.persistEvent;
    let failed = 0;
    store.persistEvent = async function (this: typeof store, input: PersistInput): Promise<PersistResult> {
      if (input.createRoom && failed === 0) {
        failed++;
        throw new Error("simulated crash before the create event");
      }
      return original.call(this, input);
    };
    let first;
    try {
      first = await upgrade(room.roomId, { new_version: "11" });
    } finally {
      store.persistEvent = original;
    }
    assert.equal(first.status, 500);
    const recorded = (await t.store.getRoomField(room.roomId, "upgrade_to"))!;
    assert.equal(await t.store.getRoom(recorded), null, "recorded, not created yet");
    const second = await upgrade(room.roomId, { new_version: "11" });
    assert.equal(second.status, 200, JSON.stringify(second.body));
    assert.deepEqual(second.body, { replacement_room: recorded, room_version: "11", resumed: true });
    await assertUpgraded(room, recorded, "11", before);
  });

  test("resumed by another admin than the one who started it", async () => {
    const room = await richRoom("11");
    const before = await stateBefore(room.roomId);
    const other = t.local(`moderator${++n}`);
    const pl = (await content(room.roomId, "m.room.power_levels"))!;
    await t.setState(room.roomId, "m.room.power_levels", "", { ...pl, users: { ...(pl.users as object), [other]: 100 } });
    before.set("m.room.power_levels", await content(room.roomId, "m.room.power_levels"));
    assert.equal((await t.admin.post(`${ADMIN}/rooms/${enc(room.roomId)}/invite`).send({ user_id: other })).status, 200);
    assert.equal((await t.admin.post(`${ADMIN}/rooms/${enc(room.roomId)}/join`).send({ user_id: other })).status, 200);
    const rooms = t.gh.rooms;
    const original = rooms.sendLocalEvent;
    let failed = 0;
    rooms.sendLocalEvent = async function (this: typeof rooms, roomId: string, input: LocalEventInput, extra?: readonly string[]) {
      if (roomId !== room.roomId && input.type === "m.room.name" && failed++ === 0) throw new Error("simulated crash");
      return original.call(this, roomId, input, extra);
    };
    try {
      assert.equal((await upgrade(room.roomId, { new_version: "12" })).status, 500);
    } finally {
      rooms.sendLocalEvent = original;
    }
    const second = await upgrade(room.roomId, { new_version: "12", sender: other });
    assert.equal(second.status, 200, JSON.stringify(second.body));
    // The other admin is no creator of the new room: the new room's users list carries it at 100.
    await assertUpgraded(room, second.body.replacement_room, "12", before);
    assert.equal((await t.store.getStateEvent(room.roomId, "m.room.tombstone", ""))!.sender, other);
  });
});
