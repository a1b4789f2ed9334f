// After the knock: rescind (make_leave / send_leave v2 and v1), accept (admin → /v2/invite on the
// remote → make_join / send_join v2), deny (kick), ban and unban.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, ADMIN, FED, enc } from "../support/gatehouse.js";
import { RemoteServer, roomVersion } from "../support/remote-server.js";
import { stateField } from "../../src/store/room-store.js";
import { authenticateRequest } from "../../src/protocol/x-matrix.js";
import { defaultEd25519 } from "../../src/protocol/ed25519.js";
import { computeEventId } from "../../src/protocol/event-hashing.js";
import { verifyEventSignedBy } from "../../src/protocol/event-signing.js";
import type { Pdu } from "../../src/protocol/pdu.js";

let t: TestGatehouse;
let remote: RemoteServer;
let other: RemoteServer;
let n = 0;
const fresh = (server: RemoteServer = remote) => server.userId(`user${++n}`);
const ids = (pdus: Pdu[], v: ReturnType<typeof roomVersion>) => pdus.map((e) => computeEventId(e, v)).sort();

before(async () => {
  t = await TestGatehouse.start({ name: "leavejoin" });
  [remote, other] = await Promise.all([RemoteServer.start(), RemoteServer.start()]);
});
after(async () => {
  await t.cleanup();
  await Promise.all([remote.close(), other.close()]);
});

function assertError(res: { status: number; body: Record<string, unknown> }, status: number, errcode: string) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(res.body.errcode, errcode, JSON.stringify(res.body));
}

const accept = (roomId: string, userId: string) => t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/knocks/${enc(userId)}/accept`).send({});
const deny = (roomId: string, userId: string, reason?: string) => t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/knocks/${enc(userId)}/deny`).send(reason ? { reason } : {});

async function leaveTemplate(roomId: string, userId: string, server: RemoteServer = remote) {
  const res = await t.makeMembership(server, "leave", roomId, userId, []);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return { event: res.body.event as Record<string, unknown>, version: res.body.room_version as string };
}

