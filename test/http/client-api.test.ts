// The Client-Server API for application services (src/client/): as_token authentication with
// Synapse's conventions, user_id masquerading, ts massaging, and every endpoint's success path and
// spec errors, with refusals proven to write nothing (dumpPrefix before and after).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Test } from "supertest";
import { TestGatehouse, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";
import { openApiContract, validateResponse, loadOpenApi, HTTP_METHODS } from "../support/openapi.js";

const AS_TOKEN = "as-token-bridge-000001";
const OTHER_TOKEN = "as-token-other-000001";
const registration = (url: string) => `
id: bridge
url: ${url}
as_token: ${AS_TOKEN}
hs_token: hs-token-bridge-000001
sender_localpart: bridgebot
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: "@_br_.*:gatehouse\\\\.test"
  aliases:
    - exclusive: true
      regex: "#_br_.*:gatehouse\\\\.test"
`;
const OTHER = `
id: other
url: null
as_token: ${OTHER_TOKEN}
hs_token: hs-token-other-000001
sender_localpart: otherbot
rate_limited: true
namespaces:
  users:
    - exclusive: true
      regex: "@_ot_.*:gatehouse\\\\.test"
  aliases:
    - exclusive: true
      regex: "#_ot_.*:gatehouse\\\\.test"
`;

const C = "/_matrix/client/v3";
const BOT = "@bridgebot:gatehouse.test";
const ALICE = "@_br_alice:gatehouse.test";
const BOB = "@_br_bob:gatehouse.test";

let t: TestGatehouse;
let remote: RemoteServer;
/** The bridge's own HTTP listener (queries and pings). */
let service: http.Server;
const serviceRequests: { method: string; url: string; auth: string | undefined; body: string }[] = [];
let pingStatus = 200;
/** The room the bridge points `#_br_made` at when Gatehouse asks for it. */
let aliasRoom: string | undefined;

/** `METHOD template` → statuses seen, for the coverage check at the end. */
const seen = new Map<string, Set<number>>();

/**
 * A request to the client listener whose response is validated against openapi/gatehouse.yaml
 * (r0 paths as the v3 operations they are). Paths no operation documents are the unmatched
 * handler's 404 M_UNRECOGNIZED.
 */
function client(method: "GET" | "PUT" | "POST" | "DELETE", path: string): Test {
  return t.client(method, path).expect((res) => {
    const p = path.replace("/_matrix/client/r0/", "/_matrix/client/v3/");
    if (!openApiContract().findOperation(method, p)) {
      assert.equal(res.body.errcode, "M_UNRECOGNIZED", `${method} ${p} is not documented`);
      return;
    }
    const ct = String(res.headers["content-type"] ?? "");
    const match = validateResponse(method, p, res.status, ct.startsWith("application/json") ? res.body : res.text, ct || undefined);
    const key = `${method} ${match.template}`;
    if (!seen.has(key)) seen.set(key, new Set());
    seen.get(key)!.add(res.status);
  });
}

/** A request as the bridge: as_token in the header, optional user_id. */
function as(method: "GET" | "PUT" | "POST" | "DELETE", path: string, userId?: string, token = AS_TOKEN) {
  const sep = path.includes("?") ? "&" : "?";
  return client(method, userId ? `${path}${sep}user_id=${enc(userId)}` : path).set("Authorization", `Bearer ${token}`);
}

async function ok(res: { status: number; body: unknown }) {
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body as Record<string, unknown>;
}

before(async () => {
  service = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      serviceRequests.push({ method: req.method!, url: req.url!, auth: req.headers.authorization, body });
      if (req.url?.startsWith("/_matrix/app/v1/ping")) {
        res.writeHead(pingStatus, { "Content-Type": "application/json" }).end(pingStatus === 200 ? "{}" : '{"errcode":"M_FORBIDDEN"}');
        return;
      }
      if (req.url?.startsWith("/_matrix/app/v1/rooms/")) {
        // The bridge creates the room's alias when asked for one of its namespace, then answers 200.
        const alias = decodeURIComponent(req.url.split("/").pop()!.split("?")[0]!);
        if (alias !== "#_br_made:gatehouse.test" || !aliasRoom) {
          res.writeHead(404, { "Content-Type": "application/json" }).end('{"errcode":"M_NOT_FOUND"}');
          return;
        }
        void fetch(`http://127.0.0.1:${t.clientPort}/_matrix/client/v3/directory/room/${enc(alias)}`, {
          method: "PUT",
          headers: { Authorization: `Bearer ${AS_TOKEN}`, "Content-Type": "application/json" },
          body: JSON.stringify({ room_id: aliasRoom }),
        }).then((r) => res.writeHead(r.ok ? 200 : 500, { "Content-Type": "application/json" }).end("{}"));
        return;
      }
      if (req.url?.startsWith("/_matrix/app/v1/users/")) {
        const known = decodeURIComponent(req.url.split("/").pop()!.split("?")[0]!) === "@_br_queried:gatehouse.test";
        res.writeHead(known ? 200 : 404, { "Content-Type": "application/json" }).end(known ? "{}" : '{"errcode":"M_NOT_FOUND"}');
        return;
      }
      res.writeHead(404, { "Content-Type": "application/json" }).end('{"errcode":"M_NOT_FOUND"}');
    });
  });
  await new Promise<void>((r) => service.listen(0, "127.0.0.1", () => r()));
  const url = `http://127.0.0.1:${(service.address() as AddressInfo).port}`;
  t = await TestGatehouse.start({
    name: "client-api",
    registrations: [registration(url), OTHER],
    env: { GATEHOUSE_RATELIMIT_CLIENT_PER_SECOND: "1", GATEHOUSE_RATELIMIT_CLIENT_BURST: "3" },
  });
  remote = await RemoteServer.start();
  for (const u of ["_br_alice", "_br_bob"]) await ok(await as("POST", `${C}/register`).send({ type: "m.login.application_service", username: u }));
});

