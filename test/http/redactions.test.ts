// Redactions are applied (issue 12, "Rooms"): a local redaction through the admin API and a
// remote one through /send are recorded with the redaction and the redacted event is served
// redacted from then on, per room version (`redacts` at the top level in v10, in content in
// v12), over federation and through the admin API (with unsigned.redacted_because). A redaction
// whose sender has neither the redact level nor the target's server is stored but not applied.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, FED, ADMIN, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";
import { computeEventId, checkContentHash } from "../../src/protocol/event-hashing.js";
import { verifyEventSignatures } from "../../src/protocol/event-signing.js";
import { redactEvent } from "../../src/protocol/redaction.js";
import { defaultEd25519 } from "../../src/protocol/ed25519.js";
import { getRoomVersion, type RoomVersion } from "../../src/protocol/room-versions.js";
import type { VerifierLookup } from "../../src/protocol/json-signing.js";
import type { Pdu } from "../../src/protocol/pdu.js";

let t: TestGatehouse;
let remote: RemoteServer;
const rooms: Record<string, { roomId: string; user: string; version: RoomVersion }> = {};

before(async () => {
  t = await TestGatehouse.start({ name: "redactions" });
  remote = await RemoteServer.start();
  for (const v of ["10", "12"]) {
    const roomId = await t.createRoom({ room_version: v, name: `Redactions v${v}` });
    const user = remote.userId(`r${v}`);
    await t.knockAcceptJoin(remote, roomId, user);
    rooms[v] = { roomId, user, version: getRoomVersion(v)! };
  }
});
after(async () => {
  await t.cleanup();
  await remote.close();
});

const lookup: VerifierLookup = (entity, keyId) => {
  if (entity === t.serverName && keyId === t.ownKeys.current.keyId) return defaultEd25519.verifier(t.ownKeys.current.publicKey);
  if (entity === remote.serverName && keyId === remote.key.keyId) return defaultEd25519.verifier(remote.key.publicKey);
  return undefined;
};

async function send(roomId: string, body: string, sender?: string): Promise<string> {
  const res = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/send/m.room.message`).send({ content: { msgtype: "m.text", body }, ...(sender ? { sender } : {}) });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.event_id as string;
}

async function remoteSend(v: string, ev: Record<string, unknown>): Promise<string> {
  const { roomId, user } = rooms[v]!;
  const built = await t.remoteEvent(remote, roomId, { sender: user, ...ev } as { type: string; sender: string; content: Record<string, unknown> });
  const res = await t.fed(remote, "PUT", `${FED}/v1/send/red-${built.eventId}`, { origin: remote.serverName, origin_server_ts: Date.now(), pdus: [built.pdu] });
  assert.deepEqual(res.body, { pdus: { [built.eventId]: {} } });
  return built.eventId;
}

/** The redaction of `target` as a remote user builds it in room version `v`. */
const redactionOf = (v: string, target: string, reason = "spam") =>
  getRoomVersion(v)!.redactsInContent ? { type: "m.room.redaction", content: { redacts: target, reason } } : { type: "m.room.redaction", redacts: target, content: { reason } };

/** Asserts `id` is served redacted over federation (signatures intact) and through the admin API. */
async function expectRedacted(v: string, id: string, redactionId: string) {
  const { roomId, version } = rooms[v]!;
  const stored = (await t.store.getEvent(roomId, id))!;
  const fed = await t.fed(remote, "GET", `${FED}/v1/event/${enc(id)}`);
  assert.equal(fed.status, 200, JSON.stringify(fed.body));
  const served = fed.body.pdus[0] as Pdu;
  assert.deepEqual(served, redactEvent(stored, version));
  assert.equal(computeEventId(served, version), id, "the event ID is unchanged");
  assert.equal(verifyEventSignatures(served as Record<string, unknown>, version, lookup).ok, true, "the redacted copy still verifies");
  assert.equal(checkContentHash(served as Record<string, unknown>), false, "the content hash shows it was redacted");
  assert.equal(served.unsigned, undefined, "no redacted_because over federation (Synapse strips it)");
  const admin = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/events/${enc(id)}`);
  assert.equal(admin.status, 200);
  assert.deepEqual(admin.body.content, redactEvent(stored, version).content);
  assert.equal(admin.body.unsigned?.redacted_because?.event_id, redactionId);
  assert.equal(admin.body.unsigned?.redacted_because?.type, "m.room.redaction");
  const bf = await t.fed(remote, "GET", `${FED}/v1/backfill/${enc(roomId)}?v=${enc(id)}&limit=1`);
  assert.deepEqual(bf.body.pdus, [served], "/backfill serves the same redacted copy");
}

