// PUT /_matrix/federation/v1/send/{txnId}: dedupe, limits, per-PDU results.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, ADMIN, FED, enc } from "../support/gatehouse.js";
import { RemoteServer, randomKey } from "../support/remote-server.js";
import { RoomStore, stateField } from "../../src/store/room-store.js";
import { computeEventId } from "../../src/protocol/event-hashing.js";
import { getRoomVersion } from "../../src/protocol/room-versions.js";
import type { Pdu } from "../../src/protocol/pdu.js";

let t: TestGatehouse;
let remote: RemoteServer;
let other: RemoteServer;
let roomId: string;
let user: string;
let n = 0;

before(async () => {
  t = await TestGatehouse.start({ name: "send" });
  [remote, other] = await Promise.all([RemoteServer.start(), RemoteServer.start()]);
  roomId = await t.createRoom({ room_version: "12" });
  user = remote.userId("alice");
  await t.knockAcceptJoin(remote, roomId, user);
});
after(async () => {
  await t.cleanup();
  await Promise.all([remote.close(), other.close()]);
});

const txnId = () => `txn-${Date.now()}-${++n}`;

function send(from: RemoteServer, id: string, pdus: unknown[], extra: Record<string, unknown> = {}) {
  return t.fed(from, "PUT", `${FED}/v1/send/${enc(id)}`, { origin: from.serverName, origin_server_ts: Date.now(), pdus, ...extra });
}

const message = (body: string, sender = user, room = roomId, server = remote) =>
  t.remoteEvent(server, room, { type: "m.room.message", sender, content: { msgtype: "m.text", body } });

describe("PUT /send: accepted PDUs", () => {
  test("a message from a joined remote user is persisted and answered with {}", async () => {
    const { pdu, eventId } = await message("hello");
    const res = await send(remote, txnId(), [pdu]);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body, { pdus: { [eventId]: {} } });
    assert.deepEqual(await t.store.getEvent(roomId, eventId), pdu);
    assert.deepEqual(await t.store.getExtremities(roomId), [eventId]);
    assert.equal((await t.store.timeline(roomId)).at(-1)?.eventId, eventId);
  });

  test("unsigned data another server attached is not stored or relayed", async () => {
    const { pdu, eventId } = await message("with unsigned");
    const res = await send(remote, txnId(), [{ ...pdu, unsigned: { age: 5, "org.example.injected": "x" } }]);
    assert.deepEqual(res.body.pdus[eventId], {});
    const stored = await t.store.getEvent(roomId, eventId);
    assert.ok(stored);
    assert.equal("unsigned" in stored, false);
  });

  test("a state event (display name change) updates current state", async () => {
    const { pdu, eventId } = await t.remoteEvent(remote, roomId, { type: "m.room.member", sender: user, state_key: user, content: { membership: "join", displayname: "Alice" } });
    const res = await send(remote, txnId(), [pdu]);
    assert.deepEqual(res.body, { pdus: { [eventId]: {} } });
    const g = await t.graph(roomId);
    assert.equal(g.stateIds.get(stateField("m.room.member", user)), eventId);
    assert.equal(await t.store.getMembership(roomId, user), "join");
  });

  test("an already-known PDU is answered {} and written again nowhere", async () => {
    const { pdu, eventId } = await message("once");
    await send(remote, txnId(), [pdu]);
    const res = await t.assertNothingWritten(() => send(remote, txnId(), [pdu]));
    assert.deepEqual(res.body, { pdus: { [eventId]: {} } });
  });

  test("an empty transaction (EDUs only) is answered with an empty pdus map", async () => {
    const res = await send(remote, txnId(), [], { edus: [{ edu_type: "m.typing", content: { room_id: roomId, user_id: user, typing: true } }] });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { pdus: {} });
  });
});

describe("PUT /send: one sender wake-up per transaction", () => {
  test("three PDUs queued for another server wake the sender once, after the last (why: they leave in one outbound transaction, not one each)", async () => {
    const room = await t.createRoom({ room_version: "12" });
    await t.knockAcceptJoin(remote, room, user);
    await t.knockAcceptJoin(other, room, other.userId("bob"));
    const pdus = [];
    for (const body of ["one", "two", "three"]) pdus.push((await message(body, user, room)).pdu);
    const sender = t.gh.sender;
    const wakes: string[][] = [];
    const wake = sender.wake;
    sender.wake = (destinations) => {
      wakes.push([...destinations]);
      wake.call(sender, destinations);
    };
    try {
      const res = await send(remote, txnId(), pdus);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(Object.values(res.body.pdus).filter((r) => JSON.stringify(r) === "{}").length, 3, JSON.stringify(res.body));
    } finally {
      sender.wake = wake;
    }
    assert.deepEqual(wakes, [[other.serverName]]);
  });
});

