// The OpenAPI contract against real responses: every operation of openapi/gatehouse.yaml is
// called at least once for success and once for an error (except the few that cannot fail on
// request), and every response is validated with validateResponse (test/support/openapi.ts).
// The last test checks that coverage, so an endpoint added to the document without a call here
// fails the suite.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import express from "express";
import request from "supertest";
import { Redis } from "ioredis";
import { Gauge, Registry } from "prom-client";
import { TestGatehouse, ADMIN, FED, enc, type FedOptions } from "../support/gatehouse.js";
import { RemoteServer, randomKey, type RecordedRequest } from "../support/remote-server.js";
import { validateResponse, loadOpenApi, HTTP_METHODS } from "../support/openapi.js";
import { opsApp, type OpsState } from "../../src/http/ops.js";
import { openapiRouter, OPENAPI_JSON_PATH, OPENAPI_YAML_PATH } from "../../src/admin/openapi-route.js";
import { errorHandler, notFoundHandler } from "../../src/http/errors.js";
import { createLogger } from "../../src/logger.js";
import type { Pdu } from "../../src/protocol/pdu.js";

type Method = "GET" | "PUT" | "POST" | "DELETE";
type Res = request.Response;

let t: TestGatehouse;
let remote: RemoteServer; // joins the hosted room
let knocker: RemoteServer; // knocks, rescinds
let stranger: RemoteServer; // never in the room; refuses invites
let resident: RemoteServer; // hosts a room of its own (for /remote/* and /v2/invite)
let roomId: string;
let joinedUser: string;
let message: { pdu: Pdu; eventId: string };
let n = 0;

// ---- coverage bookkeeping ---------------------------------------------------------------------

/** `METHOD template` → statuses seen. */
const seen = new Map<string, Set<number>>();

function check(method: Method, uri: string, res: Res): Res {
  const ct = String(res.headers["content-type"] ?? "");
  const body = ct.startsWith("application/json") ? res.body : res.text;
  const match = validateResponse(method, uri, res.status, body, ct || undefined);
  const key = `${match.method.toUpperCase()} ${match.template}`;
  if (!seen.has(key)) seen.set(key, new Set());
  seen.get(key)!.add(res.status);
  return res;
}

function expect(res: Res, status: number, errcode?: string): Res {
  const req = (res as unknown as { req?: { method?: string; path?: string } }).req;
  assert.equal(res.status, status, `${req?.method} ${req?.path}: ${res.text?.slice(0, 500)}`);
  if (errcode) assert.equal(res.body.errcode, errcode, res.text);
  return res;
}

// ---- callers: each validates the response against the document ------------------------------

async function fed(server: RemoteServer, method: "GET" | "PUT" | "POST", uri: string, body?: unknown, opts?: FedOptions): Promise<Res> {
  return check(method, uri, await t.fed(server, method, uri, body, opts));
}

async function plainFed(method: "GET" | "PUT" | "POST", uri: string): Promise<Res> {
  return check(method, uri, await t.plain(method, uri));
}

async function admin(method: Method, path: string, body?: unknown): Promise<Res> {
  const uri = `${ADMIN}${path}`;
  const r = method === "GET" ? t.admin.get(uri) : method === "PUT" ? t.admin.put(uri) : method === "DELETE" ? t.admin.delete(uri) : t.admin.post(uri);
  return check(method, uri, await (body === undefined ? r : r.send(body as object)));
}

async function adminWithToken(token: string | null, method: Method, path: string): Promise<Res> {
  const uri = `${ADMIN}${path}`;
  const agent = request(t.gh.adminApp);
  let r = method === "GET" ? agent.get(uri) : method === "PUT" ? agent.put(uri) : agent.post(uri);
  if (token !== null) r = r.set("Authorization", `Bearer ${token}`);
  return check(method, uri, await r);
}

const fresh = (server: RemoteServer, name = "u") => server.userId(`${name}${++n}`);

// ---- a resident server for rooms hosted elsewhere ---------------------------------------------

/**
 * A v12 room "hosted" by `resident`, signed by the resident: its create event, the host's join
 * and a public join rule (Gatehouse checks a send_join answer: the state must let the join in).
 */
let remoteRoom: { roomId: string; createId: string; create: Pdu; state: Pdu[]; tip: string; joinRulesId: string };
let refusingRoom: string;

function residentRoom(server: RemoteServer): typeof remoteRoom {
  const host = server.userId("host");
  const { pdu, eventId } = server.signEvent(
    { type: "m.room.create", sender: host, state_key: "", content: { room_version: "12" }, prev_events: [], auth_events: [], depth: 1, origin_server_ts: Date.now() },
    "12",
  );
  const roomId = `!${eventId.slice(1)}`;
  const join = server.signEvent({ type: "m.room.member", room_id: roomId, sender: host, state_key: host, content: { membership: "join" }, prev_events: [eventId], auth_events: [], depth: 2, origin_server_ts: Date.now() }, "12");
  const rules = server.signEvent(
    { type: "m.room.join_rules", room_id: roomId, sender: host, state_key: "", content: { join_rule: "public" }, prev_events: [join.eventId], auth_events: [join.eventId], depth: 3, origin_server_ts: Date.now() },
    "12",
  );
  return { roomId, createId: eventId, create: pdu, state: [pdu, join.pdu, rules.pdu], tip: rules.eventId, joinRulesId: rules.eventId };
}