async function expectFull(v: string, id: string) {
  const { roomId } = rooms[v]!;
  const stored = (await t.store.getEvent(roomId, id))!;
  const fed = await t.fed(remote, "GET", `${FED}/v1/event/${enc(id)}`);
  assert.deepEqual(fed.body.pdus, [stored]);
  const admin = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/events/${enc(id)}`);
  assert.deepEqual(admin.body.content, stored.content);
  assert.equal(admin.body.unsigned, undefined);
}

for (const v of ["10", "12"]) {
  describe(`room version ${v}`, () => {
    test("a local redaction through the admin API: redacts where the version puts it, the event is served redacted", async () => {
      const { roomId, version } = rooms[v]!;
      const m = await send(roomId, "oops");
      await expectFull(v, m);
      const res = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/redact/${enc(m)}`).send({ reason: "typo" });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const redaction = (await t.store.getEvent(roomId, res.body.event_id))!;
      if (version.redactsInContent) {
        assert.deepEqual(redaction.content, { redacts: m, reason: "typo" });
        assert.equal(redaction.redacts, undefined);
      } else {
        assert.equal(redaction.redacts, m);
        assert.deepEqual(redaction.content, { reason: "typo" });
      }
      await expectRedacted(v, m, res.body.event_id);
    });

    test("a remote user redacts their own message through /send: applied (same server)", async () => {
      const m = await remoteSend(v, { type: "m.room.message", content: { msgtype: "m.text", body: "regret" } });
      const r = await remoteSend(v, redactionOf(v, m));
      await expectRedacted(v, m, r);
    });

    test("a redaction that arrives before the event it redacts applies once the event arrives", async () => {
      const { roomId, user, version } = rooms[v]!;
      // Both built on the same graph; the redaction is sent first (the target is unknown then).
      const target = await t.remoteEvent(remote, roomId, { type: "m.room.message", sender: user, content: { msgtype: "m.text", body: "late" } });
      const redaction = await t.remoteEvent(remote, roomId, { sender: user, ...redactionOf(v, target.eventId) } as { type: string; sender: string; content: Record<string, unknown> });
      for (const ev of [redaction, target]) {
        const res = await t.fed(remote, "PUT", `${FED}/v1/send/early-${ev.eventId}`, { origin: remote.serverName, origin_server_ts: Date.now(), pdus: [ev.pdu] });
        assert.deepEqual(res.body, { pdus: { [ev.eventId]: {} } });
      }
      assert.equal(computeEventId(target.pdu, version), target.eventId);
      await expectRedacted(v, target.eventId, redaction.eventId);
    });

    test("a remote user without the redact level redacts a local message: accepted, not applied", async () => {
      const m = await send(rooms[v]!.roomId, "keep me");
      await remoteSend(v, redactionOf(v, m));
      await expectFull(v, m);
    });

    test("a redacted state event: the admin state reads and /state serve it redacted", async () => {
      const { roomId, version } = rooms[v]!;
      const topic = await t.setState(roomId, "m.room.topic", "", { topic: "secret plans" });
      const res = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/redact/${enc(topic)}`).send({});
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const content = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/state/m.room.topic`);
      assert.deepEqual(content.body, {});
      const summary = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}`);
      assert.equal(summary.body.topic, undefined, "the room summary has no topic once it is redacted");
      assert.equal(summary.body.name, `Redactions v${v}`);
      const state = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/state`);
      const ev = (state.body.state as Record<string, unknown>[]).find((e) => e.event_id === topic)!;
      assert.deepEqual(ev.content, {});
      assert.equal((ev.unsigned as { redacted_because: { event_id: string } }).redacted_because.event_id, res.body.event_id);
      const after = await send(roomId, "later");
      const fed = await t.fed(remote, "GET", `${FED}/v1/state/${enc(roomId)}?event_id=${enc(after)}`);
      const served = (fed.body.pdus as Pdu[]).find((p) => computeEventId(p, version) === topic)!;
      assert.deepEqual(served, redactEvent((await t.store.getEvent(roomId, topic))!, version));
      assert.equal(verifyEventSignatures(served as Record<string, unknown>, version, lookup).ok, true);
    });
  });
}