after(async () => {
  await t.cleanup();
  await remote.close();
  await new Promise<void>((r) => service.close(() => r()));
});

describe("authentication (Synapse's conventions)", () => {
  test("GET /versions needs no token", async () => {
    const res = await client("GET", "/_matrix/client/versions");
    assert.equal(res.status, 200);
    assert.ok((res.body.versions as string[]).includes("v1.12"));
  });

  const refusals: { why: string; req: () => ReturnType<typeof as>; status: number; errcode: string }[] = [
    { why: "no token at all", req: () => client("GET", `${C}/account/whoami`), status: 401, errcode: "M_MISSING_TOKEN" },
    { why: "a token no registration has", req: () => as("GET", `${C}/account/whoami`, undefined, "not-a-token"), status: 401, errcode: "M_UNKNOWN_TOKEN" },
    { why: "an hs_token is not an as_token", req: () => as("GET", `${C}/account/whoami`, undefined, "hs-token-bridge-000001"), status: 401, errcode: "M_UNKNOWN_TOKEN" },
    {
      why: "header and access_token query together are refused (Synapse: mixing them is ambiguous)",
      req: () => client("GET", `${C}/account/whoami?access_token=${AS_TOKEN}`).set("Authorization", `Bearer ${AS_TOKEN}`),
      status: 401,
      errcode: "M_MISSING_TOKEN",
    },
    { why: "user_id outside the service's namespaces", req: () => as("GET", `${C}/account/whoami`, "@mallory:gatehouse.test"), status: 403, errcode: "M_FORBIDDEN" },
    { why: "user_id in another service's exclusive namespace", req: () => as("GET", `${C}/account/whoami`, "@_ot_x:gatehouse.test"), status: 403, errcode: "M_FORBIDDEN" },
    { why: "user_id in the namespace but never registered", req: () => as("GET", `${C}/account/whoami`, "@_br_nobody:gatehouse.test"), status: 403, errcode: "M_FORBIDDEN" },
    { why: "user_id on another server", req: () => as("GET", `${C}/account/whoami`, "@_br_alice:elsewhere.test"), status: 403, errcode: "M_FORBIDDEN" },
    { why: "an unknown endpoint under an authenticated prefix", req: () => as("GET", `${C}/no/such/thing`), status: 404, errcode: "M_UNRECOGNIZED" },
  ];
  for (const c of refusals) {
    test(`refused: ${c.why}`, async () => {
      const res = await t.assertNothingWritten(() => c.req());
      assert.equal(res.status, c.status, JSON.stringify(res.body));
      assert.equal(res.body.errcode, c.errcode);
    });
  }

  test("whoami: the sender by default, the masqueraded user with user_id; access_token query works", async () => {
    assert.equal((await ok(await as("GET", `${C}/account/whoami`))).user_id, BOT);
    assert.equal((await ok(await as("GET", `${C}/account/whoami`, ALICE))).user_id, ALICE);
    assert.equal((await ok(await client("GET", `${C}/account/whoami?access_token=${AS_TOKEN}`))).user_id, BOT);
    assert.equal((await ok(await client("GET", `/_matrix/client/r0/account/whoami?access_token=${AS_TOKEN}`))).user_id, BOT, "r0 paths too");
  });

  test("rate_limited: true limits per acting user with 429 M_LIMIT_EXCEEDED and retry_after_ms", async () => {
    const codes: number[] = [];
    let limited: Record<string, unknown> | undefined;
    for (let i = 0; i < 6; i++) {
      const res = await as("GET", `${C}/account/whoami`, undefined, OTHER_TOKEN);
      codes.push(res.status);
      if (res.status === 429) limited = res.body;
    }
    assert.ok(codes.slice(0, 3).every((c) => c === 200), `burst of 3 first: ${codes.join(",")}`);
    assert.equal(limited?.errcode, "M_LIMIT_EXCEEDED");
    assert.ok(typeof limited?.retry_after_ms === "number");
    // The bridge registration says rate_limited: false.
    for (let i = 0; i < 6; i++) await ok(await as("GET", `${C}/account/whoami`));
  });

  test("capabilities lists the room versions createRoom accepts", async () => {
    const caps = (await ok(await as("GET", `${C}/capabilities`))).capabilities as Record<string, { default: string; available: Record<string, string> }>;
    assert.equal(caps["m.room_versions"]!.default, "12");
    assert.equal(caps["m.room_versions"]!.available["10"], "stable");
    assert.equal(caps["m.room_versions"]!.available["1"], undefined);
  });
});

