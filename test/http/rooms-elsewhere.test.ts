// Rooms hosted elsewhere (rooms/participation.ts): a Gatehouse user joins a room hosted by a fake
// remote server (make_join / v2 send_join); the send_join answer is checked before anything is
// stored (refusals prove Redis unchanged with dumpPrefix); the room is then stored like a hosted
// room; the host's /send PDUs are authorised and stored (gaps filled with get_missing_events),
// never relayed; local events go to every server in the room; leaving stops all of it.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, ADMIN, FED, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";
import { FakeHost, type Answer } from "../support/fake-host.js";
import { stateField } from "../../src/store/room-store.js";
import type { Pdu } from "../../src/protocol/pdu.js";

describe("rooms hosted elsewhere: join, receive, send, leave", () => {
  let gh: TestGatehouse;
  let host: RemoteServer;
  let other: RemoteServer;

  before(async () => {
    // An application service (workers are off: its queue is read, never sent) whose namespace holds the joiners.
    gh = await TestGatehouse.start({
      name: "rooms-elsewhere",
      registrations: [
        `id: bridge\nurl: http://127.0.0.1:9\nas_token: as-token-elsewhere-01\nhs_token: hs-token-elsewhere-01\nsender_localpart: elsewherebot\nrate_limited: false\nnamespaces:\n  users:\n    - exclusive: true\n      regex: "@_as_.*:gatehouse\\\\.test"\n`,
      ],
    });
    host = await RemoteServer.start();
    other = await RemoteServer.start();
  });
  after(async () => {
    await host.close();
    await other.close();
    await gh.cleanup();
  });

  const join = (userId: string, h: FakeHost) => gh.admin.post(`${ADMIN}/remote/join`).send({ user_id: userId, room_id: h.roomId, via: [host.serverName] });
  /** Event IDs queued for `server` in this room. */
  const queued = async (server: RemoteServer, h: FakeHost): Promise<string[]> =>
    (await gh.redis.lrange(`${gh.prefix}:out:{${server.serverName}}:pdus`, 0, -1)).filter((r) => r.startsWith(`${h.roomId} `)).map((r) => r.split(" ")[1]!);
  const send = (h: FakeHost, pdus: Pdu[], from = host) =>
    gh.fed(from, "PUT", `${FED}/v1/send/t${Math.random().toString(36).slice(2)}`, { origin: from.serverName, origin_server_ts: Date.now(), pdus });

  for (const versionId of ["10", "12"]) {
    test(`v${versionId}: join stores the room; /send PDUs are authorised and stored, never relayed; local events reach every server; leave stops it`, async () => {
      const h = await FakeHost.room([host, other], versionId);
      const me = gh.local(`_as_joiner${versionId}`);
      const res = await join(me, h);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const room = await gh.store.getRoom(h.roomId);
      assert.equal(room?.hostedElsewhere, true, "flagged as hosted elsewhere");
      const snap = await gh.gh.rooms.snapshot(h.roomId);
      assert.deepEqual(snap.extremities, [h.tip], "our join is the only forward extremity");
      const joinId = h.tip;
      assert.deepEqual([...snap.joinedServers].sort(), [gh.serverName, host.serverName, other.serverName].sort());
      assert.equal(snap.state.get(stateField("m.room.member", me))?.content.membership, "join");
      assert.deepEqual(await queued(host, h), [], "the join went through send_join: nothing queued");

      // The host's message and topic change arrive over /send: authorised, stored, not relayed to `other`.
      const msg = h.build("m.room.message", h.user("alice"), { msgtype: "m.text", body: "hi" });
      const topic = h.build("m.room.topic", h.user("alice"), { topic: "elsewhere" }, "");
      const sent = await send(h, [msg.pdu, topic.pdu]);
      assert.equal(sent.status, 200);
      assert.deepEqual(sent.body.pdus, { [msg.eventId]: {}, [topic.eventId]: {} });
      const after1 = await gh.gh.rooms.snapshot(h.roomId);
      assert.equal(after1.state.get(stateField("m.room.topic", ""))?.content.topic, "elsewhere");
      assert.deepEqual(after1.extremities, [topic.eventId]);
      assert.deepEqual(await queued(other, h), [], "another server's events are never relayed");

      // A PDU the auth rules refuse (bob, power 0, sets the name where state_default is 50).
      const bad = h.build("m.room.name", h.user("bob", other), { name: "nope" }, "", { apply: false });
      const refused = await send(h, [bad.pdu], other);
      assert.ok(refused.body.pdus[bad.eventId]?.error, JSON.stringify(refused.body));

      // Local sends (admin API; the client API uses the same use case) go to every other server.
      const m = await gh.admin.post(`${ADMIN}/rooms/${enc(h.roomId)}/send/m.room.message`).send({ sender: me, content: { msgtype: "m.text", body: "from gatehouse" } });
      assert.equal(m.status, 200, JSON.stringify(m.body));
      const stored = await gh.store.getEvent(h.roomId, m.body.event_id);
      assert.deepEqual(stored?.prev_events, [topic.eventId], "built on the room's extremity");
      assert.deepEqual(await queued(host, h), [m.body.event_id]);
      assert.deepEqual(await queued(other, h), [m.body.event_id]);
      h.apply(m.body.event_id, stored!);
      // The application service whose namespace holds the joiner gets the room's events, as in a hosted room.
      const forService = (await gh.redis.lrange(`${gh.prefix}:out:{as:bridge}:pdus`, 0, -1)).filter((r) => r.startsWith(`${h.roomId} `)).map((r) => r.split(" ")[1]);
      assert.deepEqual(forService, [joinId, msg.eventId, topic.eventId, m.body.event_id]);

      // A gap: the host sends the third of three events; the first two come from get_missing_events.
      const g1 = h.build("m.room.message", h.user("alice"), { msgtype: "m.text", body: "gap 1" });
      const g2 = h.build("m.room.message", h.user("alice"), { msgtype: "m.text", body: "gap 2" });
      const g3 = h.build("m.room.message", h.user("alice"), { msgtype: "m.text", body: "gap 3" });
      const gap = await send(h, [g3.pdu]);
      assert.deepEqual(gap.body.pdus, { [g3.eventId]: {} }, JSON.stringify(gap.body));
      assert.equal(h.missingRequests.length, 1);
      for (const e of [g1, g2, g3]) assert.ok(await gh.store.getEvent(h.roomId, e.eventId), "gap event stored");
      assert.deepEqual((await gh.gh.rooms.snapshot(h.roomId)).extremities, [g3.eventId]);
      const metric = async (outcome: string) => (await gh.gh.metrics.missingEvents.get()).values.find((v) => v.labels.outcome === outcome)?.value ?? 0;
      assert.equal(await metric("persisted"), versionId === "10" ? 2 : 4, "two events fetched per room");

      // A gap the origin cannot fill, nor tell the state at (/state_ids fails): the PDU is refused
      // with the reason, and nothing is written (the state fallback: test/http/gap-state.test.ts).
      h.withholdMissing = true;
      h.override = (req) => (req.url.includes("/state_ids/") ? [500, { errcode: "M_UNKNOWN", error: "down" }] : null);
      h.build("m.room.message", h.user("alice"), { msgtype: "m.text", body: "lost" });
      const orphan = h.build("m.room.message", h.user("alice"), { msgtype: "m.text", body: "orphan" });
      await gh.assertNothingWritten(async () => {
        const r = await send(h, [orphan.pdu]);
        assert.match(r.body.pdus[orphan.eventId]?.error ?? "", /could not be fetched with get_missing_events/);
      });
      h.withholdMissing = false;
      h.override = null;

      // Leave: a local leave event to every server; afterwards /send PDUs are left out and nothing is written.
      const left = await gh.admin.post(`${ADMIN}/remote/leave`).send({ user_id: me, room_id: h.roomId });
      assert.equal(left.status, 200, JSON.stringify(left.body));
      assert.equal(left.body.membership, "leave");
      assert.equal((await queued(host, h)).length, 2, "the leave is queued for the host");
      const late = h.build("m.room.message", h.user("alice"), { msgtype: "m.text", body: "after leave" }, undefined, { prev: [left.body.event_id] });
      await gh.assertNothingWritten(async () => {
        const r = await send(h, [late.pdu]);
        assert.deepEqual(r.body.pdus, {}, "left out, as Synapse does for a room it is not in");
      });
      const noSend = await gh.admin.post(`${ADMIN}/rooms/${enc(h.roomId)}/send/m.room.message`).send({ sender: me, content: { body: "x" } });
      assert.equal(noSend.status, 403, "no more local sends once left");
    });
  }

  for (const action of ["kick", "ban"] as const) {
    test(`${action}ed by the host: the record follows, /send PDUs are left out, nothing more is sent`, async () => {
      const h = await FakeHost.room([host, other], "12");
      const me = gh.local(`${action}ed`);
      assert.equal((await join(me, h)).status, 200);
      const out = h.build("m.room.member", h.user("alice"), { membership: action === "kick" ? "leave" : "ban", reason: "bye" }, me);
      assert.deepEqual((await send(h, [out.pdu])).body.pdus, { [out.eventId]: {} });
      const record = (await gh.admin.get(`${ADMIN}/remote/memberships?user_id=${enc(me)}`)).body.memberships.find((r: { room_id: string }) => r.room_id === h.roomId);
      assert.equal(record.membership, "leave");
      assert.equal(record.reason, "bye");
      const late = h.build("m.room.message", h.user("alice"), { msgtype: "m.text", body: "after" });
      await gh.assertNothingWritten(async () => assert.deepEqual((await send(h, [late.pdu])).body.pdus, {}));
      const refused = await gh.admin.post(`${ADMIN}/rooms/${enc(h.roomId)}/send/m.room.message`).send({ sender: me, content: { body: "x" } });
      assert.equal(refused.status, 403);
      const rejoin = await gh.admin.post(`${ADMIN}/rooms/${enc(h.roomId)}/join`).send({ user_id: me });
      assert.equal(rejoin.status, 400, "a local join into a room we are no longer in is refused: /remote/join");
      assert.deepEqual(await queued(host, h), [], "nothing was sent");
    });
  }

  for (const versionId of ["10", "12"]) test(`v${versionId}: history before the join is backfilled when a client's /messages reaches the start of what is stored`, async () => {
    const h = await FakeHost.room([host, other], versionId);
    const early = ["one", "two", "three"].map((body) => h.build("m.room.message", h.user("alice"), { msgtype: "m.text", body }));
    const reg = await gh.client("POST", "/_matrix/client/v3/register").set("Authorization", "Bearer as-token-elsewhere-01").send({ type: "m.login.application_service", username: `_as_reader${versionId}` });
    assert.equal(reg.status, 200, JSON.stringify(reg.body));
    const me = reg.body.user_id as string;
    assert.equal((await join(me, h)).status, 200);
    const messages = (from?: string) =>
      gh.client("GET", `/_matrix/client/v3/rooms/${enc(h.roomId)}/messages?dir=b&limit=5${from ? `&from=${from}` : ""}&user_id=${enc(me)}`).set("Authorization", "Bearer as-token-elsewhere-01");
    const page = await messages();
    assert.equal(page.status, 200, JSON.stringify(page.body));
    assert.equal(h.backfills, 1);
    const bodies = page.body.chunk.filter((e: { type: string }) => e.type === "m.room.message").map((e: { content: { body: string } }) => e.content.body);
    assert.deepEqual(bodies, ["three", "two", "one"], "newest first, fetched with /backfill");
    assert.ok(page.body.end, "more to read");
    const next = await messages(page.body.end);
    assert.equal(next.status, 200, JSON.stringify(next.body));
    assert.ok(next.body.chunk.some((e: { type: string }) => e.type === "m.room.create"), "down to the create event");
    // Stored before the timeline, with state: the current state and extremities are unchanged.
    const snap = await gh.gh.rooms.snapshot(h.roomId);
    assert.deepEqual(snap.extremities, [h.tip]);
    for (const e of early) assert.ok((await gh.store.eventStateGroups(h.roomId, [e.eventId])).has(e.eventId), "state at each backfilled event");
  });

  test("an event whose content hash fails is stored redacted (spec), the room still joins", async () => {
    const h = await FakeHost.room([host, other], "10");
    const topic = h.build("m.room.topic", h.user("alice"), { topic: "original" }, "");
    // Content is not covered by the signature of a topic event (redacted away): change it after signing.
    (topic.pdu.content as Record<string, unknown>).topic = "tampered";
    const me = gh.local("hashcheck");
    assert.equal((await join(me, h)).status, 200);
    const kept = await gh.store.getEvent(h.roomId, topic.eventId);
    assert.deepEqual(kept?.content, {}, "the redacted copy is kept");
  });

  const refusals: { why: string; change: (h: FakeHost, a: Answer) => Answer; error: RegExp; version?: string; makeJoinVersion?: string }[] = [
    { why: "members_omitted without servers_in_room (spec v1.19: required with members_omitted)", change: (_h, a) => ({ ...a, members_omitted: true }), error: /servers_in_room/ },
    { why: "state and auth_chain must be lists", change: (_h, a) => ({ ...a, state: {} as never }), error: /must be lists/ },
    {
      why: "a signature that does not verify (a signed field changed)",
      change: (_h, a) => ({ ...a, state: a.state.map((e) => (e.type === "m.room.join_rules" ? { ...e, origin_server_ts: e.origin_server_ts + 1 } : e)) }),
      error: /failed its checks/,
    },
    {
      why: "an event of another room",
      change: (h, a) => {
        const stray = h.host.signEvent({ type: "m.room.topic", sender: h.user("alice"), state_key: "", content: { topic: "x" }, room_id: "!other:elsewhere.example", prev_events: [], auth_events: [], depth: 1 }, h.versionId);
        return { ...a, auth_chain: [...a.auth_chain, stray.pdu] };
      },
      error: /belongs to !other:elsewhere.example/,
    },
    {
      why: "the auth chain is incomplete (the power levels event is missing everywhere)",
      change: (_h, a) => ({ state: a.state.filter((e) => e.type !== "m.room.power_levels"), auth_chain: a.auth_chain.filter((e) => e.type !== "m.room.power_levels") }),
      error: /auth chain is incomplete/,
    },
    {
      why: "a state event the auth rules refuse against its auth events (bob has no power for the name)",
      change: (h, a) => {
        const name = h.build("m.room.name", h.user("bob", h.servers[1]), { name: "hijack" }, "", { apply: false });
        return { ...a, state: [...a.state, name.pdu] };
      },
      error: /fails the auth rules/,
    },
    { why: "no create event", change: (_h, a) => ({ state: a.state.filter((e) => e.type !== "m.room.create"), auth_chain: a.auth_chain.filter((e) => e.type !== "m.room.create") }), error: /no m.room.create|belongs to|not the create event/ },
    {
      why: "two events for one state key",
      change: (h, a) => {
        const rules = h.build("m.room.join_rules", h.user("alice"), { join_rule: "public" }, "", { apply: false });
        return { ...a, state: [...a.state, rules.pdu] };
      },
      error: /two events for m.room.join_rules/,
    },
    {
      why: "the returned state does not let our join in (join rule invite)",
      change: (h, a) => {
        const rules = h.build("m.room.join_rules", h.user("alice"), { join_rule: "invite" }, "", { apply: false });
        return { ...a, state: [...a.state.filter((e) => e.type !== "m.room.join_rules"), rules.pdu] };
      },
      error: /does not allow our join/,
    },
    { why: "the create event's version differs from make_join's", change: (_h, a) => a, version: "9", makeJoinVersion: "10", error: /room version 9, make_join said 10/ },
  ];
  for (const c of refusals) {
    test(`refused send_join answer, nothing stored: ${c.why}`, async () => {
      const h = await FakeHost.room([host, other], c.version ?? "10");
      h.mutate = (a) => c.change(h, a);
      if (c.makeJoinVersion) h.makeJoinVersion = c.makeJoinVersion;
      const me = gh.local(`refused${Math.random().toString(36).slice(2, 8)}`);
      await gh.assertNothingWritten(async () => {
        const res = await join(me, h);
        assert.equal(res.status, 502, JSON.stringify(res.body));
        assert.match(res.body.error, c.error);
        assert.match(res.body.error, /refused the send_join response/);
      });
    });
  }
});
