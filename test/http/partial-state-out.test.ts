// Gatehouse joining a room hosted elsewhere with partial state (rooms/partial-state.ts): send_join
// asks omit_members=true; a fake resident answers members_omitted with servers_in_room; the room
// is stored flagged partial, works while partial (inbound events against their auth events, our
// events to servers_in_room, member-list reads refused), and the resync (/state_ids, /state,
// /event at our join) completes it in one write. Hostile resyncs (a forged member event, a state
// that disagrees with the send_join answer, a server that hangs) write nothing (dumpPrefix).
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, ADMIN, FED, enc } from "../support/gatehouse.js";
import { HANG, RemoteServer } from "../support/remote-server.js";
import { FakeHost } from "../support/fake-host.js";
import { authEventIds, stateField } from "../../src/store/room-store.js";
import { PartialStateResync } from "../../src/rooms/partial-state.js";
import { GapState } from "../../src/rooms/gap-state.js";
import type { Pdu } from "../../src/protocol/pdu.js";

describe("partial-state joins of rooms hosted elsewhere", () => {
  let gh: TestGatehouse;
  let host: RemoteServer;
  let other: RemoteServer;
  let third: RemoteServer;

  before(async () => {
    gh = await TestGatehouse.start({ name: "partial-state-out", env: { GATEHOUSE_FEDERATION_TIMEOUT_MS: "1500" } });
    host = await RemoteServer.start();
    other = await RemoteServer.start();
    third = await RemoteServer.start();
  });
  after(async () => {
    await Promise.all([host.close(), other.close(), third.close()]);
    await gh.cleanup();
  });

  /**
   * A room on `host` with members on host and other; its send_join answers members_omitted (every
   * member event left out of state), servers_in_room naming host and other. `resync` decides
   * what the resync's reads (/state_ids, /state) get: "open" the truth, "closed" 503.
   */
  async function partialRoom(versionId: string, beforeJoin?: (h: FakeHost) => void) {
    const h = await FakeHost.room([host, other], versionId);
    h.build("m.room.member", h.user("carol"), { membership: "join" }, h.user("carol"));
    h.build("m.room.member", h.user("dave", other), { membership: "join" }, h.user("dave", other));
    h.build("m.room.topic", h.user("alice"), { topic: "big room" }, "");
    beforeJoin?.(h);
    const ctl = { resync: "closed" as "open" | "closed", joinAsked: "" };
    h.override = (req) => {
      const path = req.url.split("?")[0]!;
      if (req.method === "PUT" && path.startsWith("/_matrix/federation/v2/send_join/")) {
        ctl.joinAsked = req.url;
        const joinPdu = req.body as Pdu;
        const kept = [...h.state.values()].filter((id) => h.events.get(id)!.type !== "m.room.member");
        const answer = {
          state: kept.map((id) => h.events.get(id)!),
          auth_chain: h.authChain([...kept, ...authEventIds(joinPdu)]),
          members_omitted: true,
          servers_in_room: [host.serverName, other.serverName],
        };
        h.apply(decodeURIComponent(path.split("/").pop()!), joinPdu);
        return [200, answer];
      }
      const resyncRead = req.method === "GET" && /^\/_matrix\/federation\/v1\/(state_ids|state)\//.test(path);
      if (resyncRead && ctl.resync === "closed") return [503, { errcode: "M_UNKNOWN", error: "not now" }];
      return null;
    };
    const me = gh.local(`joiner${versionId}${Math.random().toString(36).slice(2, 6)}`);
    const res = await gh.admin.post(`${ADMIN}/remote/join`).send({ user_id: me, room_id: h.roomId, via: [host.serverName] });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return { h, ctl, me, joinId: h.tip };
  }

  const queued = async (server: RemoteServer, roomId: string): Promise<string[]> =>
    (await gh.redis.lrange(`${gh.prefix}:out:{${server.serverName}}:pdus`, 0, -1)).filter((r) => r.startsWith(`${roomId} `)).map((r) => r.split(" ")[1]!);
  const send = (pdus: Pdu[], from = host) => gh.fed(from, "PUT", `${FED}/v1/send/t${Math.random().toString(36).slice(2)}`, { origin: from.serverName, origin_server_ts: Date.now(), pdus });

  for (const versionId of ["10", "12"]) {
    test(`v${versionId}: asked with omit_members, stored partial, usable while partial, completed by the resync`, async () => {
      const { h, ctl, me, joinId } = await partialRoom(versionId);
      assert.match(ctl.joinAsked, /\?omit_members=true$/, "send_join asks for partial state");
      const room = await gh.store.getRoom(h.roomId);
      assert.deepEqual(room?.partialState, { servers: [host.serverName, other.serverName].sort(), via: host.serverName, joinEventId: joinId });
      assert.ok((await gh.redis.smembers(`${gh.prefix}:partial-state-rooms`)).includes(h.roomId), "listed for resume");
      const bob = h.user("bob", other);
      const snap = await gh.gh.rooms.snapshot(h.roomId);
      assert.equal(snap.state.get(stateField("m.room.member", bob)), undefined, "bob's membership was omitted");
      assert.equal(snap.state.get(stateField("m.room.topic", ""))?.content.topic, "big room", "non-member state is whole");

      // Reads that need the member list are refused, never answered short.
      const members = await gh.admin.get(`${ADMIN}/rooms/${enc(h.roomId)}/members`);
      assert.equal(members.status, 503, JSON.stringify(members.body));
      assert.equal(members.body.errcode, "M_UNKNOWN");
      // The summary answers, saying it is partial: the servers of servers_in_room are listed though
      // none of their members is held yet (other's only member, bob, was omitted).
      const summary = await gh.admin.get(`${ADMIN}/rooms/${enc(h.roomId)}`);
      assert.equal(summary.status, 200, JSON.stringify(summary.body));
      assert.equal(summary.body.partial_state, true);
      assert.ok(summary.body.joined_servers.includes(other.serverName), JSON.stringify(summary.body.joined_servers));
      const stateIds = await gh.fed(host, "GET", `${FED}/v1/state_ids/${enc(h.roomId)}?event_id=${enc(joinId)}`);
      assert.equal(stateIds.status, 404);
      assert.equal(stateIds.body.errcode, "M_NOT_FOUND");

      // While partial: bob (omitted) speaks; his join is fetched (/event) and checked, the message
      // checked against its auth events and accepted.
      const msg = h.build("m.room.message", bob, { msgtype: "m.text", body: "during the resync" });
      const sent = await send([msg.pdu], other);
      assert.deepEqual(sent.body.pdus, { [msg.eventId]: {} }, JSON.stringify(sent.body));
      // A PDU its auth events refuse is still refused (bob, power 0, sets the name).
      const bad = h.build("m.room.name", bob, { name: "nope" }, "", { apply: false });
      const refused = await send([bad.pdu], other);
      assert.match(refused.body.pdus[bad.eventId]?.error ?? "", /auth events/, JSON.stringify(refused.body));
      // Our message goes to every server of servers_in_room, though no member of `other` is known to us but bob via his message.
      const m = await gh.admin.post(`${ADMIN}/rooms/${enc(h.roomId)}/send/m.room.message`).send({ sender: me, content: { msgtype: "m.text", body: "from gatehouse" } });
      assert.equal(m.status, 200, JSON.stringify(m.body));
      assert.deepEqual(await queued(host, h.roomId), [m.body.event_id]);
      assert.deepEqual(await queued(other, h.roomId), [m.body.event_id]);

      // The resync: refused while the resident answers 503 (nothing written), then completed.
      await assert.rejects(gh.assertNothingWritten(() => gh.gh.partialState.resyncOnce(h.roomId)), /no server gave the state/);
      ctl.resync = "open";
      // (The join's own background resync may get there first: then this one finds it done.)
      assert.match(await gh.gh.partialState.resyncOnce(h.roomId), /^(completed|not_partial)$/);
      const done = await gh.store.getRoom(h.roomId);
      assert.equal(done?.partialState, undefined, "the flag is cleared");
      assert.ok(!(await gh.redis.smembers(`${gh.prefix}:partial-state-rooms`)).includes(h.roomId));
      const full = await gh.gh.rooms.snapshot(h.roomId);
      for (const u of [h.user("alice"), h.user("carol"), bob, h.user("dave", other), me]) {
        assert.equal(full.state.get(stateField("m.room.member", u))?.content.membership, "join", `${u} is in the current state`);
      }
      assert.deepEqual([...full.joinedServers].sort(), [gh.serverName, host.serverName, other.serverName].sort());
      // The state at our join, and after the event received while partial, hold the omitted members.
      const atJoin = await gh.store.stateAt(h.roomId, joinId, "before");
      assert.equal(atJoin?.get(stateField("m.room.member", bob)), h.state.get(stateField("m.room.member", bob)));
      const atMsg = await gh.store.stateAt(h.roomId, msg.eventId, "after");
      assert.equal(atMsg?.get(stateField("m.room.member", h.user("dave", other))), h.state.get(stateField("m.room.member", h.user("dave", other))));
      const membersNow = await gh.admin.get(`${ADMIN}/rooms/${enc(h.roomId)}/members`);
      assert.equal(membersNow.status, 200);
      const summaryNow = await gh.admin.get(`${ADMIN}/rooms/${enc(h.roomId)}`);
      assert.equal(summaryNow.body.partial_state, undefined, "no longer partial");
      const joinedNow = Object.values(membersNow.body.members as Record<string, string>).filter((m) => m === "join").length;
      assert.equal(summaryNow.body.membership_counts.join, joinedNow, "the counts cover the whole member list now");
      assert.equal(membersNow.body.members[bob], "join");
      const stateNow = await gh.fed(other, "GET", `${FED}/v1/state_ids/${enc(h.roomId)}?event_id=${enc(msg.eventId)}`);
      assert.equal(stateNow.status, 200, JSON.stringify(stateNow.body));
      assert.ok(stateNow.body.pdu_ids.includes(h.state.get(stateField("m.room.member", h.user("carol")))), "the state served now is complete");
      // A second resync finds nothing to do.
      assert.equal(await gh.gh.partialState.resyncOnce(h.roomId), "not_partial");
      await gh.gh.partialState.settled(h.roomId);
      // bob's message, accepted against its auth events, passes against the complete state too.
      const recheckFailed = (await gh.gh.metrics.partialStateResyncs.get()).values.find((v) => v.labels.outcome === "recheck_failed")?.value ?? 0;
      assert.equal(recheckFailed, 0, "no event accepted while partial fails the complete state");
    });
  }

  const hostile: { why: string; answer: (h: FakeHost, joinId: string) => (req: { method: string; url: string }) => [number, unknown] | null; error: RegExp }[] = [
    {
      why: "a forged member event in the resync (content changed after signing: the signature fails)",
      answer: (h) => {
        const bobJoin = h.state.get(stateField("m.room.member", h.user("bob", h.servers[1])))!;
        // Mallory's join made of bob's: state_key changed, bob's server's signature kept (it no longer verifies).
        const forge = (p: Pdu): Pdu => ({ ...p, state_key: "@mallory:" + h.servers[1]!.serverName, sender: "@mallory:" + h.servers[1]!.serverName });
        return (req) => {
          const path = req.url.split("?")[0]!;
          if (req.method === "GET" && path.startsWith("/_matrix/federation/v1/state/")) {
            const before = h.stateBefore.get(new URLSearchParams(req.url.split("?")[1]).get("event_id")!)!;
            return [200, { pdus: [...before.values()].map((id) => (id === bobJoin ? forge(h.events.get(id)!) : h.events.get(id)!)), auth_chain: h.authChain(before.values()) }];
          }
          if (req.method === "GET" && path === `/_matrix/federation/v1/event/${encodeURIComponent(bobJoin)}`) return [200, { origin: "x", origin_server_ts: 0, pdus: [forge(h.events.get(bobJoin)!)] }];
          return null;
        };
      },
      error: /failed its checks|is another event/,
    },
    {
      why: "a state at our join that does not match the send_join answer (another join_rules event)",
      answer: (h, joinId) => {
        const rules = h.build("m.room.join_rules", h.user("alice"), { join_rule: "public", other: true }, "", { apply: false });
        return (req) => {
          const path = req.url.split("?")[0]!;
          if (req.method === "GET" && path.startsWith("/_matrix/federation/v1/state_ids/")) {
            const before = new Map(h.stateBefore.get(joinId)!);
            before.set(stateField("m.room.join_rules", ""), rules.eventId);
            return [200, { pdu_ids: [...before.values()], auth_chain_ids: h.authChain(before.values()).map((e) => h.idOf(e)) }];
          }
          return null;
        };
      },
      error: /join_rules "", the send_join answer/,
    },
    {
      why: "a state at our join that holds a non-member event the send_join answer omitted",
      answer: (h, joinId) => {
        const extra = h.build("m.room.custom", h.user("alice"), { x: 1 }, "k", { apply: false, prev: [...(h.events.get(joinId)!.prev_events as string[])] });
        return (req) => {
          const path = req.url.split("?")[0]!;
          if (req.method === "GET" && path.startsWith("/_matrix/federation/v1/state_ids/")) {
            const ids = [...h.stateBefore.get(joinId)!.values(), extra.eventId];
            return [200, { pdu_ids: ids, auth_chain_ids: h.authChain(ids).map((e) => h.idOf(e)) }];
          }
          return null;
        };
      },
      error: /m\.room\.custom event the send_join answer omitted/,
    },
    {
      why: "a resync server that hangs (the request times out; nothing written)",
      answer: () => (req) => (req.method === "GET" && req.url.startsWith("/_matrix/federation/v1/state_ids/") ? HANG : null),
      error: /timed out/,
    },
  ];
  for (const c of hostile) {
    test(`refused resync: ${c.why}`, async () => {
      const { h, ctl, joinId } = await partialRoom("12");
      const hostileAnswer = c.answer(h, joinId);
      const base = h.override!;
      // Every server of servers_in_room answers the same way (the fake serves both).
      h.override = (req) => (req.method === "PUT" ? base(req) : (hostileAnswer(req) ?? base(req)));
      ctl.resync = "open";
      await assert.rejects(gh.assertNothingWritten(() => gh.gh.partialState.resyncOnce(h.roomId)), c.error);
      assert.ok((await gh.store.getRoom(h.roomId))?.partialState, "still partial");
      // The honest answer completes it.
      h.override = base;
      assert.match(await gh.gh.partialState.resyncOnce(h.roomId), /^(completed|not_partial)$/);
      assert.equal((await gh.store.getRoom(h.roomId))?.partialState, undefined);
    });
  }

  test("an event its auth events allowed while partial, which the complete state refuses, is found by the recheck after the resync (logged and counted recheck_failed, not undone)", async () => {
    // Before our join, dave (on `other`) is banned: his ban is a member event, left out of the
    // partial state. `other` then sends a message of dave's naming his old join as auth event
    // (a lying server: the state before the message has the ban).
    let forgedAuth: string[] = [];
    const { h, ctl } = await partialRoom("12", (h) => {
      forgedAuth = authEventIds(h.build("m.room.message", h.user("dave", other), { msgtype: "m.text", body: "draft" }, undefined, { apply: false }).pdu);
      h.build("m.room.member", h.user("alice"), { membership: "ban" }, h.user("dave", other));
    });
    const forged = other.signEvent(
      { type: "m.room.message", sender: h.user("dave", other), content: { msgtype: "m.text", body: "banned, yet here" }, room_id: h.roomId, prev_events: [h.tip], auth_events: forgedAuth, depth: h.depth + 1, origin_server_ts: Date.now() },
      "12",
    );
    const sent = await send([forged.pdu], other);
    assert.deepEqual(sent.body.pdus, { [forged.eventId]: {} }, `accepted by its auth events while partial: ${JSON.stringify(sent.body)}`);
    const metric = async () => (await gh.gh.metrics.partialStateResyncs.get()).values.find((v) => v.labels.outcome === "recheck_failed")?.value ?? 0;
    const failedBefore = await metric();
    ctl.resync = "open";
    assert.match(await gh.gh.partialState.resyncOnce(h.roomId), /^(completed|not_partial)$/);
    await gh.gh.partialState.settled(h.roomId);
    assert.equal((await metric()) - failedBefore, 1, "the recheck found the event the complete state refuses");
    assert.equal((await gh.store.eventStatuses(h.roomId, [forged.eventId])).get(forged.eventId), undefined, "its status is not rewritten (documented: not undone)");
  });

  test("the resync is retried with backoff and resumed from Redis by a new process (restart)", async () => {
    const { h, ctl } = await partialRoom("12");
    // A "new process": its own resync runner over the same Redis, started by resume() only.
    const outcomes: string[] = [];
    const fresh = new PartialStateResync({
      store: gh.store,
      gapState: new GapState({ rooms: gh.gh.rooms, store: gh.store, client: gh.gh.client }),
      serverName: gh.serverName,
      logger: gh.gh.logger,
      backoff: { initialMs: 20, maxMs: 40 },
      onOutcome: (o) => {
        outcomes.push(o);
        if (outcomes.length === 2) ctl.resync = "open";
      },
    });
    assert.ok((await fresh.resume()) >= 1);
    await fresh.settled(h.roomId);
    assert.deepEqual(outcomes.slice(0, 2), ["failed", "failed"]);
    // (The joining process's own resync may complete it first: then this one finds it done.)
    assert.match(outcomes[outcomes.length - 1]!, /^(completed|not_partial)$/);
    assert.equal((await gh.store.getRoom(h.roomId))?.partialState, undefined);
    await fresh.close();
  });

  test("members_omitted is refused when it was not asked for (GATEHOUSE_PARTIAL_STATE_JOINS=false), nothing written", async () => {
    const off = await TestGatehouse.start({ name: "partial-state-off", env: { GATEHOUSE_PARTIAL_STATE_JOINS: "false" } });
    try {
      const h = await FakeHost.room([third], "12");
      let asked = "";
      h.override = (req) => {
        if (req.method !== "PUT" || !req.url.includes("/send_join/")) return null;
        asked = req.url;
        const kept = [...h.state.values()].filter((id) => h.events.get(id)!.type !== "m.room.member");
        return [200, { state: kept.map((id) => h.events.get(id)!), auth_chain: h.authChain([...kept, ...authEventIds(req.body as Pdu)]), members_omitted: true, servers_in_room: [third.serverName] }];
      };
      const res = await off.assertNothingWritten(() => off.admin.post(`${ADMIN}/remote/join`).send({ user_id: off.local("nopartial"), room_id: h.roomId, via: [third.serverName] }));
      assert.equal(res.status, 502, JSON.stringify(res.body));
      assert.match(res.body.error, /did not send omit_members=true/);
      assert.doesNotMatch(asked, /omit_members/);
    } finally {
      await off.cleanup();
    }
  });
});