describe("register with m.login.application_service", () => {
  test("a namespace user is registered once (stored in Redis)", async () => {
    const body = await ok(await as("POST", `${C}/register`).send({ type: "m.login.application_service", username: "_br_carol" }));
    assert.equal(body.user_id, "@_br_carol:gatehouse.test");
    assert.equal(await t.redis.hget(`${t.prefix}:as-users`, "@_br_carol:gatehouse.test"), "bridge");
  });
  const refusals: { why: string; body: Record<string, unknown>; status: number; errcode: string }[] = [
    { why: "already registered", body: { type: "m.login.application_service", username: "_br_alice" }, status: 400, errcode: "M_USER_IN_USE" },
    { why: "outside the service's namespaces", body: { type: "m.login.application_service", username: "mallory" }, status: 400, errcode: "M_EXCLUSIVE" },
    { why: "not a valid localpart (upper case and space)", body: { type: "m.login.application_service", username: "_br_Bad Name" }, status: 400, errcode: "M_INVALID_USERNAME" },
    { why: "a user ID over 255 bytes", body: { type: "m.login.application_service", username: `_br_${"a".repeat(260)}` }, status: 400, errcode: "M_INVALID_USERNAME" },
    { why: "no username", body: { type: "m.login.application_service" }, status: 400, errcode: "M_INVALID_USERNAME" },
    { why: "another login type", body: { type: "m.login.dummy", username: "_br_dave" }, status: 400, errcode: "M_UNKNOWN" },
  ];
  for (const c of refusals) {
    test(`refused: ${c.why}`, async () => {
      const res = await t.assertNothingWritten(() => as("POST", `${C}/register`).send(c.body));
      assert.equal(res.status, c.status, JSON.stringify(res.body));
      assert.equal(res.body.errcode, c.errcode);
    });
  }
});

describe("createRoom", () => {
  test("presets, initial_state, alias, power override and local invites, as the spec orders them", async () => {
    const body = await ok(
      await as("POST", `${C}/createRoom`, ALICE).send({
        preset: "public_chat",
        name: "Bridge room",
        topic: "t",
        room_alias_name: "_br_lobby",
        initial_state: [{ type: "m.room.join_rules", state_key: "", content: { join_rule: "knock" } }, { type: "org.example.x", state_key: "k", content: { a: 1 } }],
        power_level_content_override: { users_default: 5 },
        invite: [BOB],
      }),
    );
    const roomId = body.room_id as string;
    assert.equal(body.room_alias, "#_br_lobby:gatehouse.test");
    const state = (await ok(await as("GET", `${C}/rooms/${enc(roomId)}/state/m.room.join_rules`, ALICE))) as { join_rule: string };
    assert.equal(state.join_rule, "knock", "initial_state overrides the preset's join rule");
    assert.equal(((await ok(await as("GET", `${C}/rooms/${enc(roomId)}/state/m.room.power_levels`, ALICE))) as { users_default: number }).users_default, 5);
    assert.equal(((await ok(await as("GET", `${C}/rooms/${enc(roomId)}/state/org.example.x/k`, ALICE))) as { a: number }).a, 1);
    assert.equal((await t.members(roomId))[BOB], "invite");
    const resolved = await ok(await as("GET", `${C}/directory/room/${enc("#_br_lobby:gatehouse.test")}`));
    assert.equal(resolved.room_id, roomId);
  });

  const refusals: { why: string; body: Record<string, unknown>; status: number; errcode: string }[] = [
    { why: "alias already taken", body: { room_alias_name: "_br_lobby" }, status: 400, errcode: "M_ROOM_IN_USE" },
    { why: "unknown room version", body: { room_version: "99" }, status: 400, errcode: "M_UNSUPPORTED_ROOM_VERSION" },
    { why: "room version 1 (server-chosen event IDs) cannot be created", body: { room_version: "1" }, status: 400, errcode: "M_UNSUPPORTED_ROOM_VERSION" },
    {
      why: "power override leaves the creator unable to set the name (spec's M_INVALID_ROOM_STATE example)",
      body: { name: "x", room_version: "10", power_level_content_override: { users: { [ALICE]: 0 } } },
      status: 400,
      errcode: "M_INVALID_ROOM_STATE",
    },
    { why: "power levels the auth rules would refuse (a string level)", body: { power_level_content_override: { ban: "high" } }, status: 400, errcode: "M_INVALID_ROOM_STATE" },
    { why: "power levels in initial_state with a string user level", body: { initial_state: [{ type: "m.room.power_levels", content: { users: { [ALICE]: "100" } } }] }, status: 400, errcode: "M_INVALID_ROOM_STATE" },
    { why: "a float anywhere in an event (no canonical JSON form)", body: { initial_state: [{ type: "org.example", content: { x: 1.5 } }] }, status: 400, errcode: "M_BAD_JSON" },
    { why: "the creator invites themselves", body: { invite: [ALICE] }, status: 400, errcode: "M_INVALID_PARAM" },
    { why: "m.room.member in initial_state", body: { initial_state: [{ type: "m.room.member", state_key: BOB, content: { membership: "join" } }] }, status: 400, errcode: "M_INVALID_ROOM_STATE" },
    { why: "alias in another service's exclusive namespace", body: { room_alias_name: "_ot_room" }, status: 400, errcode: "M_EXCLUSIVE" },
    { why: "an initial_state event over 64 KiB", body: { initial_state: [{ type: "org.example.big", state_key: "", content: { b: "x".repeat(70_000) } }] }, status: 413, errcode: "M_TOO_LARGE" },
    { why: "an initial_state type over 255 bytes", body: { initial_state: [{ type: "t".repeat(300), state_key: "", content: {} }] }, status: 413, errcode: "M_TOO_LARGE" },
    { why: "invite is not a list of user IDs", body: { invite: ["nobody"] }, status: 400, errcode: "M_INVALID_PARAM" },
    { why: "name is not a string", body: { name: 5 }, status: 400, errcode: "M_BAD_JSON" },
  ];
  for (const c of refusals) {
    test(`refused, nothing written: ${c.why}`, async () => {
      const res = await t.assertNothingWritten(() => as("POST", `${C}/createRoom`, ALICE).send(c.body));
      assert.equal(res.status, c.status, JSON.stringify(res.body));
      assert.equal(res.body.errcode, c.errcode);
    });
  }
});