describe("PUT /send: one write per run of PDUs of a room", () => {
  /** A chain of messages by `sender`, each on the one before it (the first on the room's extremities). */
  async function chain(room: string, sender: string, bodies: string[], server = remote) {
    const g = await t.graph(room);
    const out: { pdu: Pdu; eventId: string }[] = [];
    for (const [i, body] of bodies.entries()) {
      const tpl = await t.template(room, { type: "m.room.message", sender, content: { msgtype: "m.text", body } });
      const prevs = out.length === 0 ? g.extremities : [out.at(-1)!.eventId];
      out.push(server.signEvent({ ...tpl, prev_events: prevs, depth: g.depth + 1 + i }, g.versionId));
    }
    return out;
  }

  /** The room store the federation routes write through (RoomService's). */
  const coreStore = (): RoomStore => (t.gh.rooms as unknown as { store: RoomStore }).store;

  /** Records the runs written (event IDs per persistEvents call, and its answer) while `fn` runs; `before` runs before each write. */
  async function runsDuring<T>(fn: () => Promise<T>, before?: (call: number) => Promise<void>): Promise<{ out: T; runs: string[][]; results: unknown[] }> {
    const store = coreStore();
    const original = store.persistEvents;
    const runs: string[][] = [];
    const results: unknown[] = [];
    store.persistEvents = async function (roomId, events, opts) {
      runs.push(events.map((e) => e.eventId));
      await before?.(runs.length);
      const r = await original.call(store, roomId, events, opts);
      results.push(r);
      return r;
    };
    try {
      return { out: await fn(), runs, results };
    } finally {
      store.persistEvents = original;
    }
  }

  test("five chained messages are written by one script call, fanned out once (why: the per-PDU script and round trips were the inbound cost)", async () => {
    const room = await t.createRoom({ room_version: "12" });
    await t.knockAcceptJoin(remote, room, user);
    await t.knockAcceptJoin(other, room, other.userId("bob"));
    const msgs = await chain(room, user, ["1", "2", "3", "4", "5"]);
    const fanout = coreStore().fanout;
    const drain = fanout.drain;
    const drains: string[] = [];
    fanout.drain = (r) => {
      drains.push(r);
      return drain.call(fanout, r);
    };
    let runs: string[][];
    try {
      const res = await runsDuring(() => send(remote, txnId(), msgs.map((m) => m.pdu)));
      runs = res.runs;
      assert.deepEqual(res.out.body, { pdus: Object.fromEntries(msgs.map((m) => [m.eventId, {}])) });
    } finally {
      fanout.drain = drain;
    }
    assert.deepEqual(runs, [msgs.map((m) => m.eventId)]);
    assert.deepEqual(drains, [room]);
    assert.deepEqual(await t.store.getExtremities(room), [msgs.at(-1)!.eventId]);
    const timeline = (await t.store.timeline(room)).map((e) => e.eventId);
    assert.deepEqual(timeline.slice(-5), msgs.map((m) => m.eventId));
    // Each message has its state groups, as one-by-one persistence gives it (before = after).
    const groups = await t.store.eventStateGroups(room, msgs.map((m) => m.eventId));
    assert.equal(groups.size, 5);
    for (const g of groups.values()) assert.equal(g.before, g.after);
    const queued = await t.redis.lrange(t.store.keys.outboundPdus(other.serverName), 0, -1);
    for (const m of msgs) assert.ok(queued.includes(`${room} ${m.eventId}`), `${m.eventId} queued for ${other.serverName}`);
  });

  test("a run on a forked room takes its state group IDs with no round trip (numbered from the snapshot's counter, which the write checks), and every event gets groups of its own (why: one HINCRBY per PDU was a Redis round trip per PDU)", async () => {
    const room = await t.createRoom({ room_version: "12" });
    await t.knockAcceptJoin(remote, room, user);
    // remote's chain is built before bob joins: each of its events is on a state without bob,
    // and the room's other extremity (bob's join) has him, so the current state after each is a
    // resolution that differs from the state after the event, a new state group per event.
    const msgs = await chain(room, user, ["1", "2", "3", "4"]);
    const bob = other.userId("bob");
    await t.knockAcceptJoin(other, room, bob);
    const fork = (await t.store.getExtremities(room))[0]!;
    const store = coreStore();
    const allocate = store.allocateStateGroups;
    const asked: number[] = [];
    store.allocateStateGroups = async function (r, count) {
      if (r === room) asked.push(count);
      return allocate.call(store, r, count);
    };
    try {
      const res = await send(remote, txnId(), msgs.map((m) => m.pdu));
      assert.deepEqual(res.body, { pdus: Object.fromEntries(msgs.map((m) => [m.eventId, {}])) });
    } finally {
      store.allocateStateGroups = allocate;
    }
    assert.deepEqual(asked, [], "no allocation round trip for the run");
    assert.deepEqual((await t.store.getExtremities(room)).sort(), [fork, msgs.at(-1)!.eventId].sort());
    const groups = await t.store.eventStateGroups(room, msgs.map((m) => m.eventId));
    assert.equal(groups.size, 4);
    for (const g of groups.values()) assert.ok((await t.store.loadStateGroup(room, g.before)).has(stateField("m.room.member", user)));
    // The current state after the run (a group the run wrote) is the resolution: bob is in it.
    const room0 = (await t.store.getRoom(room))!;
    const current = await t.store.loadStateGroup(room, room0.stateGroup!);
    assert.ok(current.has(stateField("m.room.member", bob)) && current.has(stateField("m.room.member", user)));
    // The room's current state is the resolved one: both members joined.
    assert.equal(await t.store.getMembership(room, user), "join");
    assert.equal(await t.store.getMembership(room, bob), "join");
  });

  test("a refused PDU inside a run is left out of the write; the PDUs around it are written together (why: a bad PDU never fails the others)", async () => {
    const room = await t.createRoom({ room_version: "12" });
    await t.knockAcceptJoin(remote, room, user);
    const [m1, m2] = await chain(room, user, ["before", "after"]);
    const stranger = await t.remoteEvent(remote, room, { type: "m.room.message", sender: remote.userId("stranger"), content: { body: "not a member" } });
    const { out, runs } = await runsDuring(() => send(remote, txnId(), [m1!.pdu, stranger.pdu, m2!.pdu]));
    assert.equal(out.status, 200);
    assert.deepEqual(out.body.pdus[m1!.eventId], {});
    assert.deepEqual(out.body.pdus[m2!.eventId], {});
    assert.match((out.body.pdus[stranger.eventId] as { error: string }).error, /auth events/);
    assert.deepEqual(runs, [[m1!.eventId, m2!.eventId]]);
    assert.equal(await t.store.getEvent(room, stranger.eventId), null);
    assert.equal(await t.store.roomOfEvent(stranger.eventId), null);
  });

  test("a state event ends a run: the PDUs after it are checked against the state it makes (why: a leave must refuse the leaver's next message)", async () => {
    const room = await t.createRoom({ room_version: "12" });
    const carol = remote.userId("carol");
    await t.knockAcceptJoin(remote, room, carol);
    const [m1] = await chain(room, carol, ["last words"]);
    const g = await t.graph(room);
    const leaveTpl = await t.template(room, { type: "m.room.member", sender: carol, state_key: carol, content: { membership: "leave" } });
    const leave = remote.signEvent({ ...leaveTpl, prev_events: [m1!.eventId], depth: g.depth + 2 }, g.versionId);
    const afterTpl = await t.template(room, { type: "m.room.message", sender: carol, content: { body: "after leaving" } });
    const afterLeave = remote.signEvent({ ...afterTpl, prev_events: [leave.eventId], depth: g.depth + 3 }, g.versionId);
    const { out, runs } = await runsDuring(() => send(remote, txnId(), [m1!.pdu, leave.pdu, afterLeave.pdu]));
    assert.deepEqual(out.body.pdus[m1!.eventId], {});
    assert.deepEqual(out.body.pdus[leave.eventId], {});
    assert.match((out.body.pdus[afterLeave.eventId] as { error: string }).error, /state before it/);
    // The leave ends the first run; the message after it is refused in planning, so nothing more is written.
    assert.deepEqual(runs, [[m1!.eventId, leave.eventId]]);
    assert.equal(await t.store.getMembership(room, carol), "leave");
    assert.equal(await t.store.getEvent(room, afterLeave.eventId), null);
  });

  test("another replica writing the room between planning and writing makes the run plan again and write whole (why: the stream check refuses the stale run)", async () => {
    const room = await t.createRoom({ room_version: "12" });
    await t.knockAcceptJoin(remote, room, user);
    const msgs = await chain(room, user, ["a", "b", "c"]);
    const g = await t.graph(room);
    // The other replica's write: a message on the same extremities, written with its own store.
    const replica = new RoomStore(t.redis, t.store.keys);
    const rival = await t.remoteEvent(remote, room, { type: "m.room.message", sender: user, content: { body: "rival" } });
    const current = (await t.store.getRoom(room))!.stateGroup!;
    const { out, runs, results } = await runsDuring(
      () => send(remote, txnId(), msgs.map((m) => m.pdu)),
      async (call) => {
        if (call !== 1) return;
        const written = await replica.persistEvent({
          roomId: room, eventId: rival.eventId, pdu: rival.pdu, expectedStream: null, updatesState: false,
          state: { groups: [], before: current, after: current, current: { group: current, set: [], del: [], members: [], reset: false } },
        });
        assert.equal(written, "persisted");
      },
    );
    assert.deepEqual(out.body, { pdus: Object.fromEntries(msgs.map((m) => [m.eventId, {}])) });
    assert.deepEqual(results, ["conflict", ["persisted", "persisted", "persisted"]]);
    assert.deepEqual(runs, [msgs.map((m) => m.eventId), msgs.map((m) => m.eventId)]);
    assert.deepEqual((await t.store.getExtremities(room)).sort(), [rival.eventId, msgs.at(-1)!.eventId].sort());
    assert.ok(g.extremities.every((x) => !(x in out.body.pdus)));
  });
});