describe("rescinding a knock (make_leave / send_leave)", () => {
  test("v2: template with membership leave, send_leave answers {} and the knock is gone", async () => {
    const roomId = await t.createRoom();
    const user = fresh();
    const { eventId: knockId } = await t.knock(remote, roomId, user);
    const { event, version } = await leaveTemplate(roomId, user);
    assert.equal(version, "12");
    assert.equal(event.type, "m.room.member");
    assert.equal(event.sender, user);
    assert.equal(event.state_key, user);
    assert.deepEqual(event.content, { membership: "leave" });
    // The knock is the sender's current membership, so it is an auth event of the leave.
    assert.ok((event.auth_events as string[]).includes(knockId));
    assert.deepEqual(event.prev_events, [knockId]);
    const { pdu, eventId } = remote.signEvent(event, version);
    const res = await t.fed(remote, "PUT", `${FED}/v2/send_leave/${enc(roomId)}/${enc(eventId)}`, pdu);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body, {});
    assert.equal(await t.store.getMembership(roomId, user), "leave");
    const knocks = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/knocks`);
    assert.deepEqual(knocks.body.knocks, []);
  });

  test("a retried send_leave (same event) answers {} again and writes nothing", async () => {
    const roomId = await t.createRoom();
    const user = fresh();
    await t.knock(remote, roomId, user);
    const { event, version } = await leaveTemplate(roomId, user);
    const { pdu, eventId } = remote.signEvent(event, version);
    const uri = `${FED}/v2/send_leave/${enc(roomId)}/${enc(eventId)}`;
    assert.equal((await t.fed(remote, "PUT", uri, pdu)).status, 200);
    const again = await t.assertNothingWritten(() => t.fed(remote, "PUT", uri, pdu));
    assert.equal(again.status, 200, JSON.stringify(again.body));
    assert.deepEqual(again.body, {});
  });

  test("legacy v1 send_leave answers [200, {}]", async () => {
    const roomId = await t.createRoom({ room_version: "10" });
    const user = fresh();
    await t.knock(remote, roomId, user);
    const { event, version } = await leaveTemplate(roomId, user);
    assert.equal(version, "10");
    const { pdu, eventId } = remote.signEvent(event, version);
    const res = await t.fed(remote, "PUT", `${FED}/v1/send_leave/${enc(roomId)}/${enc(eventId)}`, pdu);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body, [200, {}]);
    assert.equal(await t.store.getMembership(roomId, user), "leave");
  });

  test("send_leave with a knock event: 400 M_INVALID_PARAM, nothing written", async () => {
    const roomId = await t.createRoom();
    const user = fresh();
    await t.knock(remote, roomId, user);
    const { event, version } = await leaveTemplate(roomId, user);
    const { pdu, eventId } = remote.signEvent({ ...event, content: { membership: "knock" } }, version);
    const res = await t.assertNothingWritten(() => t.fed(remote, "PUT", `${FED}/v2/send_leave/${enc(roomId)}/${enc(eventId)}`, pdu));
    assertError(res, 400, "M_INVALID_PARAM");
    assert.equal(await t.store.getMembership(roomId, user), "knock");
  });

  test("send_leave for another server's user: 400 M_INVALID_PARAM, nothing written", async () => {
    const roomId = await t.createRoom();
    const user = fresh(other);
    await t.knock(other, roomId, user);
    const { event, version } = await leaveTemplate(roomId, user, other);
    const { pdu, eventId } = other.signEvent(event, version);
    const res = await t.assertNothingWritten(() => t.fed(remote, "PUT", `${FED}/v2/send_leave/${enc(roomId)}/${enc(eventId)}`, pdu));
    assertError(res, 400, "M_INVALID_PARAM");
  });

  test("make_leave and send_leave are ACL-protected: 403 M_FORBIDDEN", async () => {
    const roomId = await t.createRoom();
    const user = fresh();
    await t.knock(remote, roomId, user);
    const { event, version } = await leaveTemplate(roomId, user);
    await t.setState(roomId, "m.room.server_acl", "", { allow: ["*"], deny: ["127.0.0.1"] });
    assertError(await t.makeMembership(remote, "leave", roomId, user, []), 403, "M_FORBIDDEN");
    const { pdu, eventId } = remote.signEvent(event, version);
    const res = await t.assertNothingWritten(() => t.fed(remote, "PUT", `${FED}/v2/send_leave/${enc(roomId)}/${enc(eventId)}`, pdu));
    assertError(res, 403, "M_FORBIDDEN");
    assert.equal(await t.store.getMembership(roomId, user), "knock");
  });

  test("make_leave for a user with no membership: 403 M_FORBIDDEN", async () => {
    const roomId = await t.createRoom();
    assertError(await t.makeMembership(remote, "leave", roomId, fresh(), []), 403, "M_FORBIDDEN");
  });
});

describe("accepting a knock", () => {
  for (const versionId of ["11", "12"]) {
    test(`v${versionId}: admin accept → signed /v2/invite to the remote → invite in state; make_join / send_join v2`, async () => {
      const roomId = await t.createRoom({ room_version: versionId, name: "Lobby" });
      const user = fresh();
      const { eventId: knockId } = await t.knock(remote, roomId, user);
      const before = remote.requests.length;

      const acc = await accept(roomId, user);
      assert.equal(acc.status, 200, JSON.stringify(acc.body));
      const inviteId = acc.body.event_id as string;

      // Gatehouse called the remote's /v2/invite, X-Matrix signed with its own key.
      const calls = remote.requests.slice(before).filter((r) => r.url.startsWith("/_matrix/federation/v2/invite/"));
      assert.equal(calls.length, 1);
      const call = calls[0]!;
      assert.equal(call.method, "PUT");
      assert.equal(call.url, `/_matrix/federation/v2/invite/${enc(roomId)}/${enc(inviteId)}`);
      const verified = authenticateRequest(
        call.headers.authorization,
        { method: "PUT", uri: call.url, content: call.body },
        (entity, keyId) => (entity === t.serverName && keyId === t.ownKeys.current.keyId ? defaultEd25519.verifier(t.ownKeys.current.publicKey) : undefined),
        remote.serverName,
      );
      assert.equal(verified.ok, true, JSON.stringify(verified));
      const body = call.body as { room_version: string; event: Pdu; invite_room_state: Pdu[] };
      assert.equal(body.room_version, versionId);
      assert.equal(body.event.sender, t.creator);
      assert.equal(body.event.state_key, user);
      assert.equal(body.event.content.membership, "invite");
      assert.equal(computeEventId(body.event, roomVersion(versionId)), inviteId);
      const irsTypes = body.invite_room_state.map((e) => e.type);
      assert.ok(irsTypes.includes("m.room.create") && irsTypes.includes("m.room.join_rules") && irsTypes.includes("m.room.name"));
      assert.ok(body.invite_room_state.some((e) => e.type === "m.room.member" && e.state_key === t.creator), "inviter's member event missing");
      assert.ok(body.invite_room_state.every((e) => typeof e.hashes?.sha256 === "string" && e.signatures), "invite_room_state must be full PDUs");

      // The stored invite carries both signatures and is the user's membership now.
      assert.equal(await t.store.getMembership(roomId, user), "invite");
      const stored = (await t.store.getEvent(roomId, inviteId))!;
      const lookup = (server: string, key: { keyId: string; publicKey: Uint8Array }) => (entity: string, keyId: string) =>
        entity === server && keyId === key.keyId ? defaultEd25519.verifier(key.publicKey) : undefined;
      assert.equal(verifyEventSignedBy(stored, roomVersion(versionId), remote.serverName, lookup(remote.serverName, remote.key)).ok, true);
      assert.equal(verifyEventSignedBy(stored, roomVersion(versionId), t.serverName, lookup(t.serverName, t.ownKeys.current)).ok, true);
      assert.ok((stored.prev_events as string[]).includes(knockId));
      const knocks = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/knocks`);
      assert.deepEqual(knocks.body.knocks, []);

      // make_join: the template references the invite.
      const made = await t.makeMembership(remote, "join", roomId, user, [versionId]);
      assert.equal(made.status, 200, JSON.stringify(made.body));
      assert.equal(made.body.room_version, versionId);
      const tpl = made.body.event as Record<string, unknown>;
      assert.deepEqual(tpl.content, { membership: "join" });
      assert.ok((tpl.auth_events as string[]).includes(inviteId));
      assert.deepEqual(tpl.prev_events, [inviteId]);
      const stateBefore = await t.graph(roomId);

      const { pdu, eventId } = remote.signEvent(tpl, versionId);
      const res = await t.fed(remote, "PUT", `${FED}/v2/send_join/${enc(roomId)}/${enc(eventId)}`, pdu);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.origin, t.serverName);
      assert.equal(res.body.members_omitted, false);
      // servers_in_room: joined before the join (spec); the joiner had only an invite.
      assert.deepEqual(res.body.servers_in_room, [t.serverName]);
      assert.deepEqual(res.body.event, pdu);
      // state: the room state before the join, as full PDUs.
      const v = roomVersion(versionId);
      const stateIds = (res.body.state as Pdu[]).map((e) => computeEventId(e, v)).sort();
      assert.deepEqual(stateIds, [...stateBefore.stateIds.values()].sort());
      // auth_chain: closed under auth_events for the state and the join.
      const chainIds = new Set((res.body.auth_chain as Pdu[]).map((e) => computeEventId(e, v)));
      for (const ev of [...(res.body.state as Pdu[]), pdu, ...(res.body.auth_chain as Pdu[])])
        for (const a of ev.auth_events as string[]) assert.ok(chainIds.has(a), `auth chain lacks ${a}`);
      if (versionId !== "12") assert.ok(chainIds.has(stateBefore.stateIds.get(stateField("m.room.create", ""))!));
      assert.ok(chainIds.has(inviteId));

      assert.equal(await t.store.getMembership(roomId, user), "join");
      const summary = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}`);
      assert.deepEqual(summary.body.joined_servers, [remote.serverName, t.serverName].sort());
    });
  }

  test("a retried send_join (same event) answers the same state before the join, and writes nothing", async () => {
    const roomId = await t.createRoom();
    const user = fresh();
    await t.knock(remote, roomId, user);
    assert.equal((await accept(roomId, user)).status, 200);
    const made = await t.makeMembership(remote, "join", roomId, user, ["12"]);
    const { pdu, eventId } = remote.signEvent(made.body.event, "12");
    const uri = `${FED}/v2/send_join/${enc(roomId)}/${enc(eventId)}`;
    const first = await t.fed(remote, "PUT", uri, pdu);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const again = await t.assertNothingWritten(() => t.fed(remote, "PUT", uri, pdu));
    assert.equal(again.status, 200, JSON.stringify(again.body));
    const v = roomVersion("12");
    assert.deepEqual(ids(again.body.state, v), ids(first.body.state, v));
    assert.ok(!ids(again.body.state, v).includes(eventId), "the state before the join cannot contain the join");
    assert.deepEqual(again.body.event, first.body.event);
  });

  test("events after the join are queued for the joined remote server (same Lua write)", async () => {
    const roomId = await t.createRoom();
    const user = fresh();
    await t.knockAcceptJoin(remote, roomId, user);
    const queueKey = t.gh.keys.outboundPdus(remote.serverName);
    const before = await t.redis.lrange(queueKey, 0, -1);
    // A knock from a third server must reach the joined remote (the knocker is not in the room).
    const { eventId } = await t.knock(other, roomId, fresh(other));
    const after = await t.redis.lrange(queueKey, 0, -1);
    assert.deepEqual(after.slice(before.length), [`${roomId} ${eventId}`]);
    // ... but not the knocking server itself.
    assert.ok(!(await t.redis.lrange(t.gh.keys.outboundPdus(other.serverName), 0, -1)).some((e) => e.endsWith(eventId)));
  });

  test("accept without a pending knock: 404 M_NOT_FOUND, nothing written", async () => {
    const roomId = await t.createRoom();
    const res = await t.assertNothingWritten(() => accept(roomId, fresh()));
    assertError(res, 404, "M_NOT_FOUND");
  });

  test("the remote refuses the invite: the admin call fails with its status, nothing written", async () => {
    const roomId = await t.createRoom();
    const user = fresh();
    await t.knock(remote, roomId, user);
    remote.inviteBehaviour = "refuse";
    try {
      const res = await t.assertNothingWritten(() => accept(roomId, user));
      assertError(res, 403, "M_FORBIDDEN");
      assert.equal(res.body.remote_status, 403);
    } finally {
      remote.inviteBehaviour = "countersign";
    }
    assert.equal(await t.store.getMembership(roomId, user), "knock");
  });

  for (const behaviour of ["no-signature", "tamper"] as const) {
    test(`the remote answers the invite without a valid countersignature (${behaviour}): 502, nothing written`, async () => {
      const roomId = await t.createRoom();
      const user = fresh();
      await t.knock(remote, roomId, user);
      remote.inviteBehaviour = behaviour;
      try {
        const res = await t.assertNothingWritten(() => accept(roomId, user));
        assert.equal(res.status, 502, JSON.stringify(res.body));
      } finally {
        remote.inviteBehaviour = "countersign";
      }
      assert.equal(await t.store.getMembership(roomId, user), "knock");
    });
  }

  test("make_join for a user who is only knocking: 403 M_FORBIDDEN", async () => {
    const roomId = await t.createRoom();
    const user = fresh();
    await t.knock(remote, roomId, user);
    const res = await t.assertNothingWritten(() => t.makeMembership(remote, "join", roomId, user, ["12"]));
    assertError(res, 403, "M_FORBIDDEN");
    assert.match(res.body.error, /not invited/);
  });

  test("make_join without ver means version 1 only: 400 M_INCOMPATIBLE_ROOM_VERSION", async () => {
    const roomId = await t.createRoom();
    const res = await t.makeMembership(remote, "join", roomId, fresh(), []);
    assertError(res, 400, "M_INCOMPATIBLE_ROOM_VERSION");
    assert.equal(res.body.room_version, "12");
  });

  test("send_join with a knock event: 400 M_INVALID_PARAM, nothing written", async () => {
    const roomId = await t.createRoom();
    const user = fresh();
    await t.knock(remote, roomId, user);
    assert.equal((await accept(roomId, user)).status, 200);
    const made = await t.makeMembership(remote, "join", roomId, user, ["12"]);
    const { pdu, eventId } = remote.signEvent({ ...made.body.event, content: { membership: "knock" } }, "12");
    const res = await t.assertNothingWritten(() => t.fed(remote, "PUT", `${FED}/v2/send_join/${enc(roomId)}/${enc(eventId)}`, pdu));
    assertError(res, 400, "M_INVALID_PARAM");
  });
});

describe("restricted join (knock_restricted, v10+)", () => {
  async function setup(versionId: string) {
    // A member of the allowed room may join directly; Gatehouse vouches and co-signs.
    const allowed = await t.createRoom({ room_version: versionId });
    const roomId = await t.createRoom({ room_version: versionId, join_rule: "knock_restricted" });
    await t.setState(roomId, "m.room.join_rules", "", { join_rule: "knock_restricted", allow: [{ type: "m.room_membership", room_id: allowed }] });
    return { allowed, roomId };
  }

  for (const versionId of ["10", "12"]) {
    test(`v${versionId}: a member of an allowed room joins without an invite; the join is co-signed by Gatehouse`, async () => {
      const { allowed, roomId } = await setup(versionId);
      const user = fresh();
      await t.knockAcceptJoin(remote, allowed, user);
      const made = await t.makeMembership(remote, "join", roomId, user, [versionId]);
      assert.equal(made.status, 200, JSON.stringify(made.body));
      assert.equal(made.body.event.content.join_authorised_via_users_server, t.creator);
      const { pdu, eventId } = remote.signEvent(made.body.event, versionId);
      const res = await t.fed(remote, "PUT", `${FED}/v2/send_join/${enc(roomId)}/${enc(eventId)}`, pdu);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const returned = res.body.event as Pdu;
      const v = roomVersion(versionId);
      assert.equal(computeEventId(returned, v), eventId);
      const ours = (entity: string, keyId: string) =>
        entity === t.serverName && keyId === t.ownKeys.current.keyId ? defaultEd25519.verifier(t.ownKeys.current.publicKey) : undefined;
      assert.equal(verifyEventSignedBy(returned, v, t.serverName, ours).ok, true, "Gatehouse must co-sign a restricted join");
      assert.equal(await t.store.getMembership(roomId, user), "join");
      assert.deepEqual(await t.store.getEvent(roomId, eventId), returned);
    });
  }

  test("a user in none of the allowed rooms: 400 M_UNABLE_TO_GRANT_JOIN, nothing written", async () => {
    const { roomId } = await setup("10");
    const user = fresh();
    const made = await t.makeMembership(remote, "join", roomId, user, ["10"]);
    assert.equal(made.status, 200, JSON.stringify(made.body));
    const { pdu, eventId } = remote.signEvent(made.body.event, "10");
    const res = await t.assertNothingWritten(() => t.fed(remote, "PUT", `${FED}/v2/send_join/${enc(roomId)}/${enc(eventId)}`, pdu));
    assertError(res, 400, "M_UNABLE_TO_GRANT_JOIN");
  });
});

describe("deny, ban, unban", () => {
  test("deny kicks the knocker (leave by the creator, with the reason); the user may knock again", async () => {
    const roomId = await t.createRoom();
    const user = fresh();
    await t.knock(remote, roomId, user);
    const res = await deny(roomId, user, "not now");
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const ev = (await t.store.getEvent(roomId, res.body.event_id))!;
    assert.equal(ev.sender, t.creator);
    assert.equal(ev.state_key, user);
    assert.deepEqual(ev.content, { membership: "leave", reason: "not now" });
    assert.equal(await t.store.getMembership(roomId, user), "leave");
    await t.knock(remote, roomId, user);
    assert.equal(await t.store.getMembership(roomId, user), "knock");
  });

  test("deny without a pending knock: 404 M_NOT_FOUND, nothing written", async () => {
    const roomId = await t.createRoom();
    const res = await t.assertNothingWritten(() => deny(roomId, fresh()));
    assertError(res, 404, "M_NOT_FOUND");
  });

  test("ban stops knocks; unban (leave) allows them again; unban of a non-banned user is refused", async () => {
    const roomId = await t.createRoom();
    const user = fresh();
    await t.knock(remote, roomId, user);
    const ban = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/ban`).send({ user_id: user, reason: "spam" });
    assert.equal(ban.status, 200, JSON.stringify(ban.body));
    assert.equal(await t.store.getMembership(roomId, user), "ban");
    assert.deepEqual((await t.store.getEvent(roomId, ban.body.event_id))!.content, { membership: "ban", reason: "spam" });
    assertError(await t.makeMembership(remote, "knock", roomId, user, ["12"]), 403, "M_FORBIDDEN");

    const unban = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/unban`).send({ user_id: user });
    assert.equal(unban.status, 200, JSON.stringify(unban.body));
    assert.equal(await t.store.getMembership(roomId, user), "leave");
    await t.knock(remote, roomId, user);
    assert.equal(await t.store.getMembership(roomId, user), "knock");

    const again = await t.assertNothingWritten(() => t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/unban`).send({ user_id: user }));
    assertError(again, 403, "M_FORBIDDEN");
  });

  test("kick and ban need a user_id: 400 M_INVALID_PARAM", async () => {
    const roomId = await t.createRoom();
    assertError(await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/ban`).send({}), 400, "M_INVALID_PARAM");
    assertError(await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/kick`).send({ user_id: "nope" }), 400, "M_INVALID_PARAM");
  });

  test("a sender without the power to ban: 403 M_FORBIDDEN, nothing written", async () => {
    const roomId = await t.createRoom();
    const member = t.local("member");
    assert.equal((await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/invite`).send({ user_id: member })).status, 200);
    assert.equal((await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/join`).send({ user_id: member })).status, 200);
    const res = await t.assertNothingWritten(() => t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/ban`).send({ user_id: fresh(), sender: member }));
    assertError(res, 403, "M_FORBIDDEN");
  });
});