describe("rooms: membership, events, state, reads", () => {
  let roomId: string;
  before(async () => {
    roomId = (await ok(await as("POST", `${C}/createRoom`, ALICE).send({ preset: "private_chat", initial_state: [{ type: "m.room.join_rules", content: { join_rule: "knock" } }] }))).room_id as string;
  });

  test("send is idempotent per (user, txnId) and ts sets origin_server_ts", async () => {
    const before = (await t.store.timeline(roomId)).length;
    const first = await ok(await as("PUT", `${C}/rooms/${enc(roomId)}/send/m.room.message/txn1?ts=1234567890`, ALICE).send({ msgtype: "m.text", body: "hi" }));
    const again = await ok(await as("PUT", `${C}/rooms/${enc(roomId)}/send/m.room.message/txn1?ts=1234567890`, ALICE).send({ msgtype: "m.text", body: "hi" }));
    assert.equal(again.event_id, first.event_id);
    assert.equal((await t.store.timeline(roomId)).length, before + 1, "the retry wrote nothing");
    const ev = await ok(await as("GET", `${C}/rooms/${enc(roomId)}/event/${enc(first.event_id as string)}`, ALICE));
    assert.equal(ev.origin_server_ts, 1234567890);
    assert.equal(ev.sender, ALICE);
    // Another user's txn1 is another transaction (Bob must be joined to send).
    await ok(await as("POST", `${C}/rooms/${enc(roomId)}/invite`, ALICE).send({ user_id: BOB }));
    await ok(await as("POST", `${C}/join/${enc(roomId)}`, BOB).send({}));
    const bobs = await ok(await as("PUT", `${C}/rooms/${enc(roomId)}/send/m.room.message/txn1`, BOB).send({ msgtype: "m.text", body: "hi" }));
    assert.notEqual(bobs.event_id, first.event_id);
  });

  test("members (membership filter), joined_members, state, messages in both directions", async () => {
    const members = (await ok(await as("GET", `${C}/rooms/${enc(roomId)}/members?membership=join`, ALICE))).chunk as { state_key: string }[];
    assert.deepEqual(members.map((m) => m.state_key).sort(), [ALICE, BOB].sort());
    const joined = (await ok(await as("GET", `${C}/rooms/${enc(roomId)}/joined_members`, ALICE))).joined as Record<string, unknown>;
    assert.deepEqual(Object.keys(joined).sort(), [ALICE, BOB].sort());
    const state = (await as("GET", `${C}/rooms/${enc(roomId)}/state`, ALICE)).body as { type: string }[];
    assert.ok(state.some((e) => e.type === "m.room.create"));
    for (let i = 0; i < 5; i++) await ok(await as("PUT", `${C}/rooms/${enc(roomId)}/send/m.room.message/m${i}`, ALICE).send({ msgtype: "m.text", body: `m${i}` }));
    const back = await ok(await as("GET", `${C}/rooms/${enc(roomId)}/messages?dir=b&limit=3`, ALICE));
    assert.deepEqual((back.chunk as { content: { body: string } }[]).map((e) => e.content.body), ["m4", "m3", "m2"]);
    const more = await ok(await as("GET", `${C}/rooms/${enc(roomId)}/messages?dir=b&limit=2&from=${back.end}`, ALICE));
    assert.deepEqual((more.chunk as { content: { body: string } }[]).map((e) => e.content.body), ["m1", "m0"]);
    const fwd = await ok(await as("GET", `${C}/rooms/${enc(roomId)}/messages?dir=f&limit=1`, ALICE));
    assert.equal((fwd.chunk as { type: string }[])[0]!.type, "m.room.create");
  });

  test("redact is idempotent per txnId; the redaction names the event (content.redacts in v12)", async () => {
    const sent = await ok(await as("PUT", `${C}/rooms/${enc(roomId)}/send/m.room.message/r1`, ALICE).send({ msgtype: "m.text", body: "oops" }));
    const r = await ok(await as("PUT", `${C}/rooms/${enc(roomId)}/redact/${enc(sent.event_id as string)}/rd1`, ALICE).send({ reason: "typo" }));
    const again = await ok(await as("PUT", `${C}/rooms/${enc(roomId)}/redact/${enc(sent.event_id as string)}/rd1`, ALICE).send({ reason: "typo" }));
    assert.equal(again.event_id, r.event_id);
    const ev = await ok(await as("GET", `${C}/rooms/${enc(roomId)}/event/${enc(r.event_id as string)}`, ALICE));
    assert.deepEqual(ev.content, { reason: "typo", redacts: sent.event_id });
    // The redacted event is served redacted, with the redaction in unsigned.redacted_because
    // (the same use case as federation and the admin API: rooms/redactions.ts).
    const original = await ok(await as("GET", `${C}/rooms/${enc(roomId)}/event/${enc(sent.event_id as string)}`, ALICE));
    assert.deepEqual(original.content, {});
    assert.equal((original.unsigned as { redacted_because: { event_id: string } }).redacted_because.event_id, r.event_id);
    const page = await ok(await as("GET", `${C}/rooms/${enc(roomId)}/messages?dir=b&limit=5`, ALICE));
    const inPage = (page.chunk as { event_id: string; content: unknown }[]).find((e) => e.event_id === sent.event_id);
    assert.deepEqual(inPage?.content, {}, "/messages serves it redacted too");
  });

  test("kick, ban, unban, leave, forget; a namespace user knocks on a hosted knock room", async () => {
    await ok(await as("POST", `${C}/rooms/${enc(roomId)}/kick`, ALICE).send({ user_id: BOB, reason: "bye" }));
    assert.equal((await t.members(roomId))[BOB], "leave");
    await ok(await as("POST", `${C}/rooms/${enc(roomId)}/forget`, BOB).send({}));
    await ok(await as("POST", `${C}/knock/${enc(roomId)}`, BOB).send({ reason: "again?" }));
    assert.equal((await t.members(roomId))[BOB], "knock");
    await ok(await as("POST", `${C}/rooms/${enc(roomId)}/ban`, ALICE).send({ user_id: BOB }));
    assert.equal((await t.members(roomId))[BOB], "ban");
    await ok(await as("POST", `${C}/rooms/${enc(roomId)}/unban`, ALICE).send({ user_id: BOB }));
    assert.equal((await t.members(roomId))[BOB], "leave");
    assert.ok(((await ok(await as("GET", `${C}/joined_rooms`, ALICE))).joined_rooms as string[]).includes(roomId));
    assert.ok(!((await ok(await as("GET", `${C}/joined_rooms`, BOB))).joined_rooms as string[]).includes(roomId), "Bob was kicked");
  });

  test("invite of an unregistered namespace user asks the service (GET /_matrix/app/v1/users) and registers it", async () => {
    serviceRequests.length = 0;
    await ok(await as("POST", `${C}/rooms/${enc(roomId)}/invite`, ALICE).send({ user_id: "@_br_queried:gatehouse.test" }));
    const q = serviceRequests.find((r) => r.url.startsWith("/_matrix/app/v1/users/"));
    assert.equal(q?.auth, "Bearer hs-token-bridge-000001");
    assert.equal(await t.redis.hget(`${t.prefix}:as-users`, "@_br_queried:gatehouse.test"), "bridge");
    assert.equal((await ok(await as("GET", `${C}/account/whoami`, "@_br_queried:gatehouse.test"))).user_id, "@_br_queried:gatehouse.test");
  });

  test("upgrade: a replacement room, the old one tombstoned", async () => {
    const old = (await ok(await as("POST", `${C}/createRoom`, ALICE).send({ room_version: "10" }))).room_id as string;
    const up = await ok(await as("POST", `${C}/rooms/${enc(old)}/upgrade`, ALICE).send({ new_version: "12" }));
    const tomb = await ok(await as("GET", `${C}/rooms/${enc(old)}/state/m.room.tombstone`, ALICE));
    assert.equal(tomb.replacement_room, up.replacement_room);
  });

  const refusals: { why: string; req: () => ReturnType<typeof as>; status: number; errcode: string }[] = [
    { why: "an event over 64 KiB", req: () => as("PUT", `${C}/rooms/${enc(roomId)}/send/m.room.message/big`, ALICE).send({ body: "x".repeat(66_000) }), status: 413, errcode: "M_TOO_LARGE" },
    { why: "an event type over 255 bytes", req: () => as("PUT", `${C}/rooms/${enc(roomId)}/send/${"t".repeat(256)}/long`, ALICE).send({}), status: 413, errcode: "M_TOO_LARGE" },
    { why: "a state key over 255 bytes", req: () => as("PUT", `${C}/rooms/${enc(roomId)}/state/org.example/${"k".repeat(256)}`, ALICE).send({}), status: 413, errcode: "M_TOO_LARGE" },
    { why: "a non-member sends (auth rules)", req: () => as("PUT", `${C}/rooms/${enc(roomId)}/send/m.room.message/x`, "@_br_carol:gatehouse.test").send({ body: "x" }), status: 403, errcode: "M_FORBIDDEN" },
    { why: "a non-member reads state", req: () => as("GET", `${C}/rooms/${enc(roomId)}/state`, "@_br_carol:gatehouse.test"), status: 403, errcode: "M_FORBIDDEN" },
    { why: "the body is not an object", req: () => as("PUT", `${C}/rooms/${enc(roomId)}/send/m.room.message/arr`, ALICE).send([1]), status: 400, errcode: "M_BAD_JSON" },
    { why: "the body is not JSON", req: () => as("PUT", `${C}/rooms/${enc(roomId)}/send/m.room.message/nj`, ALICE).set("Content-Type", "application/json").send("{nope"), status: 400, errcode: "M_NOT_JSON" },
    { why: "ts is not a timestamp", req: () => as("PUT", `${C}/rooms/${enc(roomId)}/send/m.room.message/ts?ts=soon`, ALICE).send({}), status: 400, errcode: "M_INVALID_PARAM" },
    { why: "an unknown room", req: () => as("PUT", `${C}/rooms/${enc("!nope:gatehouse.test")}/send/m.room.message/u`, ALICE).send({}), status: 404, errcode: "M_NOT_FOUND" },
    { why: "a room hosted elsewhere (not supported yet: a clear error)", req: () => as("PUT", `${C}/rooms/${enc("!abc:elsewhere.test")}/send/m.room.message/e`, ALICE).send({}), status: 400, errcode: "M_UNRECOGNIZED" },
    { why: "messages with a token we never gave", req: () => as("GET", `${C}/rooms/${enc(roomId)}/messages?from=banana`, ALICE), status: 400, errcode: "M_INVALID_PARAM" },
    { why: "members with an unknown membership filter", req: () => as("GET", `${C}/rooms/${enc(roomId)}/members?membership=sleeping`, ALICE), status: 400, errcode: "M_INVALID_PARAM" },
    { why: "forget while joined", req: () => as("POST", `${C}/rooms/${enc(roomId)}/forget`, ALICE).send({}), status: 400, errcode: "M_UNKNOWN" },
    { why: "upgrade to an unknown version", req: () => as("POST", `${C}/rooms/${enc(roomId)}/upgrade`, ALICE).send({ new_version: "99" }), status: 400, errcode: "M_UNSUPPORTED_ROOM_VERSION" },
    { why: "an event that does not exist", req: () => as("GET", `${C}/rooms/${enc(roomId)}/event/${enc("$nope")}`, ALICE), status: 404, errcode: "M_NOT_FOUND" },
    { why: "redact an event that is not in the room", req: () => as("PUT", `${C}/rooms/${enc(roomId)}/redact/${enc("$nope")}/rn`, ALICE).send({}), status: 404, errcode: "M_NOT_FOUND" },
    { why: "a member event through PUT /state", req: () => as("PUT", `${C}/rooms/${enc(roomId)}/state/m.room.member/${enc(BOB)}`, ALICE).send({ membership: "join" }), status: 400, errcode: "M_INVALID_PARAM" },
  ];
  for (const c of refusals) {
    test(`refused, nothing written: ${c.why}`, async () => {
      const res = await t.assertNothingWritten(() => c.req());
      assert.equal(res.status, c.status, JSON.stringify(res.body));
      assert.equal(res.body.errcode, c.errcode);
    });
  }

  test("knock on a room hosted elsewhere goes over federation (the remote's refusal comes back)", async () => {
    const res = await as("POST", `${C}/knock/${enc(`!room:${remote.serverName}`)}?server_name=${enc(remote.serverName)}`, ALICE).send({ reason: "hi" });
    assert.ok(remote.requests.some((r) => r.url.startsWith("/_matrix/federation/v1/make_knock/")), "make_knock was asked");
    assert.ok(res.status >= 400 && res.status < 600 && res.status !== 500, JSON.stringify(res.body));
  });
});