/**
 * Teaches the fake remote server the resident side of make_/send_ knock, join and leave for
 * `remoteRoom` (the shared fake only answers keys and /v2/invite). Rooms other than
 * `remoteRoom` are refused with 403.
 */
function actAsResident(server: RemoteServer): void {
  const target = server as unknown as { answer: (req: RecordedRequest) => [number, unknown] };
  const original = target.answer.bind(server);
  target.answer = (req) => {
    const path = req.url.split("?")[0]!;
    const make = /^\/_matrix\/federation\/v1\/make_(knock|join|leave)\/([^/]+)\/([^/]+)$/.exec(path);
    const send = /^\/_matrix\/federation\/v[12]\/send_(knock|join|leave)\/([^/]+)\/([^/]+)$/.exec(path);
    const m = make ?? send;
    if (!m) return original(req);
    if (decodeURIComponent(m[2]!) !== remoteRoom.roomId) return [403, { errcode: "M_FORBIDDEN", error: "You are not allowed to knock on this room" }];
    if (make) {
      const userId = decodeURIComponent(m[3]!);
      return [
        200,
        {
          room_version: "12",
          event: {
            type: "m.room.member",
            room_id: remoteRoom.roomId,
            sender: userId,
            state_key: userId,
            content: { membership: m[1] },
            origin_server_ts: Date.now(),
            depth: 4,
            prev_events: [remoteRoom.tip],
            auth_events: m[1] === "join" ? [remoteRoom.joinRulesId] : [],
          },
        },
      ];
    }
    switch (m[1]) {
      case "knock":
        return [200, { knock_room_state: [remoteRoom.create] }];
      case "join":
        return [200, { origin: server.serverName, state: remoteRoom.state, auth_chain: remoteRoom.state.slice(0, 2), event: req.body, members_omitted: false, servers_in_room: [server.serverName] }];
      default:
        return [200, {}];
    }
  };
}

// ---- setup ------------------------------------------------------------------------------------

before(async () => {
  t = await TestGatehouse.start({ name: "contract" });
  [remote, knocker, stranger, resident] = await Promise.all([RemoteServer.start(), RemoteServer.start(), RemoteServer.start(), RemoteServer.start()]);
  stranger.inviteBehaviour = "refuse";
  remoteRoom = residentRoom(resident);
  refusingRoom = residentRoom(resident).roomId;
  actAsResident(resident);
  roomId = await t.createRoom({ room_version: "12", name: "Contract", topic: "OpenAPI" });
});

after(async () => {
  await t.cleanup();
  await Promise.all([remote.close(), knocker.close(), stranger.close(), resident.close()]);
});

// ---- federation -------------------------------------------------------------------------------

