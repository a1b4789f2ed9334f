// Pushing events to an application service through the sender's one durable queue: a knock from
// federation, the bridge's invite, the join and messages arrive in order in
// PUT /_matrix/app/v1/transactions/{txnId} with the hs_token; while the service is down the same
// txnId and body are re-sent and nothing is lost; /queue shows the destination; invites from other
// servers to namespace users are pushed with their stripped state.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { TestGatehouse, ADMIN, FED, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";
import { waitFor } from "../../src/dev/wait.js";
import { openApiContract } from "../support/openapi.js";

const AS_TOKEN = "as-token-push-0000001";
const HS_TOKEN = "hs-token-push-0000001";
const C = "/_matrix/client/v3";

interface Received {
  txnId: string;
  auth: string | undefined;
  body: string;
  events: { type: string; sender: string; state_key?: string; event_id: string; room_id: string; content: Record<string, unknown>; unsigned?: Record<string, unknown> }[];
}

let t: TestGatehouse;
let remote: RemoteServer;
let service: http.Server;
/** Every PUT the service received, accepted or not. */
const attempts: Received[] = [];
/** Transactions the service accepted (200), de-duplicated by txnId as a bridge does. */
const accepted = new Map<string, Received>();
let failWith: number | null = null;

const events = () => [...accepted.values()].flatMap((r) => r.events);

function as(method: "GET" | "PUT" | "POST", path: string) {
  return t.client(method, path).set("Authorization", `Bearer ${AS_TOKEN}`);
}