describe("history visibility on the client API (RoomHistory.visibleEventsForUser)", () => {
  test("under joined, a user who joined later reads neither /messages nor /event from before the join; the creator reads all", async () => {
    const roomId = (await ok(await as("POST", `${C}/createRoom`, ALICE).send({ preset: "private_chat" }))).room_id as string;
    await ok(await as("PUT", `${C}/rooms/${enc(roomId)}/state/m.room.history_visibility`, ALICE).send({ history_visibility: "joined" }));
    const early = await ok(await as("PUT", `${C}/rooms/${enc(roomId)}/send/m.room.message/hv1`, ALICE).send({ msgtype: "m.text", body: "before bob" }));
    await ok(await as("POST", `${C}/rooms/${enc(roomId)}/invite`, ALICE).send({ user_id: BOB }));
    await ok(await as("POST", `${C}/join/${enc(roomId)}`, BOB).send({}));
    await ok(await as("PUT", `${C}/rooms/${enc(roomId)}/send/m.room.message/hv2`, ALICE).send({ msgtype: "m.text", body: "after bob" }));
    const bodies = async (user: string) =>
      ((await ok(await as("GET", `${C}/rooms/${enc(roomId)}/messages?dir=b&limit=50`, user))).chunk as { type: string; content: { body?: string } }[])
        .filter((e) => e.type === "m.room.message")
        .map((e) => e.content.body);
    assert.deepEqual(await bodies(BOB), ["after bob"]);
    assert.deepEqual(await bodies(ALICE), ["after bob", "before bob"]);
    const hidden = await as("GET", `${C}/rooms/${enc(roomId)}/event/${enc(early.event_id as string)}`, BOB);
    assert.equal(hidden.status, 404);
    assert.equal(hidden.body.errcode, "M_NOT_FOUND");
    await ok(await as("GET", `${C}/rooms/${enc(roomId)}/event/${enc(early.event_id as string)}`, ALICE));
  });
});