describe("PUT /send: idempotency on (origin, txnId)", () => {
  test("a repeated txnId returns the stored response without reprocessing", async () => {
    const id = txnId();
    const first = await message("first");
    const r1 = await send(remote, id, [first.pdu]);
    assert.deepEqual(r1.body, { pdus: { [first.eventId]: {} } });

    // Same txnId, same body: same answer, nothing written.
    const r2 = await t.assertNothingWritten(() => send(remote, id, [first.pdu]));
    assert.equal(r2.status, 200);
    assert.deepEqual(r2.body, r1.body);

    // Same txnId, different body: still the stored answer, and the new PDU is NOT processed.
    const second = await message("second");
    const r3 = await t.assertNothingWritten(() => send(remote, id, [second.pdu]));
    assert.deepEqual(r3.body, r1.body);
    assert.equal(await t.store.getEvent(roomId, second.eventId), null);

    // A new txnId processes it.
    const r4 = await send(remote, txnId(), [second.pdu]);
    assert.deepEqual(r4.body, { pdus: { [second.eventId]: {} } });
  });

  test("the same txnId from another origin is a different transaction", async () => {
    const id = txnId();
    const { pdu, eventId } = await message("from remote");
    assert.deepEqual((await send(remote, id, [pdu])).body, { pdus: { [eventId]: {} } });
    const res = await send(other, id, []);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { pdus: {} });
  });

  test("concurrent retries of one transaction are answered once, identically", async () => {
    const id = txnId();
    const { pdu, eventId } = await message("concurrent");
    const before = (await t.store.timeline(roomId)).length;
    const results = await Promise.all([send(remote, id, [pdu]), send(remote, id, [pdu]), send(remote, id, [pdu])]);
    for (const r of results) {
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(r.body, { pdus: { [eventId]: {} } });
    }
    assert.equal((await t.store.timeline(roomId)).length, before + 1);
  });
});