describe("local redactions refused (nothing written)", () => {
  test("the create event, another user's event without the redact level, an unknown event", async () => {
    const { roomId } = rooms["12"]!;
    const plain = t.local("plain");
    const joined = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/invite`).send({ user_id: plain });
    assert.equal(joined.status, 200, JSON.stringify(joined.body));
    assert.equal((await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/join`).send({ user_id: plain })).status, 200);
    const m = await send(roomId, "the creator's");
    const own = await send(roomId, "plain's own", plain);
    const create = `$${roomId.slice(1)}`;
    const cases: [string, string, Record<string, unknown>, number, string][] = [
      ["the create event", create, {}, 403, "M_FORBIDDEN"],
      ["another user's event without the redact level", m, { sender: plain }, 403, "M_FORBIDDEN"],
      ["an unknown event", "$unknown", {}, 404, "M_NOT_FOUND"],
      ["a non-string reason", m, { reason: 5 }, 400, "M_INVALID_PARAM"],
    ];
    for (const [label, id, body, status, errcode] of cases) {
      await t.assertNothingWritten(async () => {
        const res = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/redact/${enc(id)}`).send(body);
        assert.equal(res.status, status, `${label}: ${JSON.stringify(res.body)}`);
        assert.equal(res.body.errcode, errcode, label);
      });
    }
    // Their own event: allowed without the redact level.
    const res = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/redact/${enc(own)}`).send({ sender: plain });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    await expectRedacted("12", own, res.body.event_id);
  });
});