describe("directory and profiles", () => {
  let roomId: string;
  before(async () => {
    roomId = (await ok(await as("POST", `${C}/createRoom`, ALICE).send({}))).room_id as string;
  });
  test("an unknown alias in the service's namespace is asked of the service (GET /_matrix/app/v1/rooms/{alias}), which creates it", async () => {
    aliasRoom = roomId;
    serviceRequests.length = 0;
    const found = await ok(await as("GET", `${C}/directory/room/${enc("#_br_made:gatehouse.test")}`));
    assert.equal(found.room_id, roomId);
    assert.equal(serviceRequests.filter((r) => r.url.startsWith("/_matrix/app/v1/rooms/")).length, 1);
    // Outside every namespace: not asked, 404.
    assert.equal((await as("GET", `${C}/directory/room/${enc("#plain:gatehouse.test")}`)).status, 404);
    assert.equal(serviceRequests.filter((r) => r.url.startsWith("/_matrix/app/v1/rooms/")).length, 1);
  });

  test("PUT, GET, DELETE an alias", async () => {
    const alias = "#_br_dir:gatehouse.test";
    await ok(await as("PUT", `${C}/directory/room/${enc(alias)}`, ALICE).send({ room_id: roomId }));
    assert.deepEqual(await ok(await as("GET", `${C}/directory/room/${enc(alias)}`)), { room_id: roomId, servers: ["gatehouse.test"] });
    await ok(await as("DELETE", `${C}/directory/room/${enc(alias)}`, ALICE));
    assert.equal((await as("GET", `${C}/directory/room/${enc(alias)}`)).status, 404);
  });
  const refusals: { why: string; req: () => ReturnType<typeof as>; status: number; errcode: string }[] = [
    { why: "alias exists", req: () => as("PUT", `${C}/directory/room/${enc("#_br_lobby:gatehouse.test")}`, ALICE).send({ room_id: roomId }), status: 409, errcode: "M_UNKNOWN" },
    { why: "alias in another service's exclusive namespace", req: () => as("PUT", `${C}/directory/room/${enc("#_ot_x:gatehouse.test")}`, ALICE).send({ room_id: roomId }), status: 400, errcode: "M_EXCLUSIVE" },
    { why: "alias on another server", req: () => as("PUT", `${C}/directory/room/${enc("#x:elsewhere.test")}`, ALICE).send({ room_id: roomId }), status: 400, errcode: "M_INVALID_PARAM" },
    { why: "room_id missing", req: () => as("PUT", `${C}/directory/room/${enc("#_br_y:gatehouse.test")}`, ALICE).send({}), status: 400, errcode: "M_BAD_JSON" },
    { why: "delete an alias someone else made, outside the caller's namespaces", req: () => as("DELETE", `${C}/directory/room/${enc("#_br_lobby:gatehouse.test")}`, undefined, OTHER_TOKEN), status: 403, errcode: "M_FORBIDDEN" },
    { why: "delete an unknown alias", req: () => as("DELETE", `${C}/directory/room/${enc("#_br_none:gatehouse.test")}`, ALICE), status: 404, errcode: "M_NOT_FOUND" },
    { why: "set someone else's displayname", req: () => as("PUT", `${C}/profile/${enc(BOB)}/displayname`, ALICE).send({ displayname: "x" }), status: 403, errcode: "M_FORBIDDEN" },
    { why: "a displayname that is not a string", req: () => as("PUT", `${C}/profile/${enc(ALICE)}/displayname`, ALICE).send({ displayname: 5 }), status: 400, errcode: "M_BAD_JSON" },
  ];
  for (const c of refusals) {
    test(`refused, nothing written: ${c.why}`, async () => {
      const res = await t.assertNothingWritten(() => c.req());
      assert.equal(res.status, c.status, JSON.stringify(res.body));
      assert.equal(res.body.errcode, c.errcode);
    });
  }
  test("profile displayname and avatar_url", async () => {
    await ok(await as("PUT", `${C}/profile/${enc(ALICE)}/displayname`, ALICE).send({ displayname: "Alice (bridge)" }));
    await ok(await as("PUT", `${C}/profile/${enc(ALICE)}/avatar_url`, ALICE).send({ avatar_url: "mxc://gatehouse.test/abc" }));
    assert.deepEqual(await ok(await as("GET", `${C}/profile/${enc(ALICE)}`)), { displayname: "Alice (bridge)", avatar_url: "mxc://gatehouse.test/abc" });
    assert.deepEqual(await ok(await as("GET", `${C}/profile/${enc(ALICE)}/displayname`)), { displayname: "Alice (bridge)" });
    assert.equal((await as("GET", `${C}/profile/${enc("@_br_ghost:gatehouse.test")}`)).status, 404);
  });
});