describe("PUT /send: rejected transactions", () => {
  test("more than 50 PDUs: 400, nothing written, nothing cached", async () => {
    const { pdu } = await message("too many");
    const id = txnId();
    const res = await t.assertNothingWritten(() => send(remote, id, Array.from({ length: 51 }, () => pdu)));
    assert.equal(res.status, 400, JSON.stringify(res.body));
    assert.equal(await t.redis.exists(t.gh.keys.inboundTxn(remote.serverName, id)), 0);
  });

  test("more than 100 EDUs: 400", async () => {
    const edus = Array.from({ length: 101 }, () => ({ edu_type: "m.presence", content: {} }));
    const res = await t.assertNothingWritten(() => send(remote, txnId(), [], { edus }));
    assert.equal(res.status, 400, JSON.stringify(res.body));
  });

  test("pdus not a list: 400 M_BAD_JSON", async () => {
    const res = await t.assertNothingWritten(() => t.fed(remote, "PUT", `${FED}/v1/send/${txnId()}`, { origin: remote.serverName, pdus: { a: 1 } }));
    assert.equal(res.status, 400);
    assert.equal(res.body.errcode, "M_BAD_JSON");
  });

  test("a float anywhere in the transaction: 400 M_BAD_JSON, nothing written", async () => {
    const { pdu } = await message("float");
    const body = { origin: remote.serverName, origin_server_ts: 5, pdus: [pdu] };
    const raw = JSON.stringify(body).replace('"origin_server_ts":5', '"origin_server_ts":5.0');
    const res = await t.assertNothingWritten(() => t.fed(remote, "PUT", `${FED}/v1/send/${txnId()}`, body, { rawBody: raw }));
    assert.equal(res.status, 400);
    assert.equal(res.body.errcode, "M_BAD_JSON");
  });
});