describe("a redaction that is not accepted is not applied", () => {
  test("soft-failed (its sender was banned meanwhile): recorded nowhere, the target stays whole", async () => {
    const roomId = await t.createRoom({ room_version: "12", name: "Soft-failed redaction" });
    const user = remote.userId("banned");
    await t.knockAcceptJoin(remote, roomId, user);
    const msg = await t.remoteEvent(remote, roomId, { type: "m.room.message", sender: user, content: { msgtype: "m.text", body: "mine" } });
    // Built while the user is still joined, sent after the ban: passes its auth events, fails current state.
    const sendMsg = await t.fed(remote, "PUT", `${FED}/v1/send/soft-${msg.eventId}`, { origin: remote.serverName, origin_server_ts: Date.now(), pdus: [msg.pdu] });
    assert.deepEqual(sendMsg.body, { pdus: { [msg.eventId]: {} } });
    const redaction = await t.remoteEvent(remote, roomId, { type: "m.room.redaction", sender: user, content: { redacts: msg.eventId } });
    assert.equal((await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/ban`).send({ user_id: user })).status, 200);
    const res = await t.fed(remote, "PUT", `${FED}/v1/send/soft-${redaction.eventId}`, { origin: remote.serverName, origin_server_ts: Date.now(), pdus: [redaction.pdu] });
    assert.deepEqual(res.body, { pdus: { [redaction.eventId]: {} } });
    assert.equal(await t.store.eventStatus(roomId, redaction.eventId), "soft_failed");
    const admin = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/events/${enc(msg.eventId)}`);
    assert.equal(admin.body.content.body, "mine");
    assert.equal(admin.body.unsigned, undefined);
  });
});

describe("the redact level is judged in the state before the redaction", () => {
  test("a moderator's redaction built before their demotion, arriving after it, still applies (state before it, not current state)", async () => {
    const roomId = await t.createRoom({ room_version: "12", name: "Demoted moderator" });
    const user = remote.userId("demoted");
    await t.knockAcceptJoin(remote, roomId, user);
    const target = await send(roomId, "a local message the remote moderator redacts");
    const pl = structuredClone((await t.graph(roomId)).state.get(JSON.stringify(["m.room.power_levels", ""]))!.content) as { users: Record<string, number> };
    assert.equal((await t.admin.put(`${ADMIN}/rooms/${enc(roomId)}/state/m.room.power_levels/`).send({ content: { ...pl, users: { ...pl.users, [user]: 50 } } })).status, 200);
    // Built on the state where the user has the redact level (50)...
    const redaction = await t.remoteEvent(remote, roomId, { type: "m.room.redaction", sender: user, content: { redacts: target } });
    // ...and sent after the demotion (current state: power 0, which may still send a redaction event).
    assert.equal((await t.admin.put(`${ADMIN}/rooms/${enc(roomId)}/state/m.room.power_levels/`).send({ content: pl })).status, 200);
    const res = await t.fed(remote, "PUT", `${FED}/v1/send/demoted-${redaction.eventId}`, { origin: remote.serverName, origin_server_ts: Date.now(), pdus: [redaction.pdu] });
    assert.deepEqual(res.body, { pdus: { [redaction.eventId]: {} } });
    assert.equal(await t.store.eventStatus(roomId, redaction.eventId), null, "accepted");
    const served = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/events/${enc(target)}`);
    assert.deepEqual(served.body.content, {}, "redacted: the sender (another server) had the redact level at the redaction");
    assert.equal(served.body.unsigned?.redacted_because?.event_id, redaction.eventId);
  });
});

describe("the membership handshakes serve redacted state", () => {
  test("a redacted room name: send_knock's knock_room_state and send_join's state carry the redacted event", async () => {
    const roomId = await t.createRoom({ room_version: "12", name: "Secret name" });
    const version = getRoomVersion("12")!;
    const nameId = (await t.graph(roomId)).stateIds.get(JSON.stringify(["m.room.name", ""]))!;
    const red = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/redact/${enc(nameId)}`).send({ reason: "leaked" });
    assert.equal(red.status, 200, JSON.stringify(red.body));
    const redactedName = redactEvent((await t.store.getEvent(roomId, nameId))!, version);
    const user = remote.userId("handshake");
    const knock = await t.knock(remote, roomId, user);
    const knockName = (knock.res.body.knock_room_state as Pdu[]).find((p) => p.type === "m.room.name");
    assert.deepEqual(knockName, redactedName);
    assert.equal((await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/knocks/${enc(user)}/accept`).send({})).status, 200);
    const inviteState = (remote.requestsTo("/_matrix/federation/v2/invite/").at(-1)!.body as { invite_room_state: Pdu[] }).invite_room_state;
    assert.deepEqual(inviteState.find((p) => p.type === "m.room.name"), redactedName, "invite_room_state too");
    const join = await t.join(remote, roomId, user);
    const joinName = (join.res.body.state as Pdu[]).find((p) => p.type === "m.room.name");
    assert.deepEqual(joinName, redactedName);
    assert.equal(verifyEventSignatures(joinName as Record<string, unknown>, version, lookup).ok, true);
  });
});

describe("the admin knock list serves redacted knocks", () => {
  test("a knock redacted by a moderator keeps its place in the list but loses its reason", async () => {
    const roomId = await t.createRoom({ room_version: "12", name: "Knock redaction" });
    const user = remote.userId("knockred");
    const knock = await t.knock(remote, roomId, user, { reason: "offensive text" });
    const before = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/knocks`);
    assert.equal(before.body.knocks[0].reason, "offensive text");
    const red = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/redact/${enc(knock.eventId)}`).send({});
    assert.equal(red.status, 200, JSON.stringify(red.body));
    const after = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/knocks`);
    assert.deepEqual(after.body.knocks.map((k: { user_id: string; reason: unknown }) => [k.user_id, k.reason]), [[user, null]]);
  });
});