describe("ping", () => {
  test("the homeserver pings the service with its hs_token and reports the duration", async () => {
    serviceRequests.length = 0;
    const body = await ok(await as("POST", "/_matrix/client/v1/appservice/bridge/ping").send({ transaction_id: "p1" }));
    assert.ok(typeof body.duration_ms === "number");
    const seen = serviceRequests.find((r) => r.url.startsWith("/_matrix/app/v1/ping"));
    assert.equal(seen?.auth, "Bearer hs-token-bridge-000001");
    assert.deepEqual(JSON.parse(seen!.body), { transaction_id: "p1" });
  });
  test("errors: another service's id, no url, a failing service", async () => {
    const other = await as("POST", "/_matrix/client/v1/appservice/other/ping").send({});
    assert.equal(other.status, 403);
    const noUrl = await as("POST", "/_matrix/client/v1/appservice/other/ping", undefined, OTHER_TOKEN).send({});
    assert.ok(noUrl.status === 400 || noUrl.status === 429, JSON.stringify(noUrl.body));
    if (noUrl.status === 400) assert.equal(noUrl.body.errcode, "M_URL_NOT_SET");
    pingStatus = 403;
    const bad = await as("POST", "/_matrix/client/v1/appservice/bridge/ping").send({});
    pingStatus = 200;
    assert.equal(bad.status, 502);
    assert.equal(bad.body.errcode, "M_BAD_STATUS");
    assert.equal(bad.body.status, 403);
  });
});