before(async () => {
  service = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      const m = /^\/_matrix\/app\/v1\/transactions\/([^/?]+)$/.exec(req.url ?? "");
      if (req.method !== "PUT" || !m) {
        res.writeHead(404, { "Content-Type": "application/json" }).end('{"errcode":"M_UNRECOGNIZED"}');
        return;
      }
      const rec: Received = { txnId: decodeURIComponent(m[1]!), auth: req.headers.authorization, body, events: JSON.parse(body).events };
      attempts.push(rec);
      if (failWith !== null) {
        res.writeHead(failWith, { "Content-Type": "application/json" }).end('{"errcode":"M_UNKNOWN"}');
        return;
      }
      accepted.set(rec.txnId, rec);
      res.writeHead(200, { "Content-Type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((r) => service.listen(0, "127.0.0.1", () => r()));
  const url = `http://127.0.0.1:${(service.address() as AddressInfo).port}`;
  t = await TestGatehouse.start({
    name: "as-push",
    registrations: [
      `id: pusher\nurl: ${url}\nas_token: ${AS_TOKEN}\nhs_token: ${HS_TOKEN}\nsender_localpart: pushbot\nrate_limited: false\nnamespaces:\n  users:\n    - exclusive: true\n      regex: "@_push_.*:gatehouse\\\\.test"\n`,
    ],
    env: { GATEHOUSE_SENDER_BACKOFF_INITIAL_MS: "50", GATEHOUSE_SENDER_BACKOFF_MAX_MS: "200", GATEHOUSE_SENDER_BACKOFF_OUTAGE_PERCENT: "0" },
  });
  remote = await RemoteServer.start();
  await t.gh.sender.startWorkers();
});

after(async () => {
  await t.cleanup();
  await remote.close();
  await new Promise<void>((r) => service.close(() => r()));
});

describe("pushing to an application service", () => {
  let roomId: string;
  const knocker = () => remote.userId("knocker");

  test("the bot's room, a knock from federation, the bot's invite, the join and messages arrive in order", async () => {
    const created = await as("POST", `${C}/createRoom`).send({ preset: "private_chat", name: "Support", initial_state: [{ type: "m.room.join_rules", content: { join_rule: "knock" } }] });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    roomId = created.body.room_id;
    // The room is written by one script (persist-new-room.lua), its pushes queued in that write: every event of it.
    const atCreation = await t.store.timeline(roomId);
    assert.ok(atCreation.length >= 7, "create, join, power levels, join rules, history visibility, guest access, name");
    await waitFor("pushed events", () => atCreation.every(({ eventId }) => events().some((e) => e.event_id === eventId)) || null, 5000);
    assert.equal(events()[0]!.type, "m.room.create", "the create event is pushed first (the creator is the service's sender)");
    assert.equal(events()[0]!.room_id, roomId, "a v12 create event has no room_id; the pushed event has the room's");
    // Every pushed body matches the documented transaction schema.
    const validate = openApiContract().compile("#/components/schemas/AppserviceTransaction");
    for (const a of attempts) assert.ok(validate(JSON.parse(a.body)), JSON.stringify(validate.errors));

    const { eventId: knockId } = await t.knock(remote, roomId, knocker(), { reason: "let me in" });
    await waitFor("pushed events", () => events().some((e) => e.event_id === knockId), 5000);
    const knock = events().find((e) => e.event_id === knockId)!;
    assert.equal(knock.type, "m.room.member");
    assert.equal(knock.content.membership, "knock");
    assert.equal(knock.content.reason, "let me in");
    assert.equal(knock.state_key, knocker());

    // The bot accepts from the pushed event: an invite (over federation to the knocker's server).
    const inv = await as("POST", `${C}/rooms/${enc(roomId)}/invite`).send({ user_id: knock.state_key });
    assert.equal(inv.status, 200, JSON.stringify(inv.body));
    const { eventId: joinId } = await t.join(remote, roomId, knocker());
    await waitFor("pushed events", () => events().some((e) => e.event_id === joinId), 5000);

    const msg = await t.remoteEvent(remote, roomId, { type: "m.room.message", sender: knocker(), content: { msgtype: "m.text", body: "hello bot" } });
    const sent = await t.fed(remote, "PUT", `${FED}/v1/send/txn-${Date.now()}`, { origin: remote.serverName, origin_server_ts: Date.now(), pdus: [msg.pdu] });
    assert.equal(sent.status, 200, JSON.stringify(sent.body));
    await waitFor("pushed events", () => events().some((e) => e.event_id === msg.eventId), 5000);
    const reply = await as("PUT", `${C}/rooms/${enc(roomId)}/send/m.room.message/r1`).send({ msgtype: "m.text", body: "hello human" });
    await waitFor("pushed events", () => events().some((e) => e.event_id === reply.body.event_id), 5000);

    // Order: the room's own order (timeline), no event twice.
    const timeline = (await t.store.timeline(roomId)).map((e) => e.eventId);
    const pushed = events().filter((e) => e.room_id === roomId).map((e) => e.event_id);
    assert.deepEqual(pushed, timeline.filter((id) => pushed.includes(id)), "pushed in timeline order");
    assert.equal(new Set(pushed).size, pushed.length);
    for (const id of [knockId, inv.body.event_id ?? null, joinId, msg.eventId, reply.body.event_id].filter(Boolean)) assert.ok(pushed.includes(id as string), `${id} pushed`);
    assert.ok(attempts.every((a) => a.auth === `Bearer ${HS_TOKEN}`), "hs_token in the Authorization header");
  });

  test("while the service fails, the same txnId and body are re-sent; nothing is lost", async () => {
    failWith = 503;
    const before = attempts.length;
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await as("PUT", `${C}/rooms/${enc(roomId)}/send/m.room.message/outage${i}`).send({ msgtype: "m.text", body: `during outage ${i}` })).body.event_id);
    await waitFor("pushed events", () => attempts.length >= before + 3, 5000);
    const failed = attempts.slice(before);
    assert.equal(new Set(failed.map((a) => a.txnId)).size, 1, "one transaction in flight, retried with the same txnId");
    assert.ok(failed.every((a) => a.body === failed[0]!.body), "byte-for-byte the same body");
    const queue = await t.admin.get(`${ADMIN}/queue/${enc("as:pusher")}`);
    assert.equal(queue.status, 200, JSON.stringify(queue.body));
    assert.ok(queue.body.failures >= 1, JSON.stringify(queue.body));
    failWith = null;
    await waitFor("pushed events", () => ids.every((id) => events().some((e) => e.event_id === id)), 5000);
    const retried = accepted.get(failed[0]!.txnId);
    assert.ok(retried, "the failed txnId was finally accepted");
    // The metrics count the service's transactions with federation's (sent and failed).
    const scraped = await t.gh.metrics.registry.getSingleMetricAsString("gatehouse_outbound_transactions_total");
    assert.match(scraped, /outcome="failed"\} [1-9]/);
    assert.match(scraped, /outcome="sent"\} [1-9]/);
    const list = await t.admin.get(`${ADMIN}/queue`);
    assert.ok((list.body.destinations as { destination: string }[]).some((d) => d.destination === "as:pusher"), JSON.stringify(list.body));
  });

  test("an invite from another server to a namespace user is pushed with its stripped state", async () => {
    const { pdu: create, eventId: createId } = remote.signEvent(
      { type: "m.room.create", sender: remote.userId("host"), state_key: "", content: { room_version: "12" }, prev_events: [], auth_events: [], depth: 1, origin_server_ts: Date.now() },
      "12",
    );
    const remoteRoomId = `!${createId.slice(1)}`;
    const invitee = "@_push_carol:gatehouse.test";
    // Only local users who exist take invites (local-users.ts): the bridge registered this one.
    assert.equal((await as("POST", `${C}/register`).send({ type: "m.login.application_service", username: "_push_carol" })).status, 200);
    const { pdu, eventId } = remote.signEvent(
      { type: "m.room.member", room_id: remoteRoomId, sender: remote.userId("host"), state_key: invitee, content: { membership: "invite" }, prev_events: [createId], auth_events: [], depth: 2, origin_server_ts: Date.now() },
      "12",
    );
    const res = await t.fed(remote, "PUT", `${FED}/v2/invite/${enc(remoteRoomId)}/${enc(eventId)}`, { room_version: "12", event: pdu, invite_room_state: [create] });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    await waitFor("pushed events", () => events().some((e) => e.event_id === eventId), 5000);
    const pushed = events().find((e) => e.event_id === eventId)!;
    assert.equal(pushed.state_key, invitee);
    assert.equal(pushed.room_id, remoteRoomId);
    assert.deepEqual((pushed.unsigned?.invite_room_state as { type: string }[]).map((s) => s.type), ["m.room.create"]);
    // Not a namespace user: not pushed.
    const other = remote.signEvent(
      { type: "m.room.member", room_id: remoteRoomId, sender: remote.userId("host"), state_key: t.local("plain"), content: { membership: "invite" }, prev_events: [createId], auth_events: [], depth: 2, origin_server_ts: Date.now() },
      "12",
    );
    const before = attempts.length;
    await t.gh.localUsers.add(t.local("plain"));
    assert.equal((await t.fed(remote, "PUT", `${FED}/v2/invite/${enc(remoteRoomId)}/${enc(other.eventId)}`, { room_version: "12", event: other.pdu, invite_room_state: [create] })).status, 200);
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(!attempts.slice(before).some((a) => a.events.some((e) => e.event_id === other.eventId)));
  });

  test("a room without the service's users is not pushed", async () => {
    const roomId2 = await t.createRoom({ name: "not for the bridge" });
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(!events().some((e) => e.room_id === roomId2));
  });
});