describe("federation listener", () => {
  test("key document and version (unauthenticated)", async () => {
    expect(await plainFed("GET", "/_matrix/key/v2/server"), 200);
    expect(await plainFed("GET", `/_matrix/key/v2/server/${enc("ed25519:whatever")}`), 200);
    expect(await plainFed("GET", `${FED}/v1/version`), 200);
  });

  test("make_knock / send_knock", async () => {
    const user = fresh(knocker, "k");
    const made = expect(await fed(knocker, "GET", `${FED}/v1/make_knock/${enc(roomId)}/${enc(user)}?ver=11&ver=12`), 200);
    const { pdu, eventId } = knocker.signEvent({ ...made.body.event, content: { membership: "knock", reason: "let me in" } }, made.body.room_version);
    expect(await fed(knocker, "PUT", `${FED}/v1/send_knock/${enc(roomId)}/${enc(eventId)}`, pdu), 200);

    expect(await fed(knocker, "GET", `${FED}/v1/make_knock/${enc(roomId)}/${enc(fresh(knocker))}`), 400, "M_MISSING_PARAM");
    expect(await fed(knocker, "GET", `${FED}/v1/make_knock/${enc(roomId)}/${enc(fresh(knocker))}?ver=12`, undefined, { auth: null }), 401, "M_UNAUTHORIZED");
    expect(await fed(knocker, "GET", `${FED}/v1/make_knock/${enc("!unknown")}/${enc(fresh(knocker))}?ver=12`), 404, "M_NOT_FOUND");
    expect(await fed(knocker, "GET", `${FED}/v1/make_knock/${enc(roomId)}/${enc(fresh(remote))}?ver=12`), 403, "M_FORBIDDEN");
    const notKnock = knocker.signEvent({ ...made.body.event, content: { membership: "join" } }, "12");
    expect(await fed(knocker, "PUT", `${FED}/v1/send_knock/${enc(roomId)}/${enc(notKnock.eventId)}`, notKnock.pdu), 400, "M_INVALID_PARAM");
  });

  test("knock, admin accept (/v2/invite to the remote), make_join / send_join", async () => {
    joinedUser = fresh(remote, "member");
    await t.knock(remote, roomId, joinedUser, { displayname: "Member" });
    expect(await admin("POST", `/rooms/${enc(roomId)}/knocks/${enc(joinedUser)}/accept`, {}), 200);
    const made = expect(await fed(remote, "GET", `${FED}/v1/make_join/${enc(roomId)}/${enc(joinedUser)}?ver=12`), 200);
    const { pdu, eventId } = remote.signEvent(made.body.event, made.body.room_version);
    const wrongPath = `${FED}/v2/send_join/${enc(roomId)}/${enc("$notTheEventId")}`;
    expect(await fed(remote, "PUT", wrongPath, pdu), 400, "M_INVALID_PARAM");
    const joined = expect(await fed(remote, "PUT", `${FED}/v2/send_join/${enc(roomId)}/${enc(eventId)}`, pdu), 200);
    assert.equal(joined.body.members_omitted, false);

    const noVer = expect(await fed(remote, "GET", `${FED}/v1/make_join/${enc(roomId)}/${enc(fresh(remote))}`), 400, "M_INCOMPATIBLE_ROOM_VERSION");
    assert.equal(noVer.body.room_version, "12");
    expect(await fed(remote, "GET", `${FED}/v1/make_join/${enc(roomId)}/${enc(fresh(remote))}?ver=12`), 403, "M_FORBIDDEN");
  });

  test("make_leave / v2 send_leave / v1 send_leave", async () => {
    for (const v of ["v2", "v1"] as const) {
      const user = fresh(knocker, "rescind");
      await t.knock(knocker, roomId, user);
      const made = expect(await fed(knocker, "GET", `${FED}/v1/make_leave/${enc(roomId)}/${enc(user)}`), 200);
      const knockAgain = knocker.signEvent({ ...made.body.event, content: { membership: "knock" } }, "12");
      expect(await fed(knocker, "PUT", `${FED}/${v}/send_leave/${enc(roomId)}/${enc(knockAgain.eventId)}`, knockAgain.pdu), 400, "M_INVALID_PARAM");
      const { pdu, eventId } = knocker.signEvent(made.body.event, made.body.room_version);
      const res = expect(await fed(knocker, "PUT", `${FED}/${v}/send_leave/${enc(roomId)}/${enc(eventId)}`, pdu), 200);
      assert.deepEqual(res.body, v === "v2" ? {} : [200, {}]);
    }
    expect(await fed(knocker, "GET", `${FED}/v1/make_leave/${enc("!unknown")}/${enc(fresh(knocker))}`), 404, "M_NOT_FOUND");
  });

  test("PUT /send/{txnId}", async () => {
    message = await t.remoteEvent(remote, roomId, { type: "m.room.message", sender: joinedUser, content: { msgtype: "m.text", body: "hello" } });
    const forged = remote.signEvent(await t.template(roomId, { type: "m.room.message", sender: joinedUser, content: { body: "forged" } }), "12", randomKey());
    const res = expect(
      await fed(remote, "PUT", `${FED}/v1/send/contract-1`, { origin: remote.serverName, origin_server_ts: Date.now(), pdus: [message.pdu, forged.pdu] }),
      200,
    );
    assert.deepEqual(res.body.pdus[message.eventId], {});
    assert.equal(typeof res.body.pdus[forged.eventId]?.error, "string");

    expect(await fed(remote, "PUT", `${FED}/v1/send/contract-2`, { origin: remote.serverName, origin_server_ts: Date.now(), pdus: {} }), 400, "M_BAD_JSON");
    expect(await fed(remote, "PUT", `${FED}/v1/send/contract-3`, { origin: remote.serverName, origin_server_ts: Date.now(), pdus: [] }, { auth: null }), 401, "M_UNAUTHORIZED");
    const huge = { origin: remote.serverName, origin_server_ts: Date.now(), pdus: [], edus: [{ edu_type: "org.example.big", content: { pad: "x".repeat(t.config.maxRequestBytes + 1) } }] };
    expect(await fed(remote, "PUT", `${FED}/v1/send/contract-4`, huge, { auth: "X-Matrix origin=x" }), 413, "M_TOO_LARGE");
  });

  test("reads: event, state, state_ids, get_missing_events, backfill, event_auth", async () => {
    const id = enc(message.eventId);
    const room = enc(roomId);
    expect(await fed(remote, "GET", `${FED}/v1/event/${id}`), 200);
    expect(await fed(remote, "GET", `${FED}/v1/event/${enc("$unknown")}`), 404, "M_NOT_FOUND");

    for (const kind of ["state", "state_ids"]) {
      expect(await fed(remote, "GET", `${FED}/v1/${kind}/${room}?event_id=${id}`), 200);
      expect(await fed(remote, "GET", `${FED}/v1/${kind}/${room}`), 400, "M_MISSING_PARAM");
      expect(await fed(stranger, "GET", `${FED}/v1/${kind}/${room}?event_id=${id}`), 403, "M_FORBIDDEN");
      expect(await fed(remote, "GET", `${FED}/v1/${kind}/${room}?event_id=${enc("$unknown")}`), 404, "M_NOT_FOUND");
    }

    const gme = `${FED}/v1/get_missing_events/${room}`;
    const missing = expect(await fed(remote, "POST", gme, { earliest_events: [], latest_events: [message.eventId], limit: 5 }), 200);
    assert.ok(missing.body.events.length > 0);
    expect(await fed(remote, "POST", gme, { earliest_events: [] }), 400, "M_INVALID_PARAM");

    expect(await fed(remote, "GET", `${FED}/v1/backfill/${room}?v=${id}&limit=3`), 200);
    expect(await fed(remote, "GET", `${FED}/v1/backfill/${room}?limit=3`), 400, "M_MISSING_PARAM");
    expect(await fed(remote, "GET", `${FED}/v1/backfill/${room}?v=${id}&limit=0`), 400, "M_INVALID_PARAM");

    expect(await fed(remote, "GET", `${FED}/v1/event_auth/${room}/${id}`), 200);
    expect(await fed(remote, "GET", `${FED}/v1/event_auth/${room}/${enc("$unknown")}`), 404, "M_NOT_FOUND");
    expect(await fed(remote, "GET", `${FED}/v1/event_auth/${room}/${id}`, undefined, { auth: "X-Matrix origin" }), 400, "M_UNAUTHORIZED");
  });

  test("queries: alias directory, profile, devices, keys (Gatehouse users have no devices)", async () => {
    const alias = `#contract-${Date.now()}:${t.serverName}`;
    const created = expect(await admin("POST", "/rooms", { creator: t.local("aliaser"), room_alias_name: alias.slice(1, alias.indexOf(":")) }), 200);
    const dir = expect(await fed(remote, "GET", `${FED}/v1/query/directory?room_alias=${enc(alias)}`), 200);
    assert.equal(dir.body.room_id, created.body.room_id);
    assert.equal(dir.body.servers[0], t.serverName);
    expect(await fed(remote, "GET", `${FED}/v1/query/directory?room_alias=${enc(`#nope:${t.serverName}`)}`), 404, "M_NOT_FOUND");
    expect(await fed(remote, "GET", `${FED}/v1/query/directory`), 400, "M_MISSING_PARAM");

    const user = t.local("profiled");
    assert.deepEqual(expect(await fed(remote, "GET", `${FED}/v1/query/profile?user_id=${enc(user)}`), 200).body, {});
    expect(await fed(remote, "GET", `${FED}/v1/query/profile?user_id=${enc(remote.userId("x"))}`), 400, "M_INVALID_PARAM");

    assert.deepEqual(expect(await fed(remote, "GET", `${FED}/v1/user/devices/${enc(user)}`), 200).body, { user_id: user, stream_id: 0, devices: [] });
    expect(await fed(remote, "GET", `${FED}/v1/user/devices/${enc("not-a-user")}`), 400, "M_INVALID_PARAM");

    const keys = expect(await fed(remote, "POST", `${FED}/v1/user/keys/query`, { device_keys: { [user]: [], [remote.userId("y")]: [] } }), 200);
    assert.deepEqual(keys.body, { device_keys: { [user]: {} } });
    expect(await fed(remote, "POST", `${FED}/v1/user/keys/query`, { device_keys: {} }, { auth: "X-Matrix origin" }), 400, "M_UNAUTHORIZED");
    assert.deepEqual(expect(await fed(remote, "POST", `${FED}/v1/user/keys/claim`, { one_time_keys: { [user]: { DEV: "signed_curve25519" } } }), 200).body, { one_time_keys: {} });
    expect(await fed(remote, "POST", `${FED}/v1/user/keys/claim`, { one_time_keys: {} }, { auth: "X-Matrix origin" }), 400, "M_UNAUTHORIZED");
  });

  test("PUT /v2/invite (an invite for a local user into a room hosted elsewhere)", async () => {
    const invitee = t.local("invitee");
    const { pdu, eventId } = resident.signEvent(
      {
        type: "m.room.member",
        room_id: remoteRoom.roomId,
        sender: resident.userId("host"),
        state_key: invitee,
        content: { membership: "invite" },
        prev_events: [remoteRoom.createId],
        auth_events: [],
        depth: 2,
        origin_server_ts: Date.now(),
      },
      "12",
    );
    const uri = `${FED}/v2/invite/${enc(remoteRoom.roomId)}/${enc(eventId)}`;
    // Only for local users who exist (rooms/local-users.ts): refused until the operator adds it.
    expect(await fed(resident, "PUT", uri, { room_version: "12", event: pdu, invite_room_state: [remoteRoom.create] }), 403, "M_FORBIDDEN");
    expect(await admin("POST", `/users/${enc(invitee)}`, {}), 200);
    const res = expect(await fed(resident, "PUT", uri, { room_version: "12", event: pdu, invite_room_state: [remoteRoom.create] }), 200);
    assert.ok(res.body.event.signatures[t.serverName]);
    expect(await fed(resident, "PUT", uri, { room_version: "1", event: pdu, invite_room_state: [] }), 400, "M_INCOMPATIBLE_ROOM_VERSION");
    expect(await fed(resident, "PUT", uri, { event: pdu }), 400, "M_MISSING_PARAM");
    expect(await fed(stranger, "PUT", uri, { room_version: "12", event: pdu, invite_room_state: [remoteRoom.create] }), 403, "M_FORBIDDEN");
  });
});

// ---- admin ------------------------------------------------------------------------------------

describe("admin listener", () => {
  test("bearer token: missing, wrong, right", async () => {
    expect(await adminWithToken(null, "GET", "/server"), 401, "M_MISSING_TOKEN");
    expect(await adminWithToken("not-the-token-at-all", "GET", "/server"), 401, "M_UNKNOWN_TOKEN");
    expect(await adminWithToken(t.adminToken, "GET", "/server"), 200);
    expect(await adminWithToken(null, "GET", "/rooms"), 401, "M_MISSING_TOKEN");
    expect(await adminWithToken(null, "GET", "/queue"), 401, "M_MISSING_TOKEN");
    expect(await adminWithToken(null, "GET", "/remote/memberships"), 401, "M_MISSING_TOKEN");
  });

  test("rooms: create, list, summary", async () => {
    const created = expect(
      await admin("POST", "/rooms", {
        creator: t.creator,
        join_rule: "knock",
        name: "Created",
        topic: "t",
        room_alias_name: "contract",
        invite: [t.local("friend"), stranger.userId("nope")],
      }),
      200,
    );
    assert.equal(created.body.room_alias, `#contract:${t.serverName}`);
    assert.ok(created.body.invite_failures[stranger.userId("nope")]);
    expect(await admin("POST", "/rooms", { creator: t.creator, room_alias_name: "contract" }), 400, "M_ROOM_IN_USE");
    expect(await admin("POST", "/rooms", { creator: t.creator, room_version: "2" }), 400, "M_UNSUPPORTED_ROOM_VERSION");
    expect(await admin("POST", "/rooms", { name: "no creator" }), 400, "M_INVALID_PARAM");
    expect(await admin("GET", "/rooms"), 200);
    const summary = expect(await admin("GET", `/rooms/${enc(created.body.room_id)}`), 200);
    assert.deepEqual(summary.body.aliases, [`#contract:${t.serverName}`]);
    expect(await admin("GET", `/rooms/${enc("!unknown")}`), 404, "M_NOT_FOUND");
  });

  test("state: list, get, put (with and without a state key), send", async () => {
    const room = enc(roomId);
    expect(await admin("GET", `/rooms/${room}/state`), 200);
    expect(await admin("GET", `/rooms/${enc("!unknown")}/state`), 404, "M_NOT_FOUND");
    expect(await admin("GET", `/rooms/${room}/state/m.room.name`), 200);
    expect(await admin("GET", `/rooms/${room}/state/m.room.member/${enc(t.creator)}`), 200);
    expect(await admin("GET", `/rooms/${room}/state/m.room.avatar`), 404, "M_NOT_FOUND");
    expect(await admin("GET", `/rooms/${room}/state/org.example.none/${enc("k")}`), 404, "M_NOT_FOUND");

    expect(await admin("PUT", `/rooms/${room}/state/m.room.topic`, { content: { topic: "new topic" } }), 200);
    expect(await admin("PUT", `/rooms/${room}/state/org.example.thing/${enc("key")}`, { content: { a: 1 } }), 200);
    expect(await admin("PUT", `/rooms/${room}/state/m.room.topic`, { topic: "no content" }), 400, "M_BAD_JSON");
    expect(await admin("PUT", `/rooms/${room}/state/org.example.thing/${enc("key")}`, { content: {}, sender: t.local("outsider") }), 403, "M_FORBIDDEN");

    expect(await admin("POST", `/rooms/${room}/send/m.room.message`, { content: { msgtype: "m.text", body: "hi" } }), 200);
    expect(await admin("POST", `/rooms/${room}/send/m.room.message`, { body: "no content" }), 400, "M_BAD_JSON");
  });

  test("members, knocks, accept, deny", async () => {
    const room = enc(roomId);
    expect(await admin("GET", `/rooms/${room}/members`), 200);
    expect(await admin("GET", `/rooms/${enc("!unknown")}/members`), 404, "M_NOT_FOUND");

    const pending = fresh(knocker, "pending");
    const denied = fresh(knocker, "denied");
    await t.knock(knocker, roomId, pending, { reason: "please" });
    await t.knock(knocker, roomId, denied);
    const knocks = expect(await admin("GET", `/rooms/${room}/knocks`), 200);
    assert.ok(knocks.body.knocks.some((k: { user_id: string }) => k.user_id === pending));
    expect(await admin("GET", `/rooms/${enc("!unknown")}/knocks`), 404, "M_NOT_FOUND");

    expect(await admin("POST", `/rooms/${room}/knocks/${enc(pending)}/accept`, { reason: "welcome" }), 200);
    expect(await admin("POST", `/rooms/${room}/knocks/${enc(pending)}/accept`, {}), 404, "M_NOT_FOUND");
    expect(await admin("POST", `/rooms/${room}/knocks/${enc(denied)}/deny`, { reason: "no" }), 200);
    expect(await admin("POST", `/rooms/${room}/knocks/${enc(denied)}/deny`, {}), 404, "M_NOT_FOUND");
  });

  test("invite, join, leave, kick, ban, unban", async () => {
    const room = enc(roomId);
    const [g1, g2, g3] = [t.local("g1"), t.local("g2"), t.local("g3")];
    expect(await admin("POST", `/rooms/${room}/invite`, { user_id: g1 }), 200);
    expect(await admin("POST", `/rooms/${room}/invite`, { user_id: g2 }), 200);
    expect(await admin("POST", `/rooms/${room}/invite`, {}), 400, "M_INVALID_PARAM");
    const refused = expect(await admin("POST", `/rooms/${room}/invite`, { user_id: stranger.userId("x") }), 403, "M_FORBIDDEN");
    assert.equal(refused.body.remote_status, 403);

    expect(await admin("POST", `/rooms/${room}/join`, { user_id: g1 }), 200);
    expect(await admin("POST", `/rooms/${room}/join`, { user_id: g2 }), 200);
    expect(await admin("POST", `/rooms/${room}/join`, { user_id: g3 }), 403, "M_FORBIDDEN");
    expect(await admin("POST", `/rooms/${room}/join`, {}), 400, "M_INVALID_PARAM");
    expect(await admin("POST", `/rooms/${room}/leave`, { user_id: g2 }), 200);
    expect(await admin("POST", `/rooms/${room}/leave`, { user_id: g3 }), 403, "M_FORBIDDEN");

    expect(await admin("POST", `/rooms/${room}/kick`, { user_id: g1, reason: "bye" }), 200);
    expect(await admin("POST", `/rooms/${room}/kick`, { user_id: "not-a-user-id" }), 400, "M_INVALID_PARAM");

    const bad = fresh(stranger, "bad");
    expect(await admin("POST", `/rooms/${room}/ban`, { user_id: bad, reason: "spam" }), 200);
    expect(await admin("POST", `/rooms/${enc("!unknown")}/ban`, { user_id: bad }), 404, "M_NOT_FOUND");
    expect(await admin("POST", `/rooms/${room}/unban`, { user_id: bad }), 200);
    expect(await admin("POST", `/rooms/${room}/unban`, { user_id: bad }), 403, "M_FORBIDDEN");
  });

  test("events/{eventId}", async () => {
    const ev = expect(await admin("GET", `/rooms/${enc(roomId)}/events/${enc(message.eventId)}`), 200);
    assert.equal(ev.body.event_id, message.eventId);
    expect(await admin("GET", `/rooms/${enc(roomId)}/events/${enc("$unknown")}`), 404, "M_NOT_FOUND");
  });

  test("redact/{eventId}, and the redacted event as served", async () => {
    const sent = expect(await admin("POST", `/rooms/${enc(roomId)}/send/m.room.message`, { content: { msgtype: "m.text", body: "to redact" } }), 200);
    const id = sent.body.event_id as string;
    const red = expect(await admin("POST", `/rooms/${enc(roomId)}/redact/${enc(id)}`, { reason: "contract" }), 200);
    const ev = expect(await admin("GET", `/rooms/${enc(roomId)}/events/${enc(id)}`), 200);
    assert.equal(ev.body.unsigned.redacted_because.event_id, red.body.event_id);
    expect(await admin("POST", `/rooms/${enc(roomId)}/redact/${enc("$unknown")}`, {}), 404, "M_NOT_FOUND");
    expect(await admin("POST", `/rooms/${enc(roomId)}/redact/${enc(id)}`, { reason: 1 }), 400, "M_INVALID_PARAM");
  });

  test("upgrade, and what a replaced room answers", async () => {
    const old = await t.createRoom({ room_version: "11", name: "Old" });
    const up = expect(await admin("POST", `/rooms/${enc(old)}/upgrade`, { new_version: "12" }), 200);
    assert.equal(up.body.resumed, false);
    expect(await admin("POST", `/rooms/${enc(old)}/upgrade`, {}), 400, "M_INVALID_PARAM");
    expect(await admin("POST", `/rooms/${enc(old)}/upgrade`, { new_version: "2" }), 400, "M_UNSUPPORTED_ROOM_VERSION");
    expect(await admin("POST", `/rooms/${enc("!unknown")}/upgrade`, { new_version: "12" }), 404, "M_NOT_FOUND");

    const summary = expect(await admin("GET", `/rooms/${enc(old)}`), 200);
    assert.equal(summary.body.replacement_room, up.body.replacement_room);
    const knocks = expect(await admin("GET", `/rooms/${enc(old)}/knocks`), 200);
    assert.equal(knocks.body.replacement_room, up.body.replacement_room);
    const refused = expect(await fed(knocker, "GET", `${FED}/v1/make_knock/${enc(old)}/${enc(fresh(knocker))}?ver=11&ver=12`), 403, "M_FORBIDDEN");
    assert.equal(refused.body.replacement_room, up.body.replacement_room);
  });

  test("queue: list, one destination, retry", async () => {
    const list = expect(await admin("GET", "/queue"), 200);
    assert.ok(list.body.destinations.some((d: { destination: string }) => d.destination === remote.serverName), JSON.stringify(list.body));
    expect(await admin("GET", `/queue/${enc(remote.serverName)}`), 200);
    expect(await admin("GET", `/queue/${enc("unknown.example")}`), 404, "M_NOT_FOUND");
    expect(await admin("GET", `/queue/${enc("not a server name")}`), 400, "M_INVALID_PARAM");
    expect(await admin("POST", `/queue/${enc(remote.serverName)}/retry`), 200);
    expect(await admin("POST", `/queue/${enc("unknown.example")}/retry`), 404, "M_NOT_FOUND");
    const page = expect(await admin("GET", "/queue?limit=1&order_by=pending_pdus&dir=b"), 200);
    assert.equal(page.body.destinations.length, 1);
    expect(await admin("GET", "/queue?order_by=nope"), 400, "M_INVALID_PARAM");
    expect(await admin("GET", "/queue?limit=0"), 400, "M_INVALID_PARAM");
  });

  test("queue: dead letters listed, replayed, dropped", async () => {
    const dest = remote.serverName;
    await t.redis.rpush(t.gh.keys.outboundDead(dest), JSON.stringify({ ref: `${roomId} $dead`, reason: "HTTP 400 M_NOT_JSON: too deep", status: 400, ts: 1, txn_id: "t1" }));
    const list = expect(await admin("GET", `/queue/${enc(dest)}/dead-letters?limit=10`), 200);
    assert.equal(list.body.total, 1);
    expect(await admin("GET", `/queue/${enc(dest)}/dead-letters?from=x`), 400, "M_INVALID_PARAM");
    expect(await admin("GET", `/queue/${enc("unknown.example")}/dead-letters`), 404, "M_NOT_FOUND");
    expect(await admin("POST", `/queue/${enc(dest)}/dead-letters/drop`), 200);
    expect(await admin("POST", `/queue/${enc(dest)}/dead-letters/replay`), 200);
    expect(await admin("POST", `/queue/${enc("not a server name")}/dead-letters/replay`), 400, "M_INVALID_PARAM");
    expect(await admin("POST", `/queue/${enc("unknown.example")}/dead-letters/drop`), 404, "M_NOT_FOUND");
  });

  test("remote: knock, join, leave, memberships", async () => {
    const user = t.local("traveller");
    const knock = expect(await admin("POST", "/remote/knock", { user_id: user, room_id: remoteRoom.roomId, via: [resident.serverName], reason: "hi" }), 200);
    assert.equal(knock.body.membership, "knock");
    expect(await admin("POST", "/remote/knock", { user_id: user, room_id: remoteRoom.roomId }), 400, "M_INVALID_PARAM");
    const refused = expect(await admin("POST", "/remote/knock", { user_id: user, room_id: refusingRoom, via: [resident.serverName] }), 403, "M_FORBIDDEN");
    assert.equal(refused.body.remote_status, 403);
    expect(await admin("POST", "/remote/knock", { user_id: user, room_id: refusingRoom, via: ["127.0.0.1:1"] }), 502, "M_UNKNOWN");

    const joined = expect(await admin("POST", "/remote/join", { user_id: user, room_id: remoteRoom.roomId }), 200);
    assert.equal(joined.body.membership, "join");
    expect(await admin("POST", "/remote/join", { user_id: remote.userId("notlocal"), room_id: remoteRoom.roomId }), 400, "M_INVALID_PARAM");

    expect(await admin("POST", "/remote/leave", { user_id: user, room_id: remoteRoom.roomId }), 200);
    expect(await admin("POST", "/remote/leave", { user_id: user }), 400, "M_INVALID_PARAM");
    expect(await admin("POST", "/remote/leave", "not an object"), 400);

    const all = expect(await admin("GET", "/remote/memberships"), 200);
    assert.ok(all.body.memberships.length >= 2);
    expect(await admin("GET", `/remote/memberships?user_id=${enc(user)}`), 200);
  });

  test("users: list, show, add, remove", async () => {
    const user = t.local("contractuser");
    expect(await admin("POST", `/users/${enc(user)}`, {}), 200);
    expect(await admin("POST", `/users/${enc("@x:elsewhere.example")}`, {}), 400, "M_INVALID_PARAM");
    assert.ok(expect(await admin("GET", "/users"), 200).body.users.includes(user));
    expect(await adminWithToken(null, "GET", "/users"), 401, "M_MISSING_TOKEN");
    assert.equal(expect(await admin("GET", `/users/${enc(user)}`), 200).body.source, "admin");
    expect(await admin("GET", `/users/${enc("not-a-user")}`), 400, "M_INVALID_PARAM");
    expect(await admin("DELETE", `/users/${enc(user)}`), 200);
    expect(await admin("DELETE", `/users/${enc("@x:elsewhere.example")}`), 400, "M_INVALID_PARAM");
    assert.equal(expect(await admin("GET", `/users/${enc(user)}`), 200).body.exists, false);
  });

  test("the OpenAPI document itself, without authentication", async () => {
    // Served by adminApp once app.ts mounts openapiRouter(); until then, by the router alone.
    let app: express.Express = t.gh.adminApp;
    const probe = await request(app).get(OPENAPI_YAML_PATH);
    if (probe.status === 404) {
      app = express();
      app.use(openapiRouter());
      app.use(notFoundHandler);
      app.use(errorHandler(createLogger("silent")));
    }
    const yaml = check("GET", OPENAPI_YAML_PATH, await request(app).get(OPENAPI_YAML_PATH));
    expect(yaml, 200);
    assert.match(yaml.headers["content-type"]!, /^application\/yaml/);
    assert.match(yaml.text, /^openapi: 3\.1\./);
    const json = check("GET", OPENAPI_JSON_PATH, await request(app).get(OPENAPI_JSON_PATH));
    expect(json, 200);
    assert.ok(isDeepStrictEqual(json.body, loadOpenApi()), "the served JSON differs from openapi/gatehouse.yaml: run `node --import tsx scripts/openapi-json.ts`");
  });
});

// ---- ops --------------------------------------------------------------------------------------

describe("ops listener", () => {
  test("/metrics, /health/live, /health/ready", async () => {
    const registry = new Registry();
    new Gauge({ name: "gatehouse_contract_test", help: "a gauge", registers: [registry] }).set(1);
    const state: OpsState = { starting: false, shuttingDown: false };
    const ops = opsApp(registry, t.redis, state);
    const metrics = check("GET", "/metrics", await request(ops).get("/metrics"));
    expect(metrics, 200);
    assert.match(metrics.text, /gatehouse_contract_test 1/);
    expect(check("GET", "/health/live", await request(ops).get("/health/live")), 200);
    expect(check("GET", "/health/ready", await request(ops).get("/health/ready")), 200);
    state.shuttingDown = true;
    expect(check("GET", "/health/ready", await request(ops).get("/health/ready")), 503);

    const broken = new Registry();
    new Gauge({
      name: "gatehouse_broken",
      help: "collect fails",
      registers: [broken],
      collect() {
        throw new Error("collector failed");
      },
    });
    const down = new Redis({ port: 1, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
    try {
      const brokenOps = opsApp(broken, down, { starting: false, shuttingDown: false });
      expect(check("GET", "/metrics", await request(brokenOps).get("/metrics")), 500);
      const notReady = expect(check("GET", "/health/ready", await request(brokenOps).get("/health/ready")), 503);
      assert.equal(notReady.body.status, "redis unavailable");
    } finally {
      down.disconnect();
    }
  });
});

// ---- coverage ---------------------------------------------------------------------------------

/** Operations with no error a request can provoke (only an internal failure: 500). */
const NO_CLIENT_ERROR = new Set([
  "GET /_matrix/key/v2/server",
  "GET /_matrix/key/v2/server/{keyId}",
  "GET /_matrix/federation/v1/version",
  "GET /health/live",
  "GET /_gatehouse/openapi.yaml",
  "GET /_gatehouse/openapi.json",
]);

test("every documented operation was exercised for success and (where possible) for an error", () => {
  const missing: string[] = [];
  const doc = loadOpenApi();
  for (const [path, item] of Object.entries(doc.paths)) {
    // The client listener's operations are exercised and validated by test/http/client-api.test.ts.
    if (path.startsWith("/_matrix/client/")) continue;
    // Served only when GATEHOUSE_WELL_KNOWN_SERVER is set; test/http/well-known.test.ts validates
    // both of its answers (200 set, 404 unset) against the document.
    if (path === "/.well-known/matrix/server") continue;
    for (const m of HTTP_METHODS) {
      if (!item[m]) continue;
      const key = `${m.toUpperCase()} ${path}`;
      const statuses = [...(seen.get(key) ?? [])];
      if (!statuses.some((s) => s >= 200 && s < 300)) missing.push(`${key}: no success`);
      if (!NO_CLIENT_ERROR.has(key) && !statuses.some((s) => s >= 400)) missing.push(`${key}: no error`);
    }
  }
  assert.deepEqual(missing, []);
});