describe("every documented client operation, for success and for an error", () => {
  let roomId: string;
  before(async () => {
    roomId = (await ok(await as("POST", `${C}/createRoom`, ALICE).send({ initial_state: [{ type: "m.room.join_rules", content: { join_rule: "public" } }] }))).room_id as string;
  });
  const R = () => `${C}/rooms/${enc(roomId)}`;
  const calls: { why: string; req: () => Test; status: number }[] = [
    { why: "capabilities with an unknown token", req: () => as("GET", `${C}/capabilities`, undefined, "nope"), status: 401 },
    { why: "joined_rooms with an unknown token", req: () => as("GET", `${C}/joined_rooms`, undefined, "nope"), status: 401 },
    { why: "join by ID: a public hosted room", req: () => as("POST", `${R()}/join`, BOB).send({}), status: 200 },
    { why: "join by ID: not a room ID", req: () => as("POST", `${C}/rooms/${enc("nonsense")}/join`, BOB).send({}), status: 400 },
    { why: "join by alias: unknown local alias", req: () => as("POST", `${C}/join/${enc("#_br_nothing:gatehouse.test")}`, BOB).send({}), status: 404 },
    { why: "leave", req: () => as("POST", `${R()}/leave`, BOB).send({}), status: 200 },
    { why: "leave a room never seen", req: () => as("POST", `${C}/rooms/${enc("!x:elsewhere.test")}/leave`, BOB).send({}), status: 404 },
    { why: "invite without user_id", req: () => as("POST", `${R()}/invite`, ALICE).send({}), status: 400 },
    { why: "kick by a user without kick power", req: () => as("POST", `${R()}/kick`, BOB).send({ user_id: ALICE }), status: 403 },
    { why: "ban a malformed user ID", req: () => as("POST", `${R()}/ban`, ALICE).send({ user_id: "bob" }), status: 400 },
    { why: "unban someone not banned", req: () => as("POST", `${R()}/unban`, ALICE).send({ user_id: BOB }), status: 403 },
    { why: "redact with a non-string reason", req: () => as("PUT", `${R()}/redact/${enc("$x")}/rx`, ALICE).send({ reason: 5 }), status: 400 },
    { why: "replace m.room.create through PUT /state", req: () => as("PUT", `${R()}/state/m.room.create`, ALICE).send({}), status: 403 },
    { why: "set state with an empty state key", req: () => as("PUT", `${R()}/state/org.example.empty`, ALICE).send({ v: 1 }), status: 200 },
    { why: "set state with a state key", req: () => as("PUT", `${R()}/state/org.example.keyed/k1`, ALICE).send({ v: 2 }), status: 200 },
    { why: "state event with empty key that does not exist", req: () => as("GET", `${R()}/state/org.example.none`, ALICE), status: 404 },
    { why: "state event with a key that does not exist", req: () => as("GET", `${R()}/state/org.example.keyed/none`, ALICE), status: 404 },
    { why: "joined_members of a room the user left", req: () => as("GET", `${R()}/joined_members`, BOB), status: 403 },
    { why: "displayname of an unknown user", req: () => as("GET", `${C}/profile/${enc("@_br_ghost:gatehouse.test")}/displayname`), status: 404 },
    { why: "avatar_url", req: () => as("GET", `${C}/profile/${enc(ALICE)}/avatar_url`), status: 200 },
    { why: "avatar_url of an unknown user", req: () => as("GET", `${C}/profile/${enc("@_br_ghost:gatehouse.test")}/avatar_url`), status: 404 },
    { why: "avatar_url of another user", req: () => as("PUT", `${C}/profile/${enc(BOB)}/avatar_url`, ALICE).send({ avatar_url: "mxc://x/y" }), status: 403 },
  ];
  for (const c of calls) {
    test(c.why, async () => {
      const res = await c.req();
      assert.equal(res.status, c.status, JSON.stringify(res.body));
    });
  }

  test("coverage: every /_matrix/client operation of the OpenAPI document was answered with a success and an error", () => {
    const missing: string[] = [];
    for (const [path, item] of Object.entries(loadOpenApi().paths)) {
      if (!path.startsWith("/_matrix/client/")) continue;
      for (const m of HTTP_METHODS) {
        if (!item[m]) continue;
        const key = `${m.toUpperCase()} ${path}`;
        const statuses = [...(seen.get(key) ?? [])];
        if (!statuses.some((s) => s >= 200 && s < 300)) missing.push(`${key}: no success`);
        if (path !== "/_matrix/client/versions" && !statuses.some((s) => s >= 400)) missing.push(`${key}: no error`);
      }
    }
    assert.deepEqual(missing, []);
  });
});