describe("PUT /send: per-PDU results in a 200", () => {
  test("bad signature, ACL-denied, unknown room and good PDUs in one transaction", async () => {
    // A second room in which the remote is ACL-denied.
    const aclRoom = await t.createRoom();
    const aclUser = remote.userId("bob");
    await t.knockAcceptJoin(remote, aclRoom, aclUser);
    await t.setState(aclRoom, "m.room.server_acl", "", { allow: ["*"], deny: ["127.0.0.1"] });
    const aclBefore = await t.graph(aclRoom);

    const good = await message("good");
    const tpl = await t.template(roomId, { type: "m.room.message", sender: user, content: { msgtype: "m.text", body: "forged" } });
    const forged = remote.signEvent(tpl, "12", randomKey(remote.key.keyId));
    const denied = await message("denied", aclUser, aclRoom);
    const unknownRoom = remote.signEvent({ ...tpl, room_id: "!nowhere:gatehouse.test", content: { body: "?" } }, "12");

    const res = await send(remote, txnId(), [good.pdu, forged.pdu, denied.pdu, unknownRoom.pdu]);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const pdus = res.body.pdus as Record<string, Record<string, unknown>>;
    assert.deepEqual(Object.keys(pdus).sort(), [good.eventId, forged.eventId, denied.eventId].sort());
    assert.deepEqual(pdus[good.eventId], {});
    assert.equal(typeof pdus[forged.eventId]!.error, "string");
    assert.match(pdus[forged.eventId]!.error as string, /signature/);
    assert.equal(pdus[denied.eventId]!.errcode, "M_FORBIDDEN");
    assert.equal(typeof pdus[denied.eventId]!.error, "string");
    assert.ok(!(unknownRoom.eventId in pdus), "a PDU for an unknown room must be left out");

    assert.ok(await t.store.getEvent(roomId, good.eventId));
    assert.equal(await t.store.getEvent(roomId, forged.eventId), null);
    assert.equal(await t.store.roomOfEvent(forged.eventId), null);
    assert.equal(await t.store.getEvent(aclRoom, denied.eventId), null);
    assert.deepEqual(await t.graph(aclRoom), aclBefore);
    assert.equal(await t.store.getRoom("!nowhere:gatehouse.test"), null);
  });

  test("a server ACL accepted early in a transaction applies to its later PDUs (why: the ACL check reads the room once per transaction, and again after an ACL change)", async () => {
    const room = await t.createRoom({ room_version: "12" });
    const carol = remote.userId("carol");
    await t.knockAcceptJoin(remote, room, carol);
    await t.setState(room, "m.room.power_levels", "", { users: { [carol]: 100 }, users_default: 0, events_default: 0, state_default: 50, ban: 50, kick: 50, redact: 50, invite: 0 });
    const acl = await t.remoteEvent(remote, room, { type: "m.room.server_acl", sender: carol, state_key: "", content: { allow: ["*"], deny: ["127.0.0.1"] } });
    const after = await message("after the ACL", carol, room);
    const res = await send(remote, txnId(), [acl.pdu, after.pdu]);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body.pdus[acl.eventId], {});
    assert.equal(res.body.pdus[after.eventId]?.errcode, "M_FORBIDDEN", JSON.stringify(res.body));
    assert.equal(await t.store.getEvent(room, after.eventId), null);
  });

  test("a PDU by a user who is not in the room fails its auth events: {error}, not stored", async () => {
    const stranger = remote.userId("stranger");
    const { pdu, eventId } = await message("who am I", stranger);
    const res = await t.assertNothingWritten(() => send(remote, txnId(), [pdu]));
    assert.equal(res.status, 200);
    assert.equal(typeof (res.body.pdus[eventId] as { error?: unknown }).error, "string");
  });

  test("a PDU that passes its auth events but not current state is soft-failed: kept, not in state or extremities", async () => {
    const softRoom = await t.createRoom();
    const carol = remote.userId("carol");
    await t.knockAcceptJoin(remote, softRoom, carol);
    // Built while carol is joined ...
    const { pdu, eventId } = await message("carol's last words", carol, softRoom);
    // ... then carol is banned before it arrives.
    assert.equal((await t.admin.post(`${ADMIN}/rooms/${enc(softRoom)}/ban`).send({ user_id: carol })).status, 200);
    const before = await t.graph(softRoom);
    const res = await send(remote, txnId(), [pdu]);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { pdus: { [eventId]: {} } });
    assert.deepEqual(await t.store.getEvent(softRoom, eventId), pdu);
    assert.equal(await t.store.eventStatus(softRoom, eventId), "soft_failed");
    const after = await t.graph(softRoom);
    assert.deepEqual(after.extremities, before.extremities);
    assert.deepEqual(new Map(after.stateIds), new Map(before.stateIds));
  });

  test("a restricted join naming our user as authoriser but not signed by us is refused over /send", async () => {
    const allowed = await t.createRoom({ room_version: "10" });
    const restricted = await t.createRoom({ room_version: "10", join_rule: "knock_restricted" });
    await t.setState(restricted, "m.room.join_rules", "", { join_rule: "knock_restricted", allow: [{ type: "m.room_membership", room_id: allowed }] });
    const dave = remote.userId("dave");
    await t.knockAcceptJoin(remote, allowed, dave);
    // Only send_join may add Gatehouse's signature (after the allow-room check); /send must not skip it.
    const { pdu, eventId } = await t.remoteEvent(remote, restricted, {
      type: "m.room.member",
      sender: dave,
      state_key: dave,
      content: { membership: "join", join_authorised_via_users_server: t.creator },
    });
    const res = await t.assertNothingWritten(() => send(remote, txnId(), [pdu]));
    assert.equal(res.status, 200);
    assert.match((res.body.pdus[eventId] as { error?: string }).error ?? "", /signed by gatehouse\.test/);
    assert.equal(await t.store.getMembership(restricted, dave), null);
  });

  test("a PDU whose content does not match its hash is kept redacted", async () => {
    const { pdu } = await message("original");
    const tampered = { ...pdu, content: { ...pdu.content, body: "tampered" } } as Pdu;
    const v = getRoomVersion("12")!;
    const eventId = computeEventId(tampered, v);
    const res = await send(remote, txnId(), [tampered]);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { pdus: { [eventId]: {} } });
    const stored = (await t.store.getEvent(roomId, eventId))!;
    assert.deepEqual(stored.content, {});
  });

  test("a PDU over 65,536 bytes only by its unsigned data is refused: the whole PDU is measured, not the hashed part", async () => {
    // The verifier measures a PDU from its content-hash input plus hashes, signatures and
    // unsigned (ids.ts pduByteLengthFromContent): leaving one out would let this one in.
    const { pdu, eventId } = await message("padded");
    const res = await t.assertNothingWritten(() => send(remote, txnId(), [{ ...pdu, unsigned: { pad: "x".repeat(66_000) } }]));
    assert.equal(res.status, 200);
    assert.match((res.body.pdus[eventId] as { error?: string }).error ?? "", /PDU is \d+ bytes, the limit is 65536/);
    assert.equal(await t.store.getEvent(roomId, eventId), null);
  });
});
