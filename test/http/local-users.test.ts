// Invites from other servers (/v2/invite) are taken only for local users who exist: registered by
// an application service, known through the admin API (it acted for them, or an operator added
// them), or confirmed by an application service's user query. Any other name: 403 M_FORBIDDEN
// and nothing written. Before, any server could make Gatehouse store invite records for any name.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { TestGatehouse, ADMIN, FED, enc } from "../support/gatehouse.js";
import { RemoteServer, type RecordedRequest } from "../support/remote-server.js";
import type { Pdu } from "../../src/protocol/pdu.js";

const AS_TOKEN = "as-token-localusers-01";
const HS_TOKEN = "hs-token-localusers-01";
const C = "/_matrix/client/v3";

let t: TestGatehouse;
let remote: RemoteServer;
let service: http.Server;
/** User IDs the fake application service says it has (200 to the user query). */
const serviceUsers = new Set<string>();
/** User queries the service received. */
const queried: string[] = [];
let n = 0;
let room: { roomId: string; createId: string; create: Pdu };

function residentRoom(server: RemoteServer): { roomId: string; createId: string; create: Pdu } {
  const { pdu, eventId } = server.signEvent(
    { type: "m.room.create", sender: server.userId("host"), state_key: "", content: { room_version: "12" }, prev_events: [], auth_events: [], depth: 1, origin_server_ts: Date.now() },
    "12",
  );
  return { roomId: `!${eventId.slice(1)}`, createId: eventId, create: pdu };
}

/** The remote answers make_knock/send_knock for `room` (the knock-out flow), as a resident server does. */
function actAsResident(server: RemoteServer): void {
  const target = server as unknown as { answer: (req: RecordedRequest) => [number, unknown] };
  const original = target.answer.bind(server);
  target.answer = (req) => {
    const path = req.url.split("?")[0]!;
    const make = /^\/_matrix\/federation\/v1\/make_knock\/([^/]+)\/([^/]+)$/.exec(path);
    if (make) {
      const userId = decodeURIComponent(make[2]!);
      return [
        200,
        {
          room_version: "12",
          event: { type: "m.room.member", room_id: room.roomId, sender: userId, state_key: userId, content: { membership: "knock" }, origin_server_ts: Date.now(), depth: 2, prev_events: [room.createId], auth_events: [] },
        },
      ];
    }
    if (/^\/_matrix\/federation\/v1\/send_knock\//.test(path)) return [200, { knock_room_state: [room.create] }];
    return original(req);
  };
}

/** A signed invite from `remote` for `userId` into its room, and the request that sends it. */
function invite(userId: string) {
  const { pdu, eventId } = remote.signEvent(
    { type: "m.room.member", room_id: room.roomId, sender: remote.userId("host"), state_key: userId, content: { membership: "invite" }, prev_events: [room.createId], auth_events: [], depth: 3 + ++n, origin_server_ts: Date.now() },
    "12",
  );
  return () => t.fed(remote, "PUT", `${FED}/v2/invite/${enc(room.roomId)}/${enc(eventId)}`, { room_version: "12", event: pdu, invite_room_state: [room.create] });
}

const as = (method: "GET" | "POST", path: string) => t.client(method, path).set("Authorization", `Bearer ${AS_TOKEN}`);

before(async () => {
  service = http.createServer((req, res) => {
    const m = /^\/_matrix\/app\/v1\/users\/([^/?]+)/.exec(req.url ?? "");
    req.resume();
    if (req.method === "GET" && m && req.headers.authorization === `Bearer ${HS_TOKEN}`) {
      const userId = decodeURIComponent(m[1]!);
      queried.push(userId);
      if (serviceUsers.has(userId)) return void res.writeHead(200, { "Content-Type": "application/json" }).end("{}");
      return void res.writeHead(404, { "Content-Type": "application/json" }).end('{"errcode":"M_NOT_FOUND"}');
    }
    if (req.method === "PUT") return void res.writeHead(200, { "Content-Type": "application/json" }).end("{}");
    res.writeHead(404, { "Content-Type": "application/json" }).end('{"errcode":"M_UNRECOGNIZED"}');
  });
  await new Promise<void>((r) => service.listen(0, "127.0.0.1", () => r()));
  const url = `http://127.0.0.1:${(service.address() as AddressInfo).port}`;
  t = await TestGatehouse.start({
    name: "local-users",
    registrations: [
      `id: lubridge\nurl: ${url}\nas_token: ${AS_TOKEN}\nhs_token: ${HS_TOKEN}\nsender_localpart: lubot\nrate_limited: false\nnamespaces:\n  users:\n    - exclusive: true\n      regex: "@_lu_.*:gatehouse\\\\.test"\n    - exclusive: false\n      regex: "@shared_.*:gatehouse\\\\.test"\n`,
    ],
  });
  remote = await RemoteServer.start();
  room = residentRoom(remote);
  actAsResident(remote);
});

after(async () => {
  await t.cleanup();
  await remote.close();
  await new Promise<void>((r) => service.close(() => r()));
});

describe("/v2/invite: only for local users who exist", () => {
  // Each row makes (or not) a local user exist, then a remote server invites it.
  const rows: { why: string; user: () => string; setup?: (user: string) => Promise<void>; status: number; errcode?: string; queries?: number }[] = [
    { why: "a name nobody made (before: an invite record was stored for it)", user: () => t.local(`nobody${++n}`), status: 403, errcode: "M_FORBIDDEN", queries: 0 },
    {
      why: "a room creator: the admin API created a room for it",
      user: () => t.local(`creator${++n}`),
      setup: async (u) => void (await t.createRoom({ creator: u })),
      status: 200,
    },
    {
      why: "a local user the admin API joined to a hosted room",
      user: () => t.local(`joiner${++n}`),
      setup: async (u) => {
        const roomId = await t.createRoom({ join_rule: "public" });
        assert.equal((await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/join`).send({ user_id: u })).status, 200);
      },
      status: 200,
    },
    {
      why: "an operator added it (POST /users/{userId})",
      user: () => t.local(`added${++n}`),
      setup: async (u) => assert.equal((await t.admin.post(`${ADMIN}/users/${enc(u)}`).send({})).status, 200),
      status: 200,
    },
    {
      why: "added, then removed by the operator (DELETE /users/{userId})",
      user: () => t.local(`removed${++n}`),
      setup: async (u) => {
        assert.equal((await t.admin.post(`${ADMIN}/users/${enc(u)}`).send({})).status, 200);
        assert.equal((await t.admin.delete(`${ADMIN}/users/${enc(u)}`)).status, 200);
      },
      status: 403,
      errcode: "M_FORBIDDEN",
    },
    {
      why: "registered by an application service (client API /register): no user query needed",
      user: () => `@_lu_reg${++n}:gatehouse.test`,
      setup: async (u) => assert.equal((await as("POST", `${C}/register`).send({ type: "m.login.application_service", username: u.slice(1, u.indexOf(":")) })).status, 200),
      status: 200,
      queries: 0,
    },
    { why: "the application service's own sender", user: () => "@lubot:gatehouse.test", status: 200, queries: 0 },
    {
      why: "in an exclusive namespace, unregistered, and the service confirms it (user query 200)",
      user: () => `@_lu_known${++n}:gatehouse.test`,
      setup: async (u) => void serviceUsers.add(u),
      status: 200,
      queries: 1,
    },
    {
      why: "in a non-exclusive namespace, and the service confirms it",
      user: () => `@shared_known${++n}:gatehouse.test`,
      setup: async (u) => void serviceUsers.add(u),
      status: 200,
      queries: 1,
    },
    { why: "in a namespace, but the service answers 404 to the user query", user: () => `@_lu_unknown${++n}:gatehouse.test`, status: 403, errcode: "M_FORBIDDEN", queries: 1 },
  ];
  for (const row of rows) {
    test(row.why, async () => {
      const user = row.user();
      await row.setup?.(user);
      const send = invite(user);
      const before = queried.length;
      if (row.status === 200) {
        const res = await send();
        assert.equal(res.status, 200, JSON.stringify(res.body));
        assert.equal((res.body.event as Pdu).state_key, user);
        const records = await t.admin.get(`${ADMIN}/remote/memberships?user_id=${enc(user)}`);
        assert.deepEqual((records.body.memberships as { membership: string }[]).map((r) => r.membership), ["invite"]);
      } else {
        const res = await t.assertNothingWritten(() => send());
        assert.equal(res.status, row.status, JSON.stringify(res.body));
        assert.equal(res.body.errcode, row.errcode);
      }
      if (row.queries !== undefined) assert.equal(queried.length - before, row.queries, `user queries: ${JSON.stringify(queried.slice(before))}`);
    });
  }

  test("the knock-out flow keeps working: a local user knocks through the admin API on a remote room, then its invite is taken", async () => {
    const user = t.local(`knocker${++n}`);
    // Never seen before: an invite would be refused.
    assert.equal((await t.assertNothingWritten(() => invite(user)())).status, 403);
    const knock = await t.admin.post(`${ADMIN}/remote/knock`).send({ user_id: user, room_id: room.roomId, via: [remote.serverName] });
    assert.equal(knock.status, 200, JSON.stringify(knock.body));
    const res = await invite(user)();
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const record = await t.admin.get(`${ADMIN}/remote/memberships?user_id=${enc(user)}`);
    assert.equal((record.body.memberships as { membership: string }[])[0]!.membership, "invite");
  });

  test("a failed admin action does not make the user known", async () => {
    const user = t.local(`failed${++n}`);
    const res = await t.assertNothingWritten(() => t.admin.post(`${ADMIN}/rooms/${enc("!nosuchroom:gatehouse.test")}/join`).send({ user_id: user }));
    assert.equal(res.status, 404);
    assert.equal((await t.assertNothingWritten(() => invite(user)())).status, 403);
  });
});

describe("admin API: /users", () => {
  test("GET /users/{userId} says whether and why a user exists; GET /users lists the admin API's users", async () => {
    const added = t.local(`shown${++n}`);
    await t.admin.post(`${ADMIN}/users/${enc(added)}`).send({});
    const again = await t.admin.post(`${ADMIN}/users/${enc(added)}`).send({});
    assert.deepEqual(again.body, { user_id: added, added: false });
    assert.deepEqual((await t.admin.get(`${ADMIN}/users/${enc(added)}`)).body, { user_id: added, exists: true, source: "admin" });
    assert.deepEqual((await t.admin.get(`${ADMIN}/users/${enc("@lubot:gatehouse.test")}`)).body, { user_id: "@lubot:gatehouse.test", exists: true, source: "registered" });
    serviceUsers.add("@_lu_shown:gatehouse.test");
    assert.deepEqual((await t.admin.get(`${ADMIN}/users/${enc("@_lu_shown:gatehouse.test")}`)).body, { user_id: "@_lu_shown:gatehouse.test", exists: true, source: "appservice_query" });
    assert.deepEqual((await t.admin.get(`${ADMIN}/users/${enc(t.local("ghost"))}`)).body, { user_id: t.local("ghost"), exists: false });
    const list = await t.admin.get(`${ADMIN}/users`);
    assert.ok((list.body.users as string[]).includes(added));
    assert.ok((list.body.users as string[]).includes(t.creator), "the creator of the suite's rooms is known");
  });

  const bad: { why: string; send: () => Promise<{ status: number; body: Record<string, unknown> }> }[] = [
    { why: "a user of another server", send: () => t.admin.post(`${ADMIN}/users/${enc("@someone:elsewhere.example")}`).send({}) },
    { why: "not a user ID", send: () => t.admin.post(`${ADMIN}/users/${enc("admin")}`).send({}) },
    { why: "a user ID over 255 bytes", send: () => t.admin.post(`${ADMIN}/users/${enc(t.local("x".repeat(260)))}`).send({}) },
    { why: "DELETE of another server's user", send: () => t.admin.delete(`${ADMIN}/users/${enc("@someone:elsewhere.example")}`) },
    { why: "GET of a malformed ID", send: () => t.admin.get(`${ADMIN}/users/${enc("@:")}`) },
  ];
  for (const row of bad) {
    test(`refused: ${row.why} → 400 M_INVALID_PARAM, nothing written`, async () => {
      const res = await t.assertNothingWritten(row.send);
      assert.equal(res.status, 400, JSON.stringify(res.body));
      assert.equal(res.body.errcode, "M_INVALID_PARAM");
    });
  }
});

describe("records made before the local-users set (migrate, once per Redis)", () => {
  test("creators and local members of hosted rooms and users of our own knock/join/leave records are taken over; invite-only records are not", async () => {
    const k = t.gh.keys;
    const r = t.redis;
    // Legacy state, as an older Gatehouse left it (no local-users set).
    await r.del(k.localUsers(), k.localUsersMigrated());
    const hosted = await t.createRoom({ creator: t.local("oldcreator") });
    await r.hset(k.members(hosted), t.local("oldmember"), "join", "@someone:elsewhere.example", "join");
    const record = (user: string, membership: string, extra: Record<string, unknown> = {}) =>
      r.sadd(k.remoteMembers(), user).then(() => r.hset(k.remoteMemberships(user), room.roomId, JSON.stringify({ user_id: user, room_id: room.roomId, membership, ...extra })));
    await record(t.local("oldknocker"), "knock");
    await record(t.local("oldjoiner"), "join");
    await record(t.local("oldautojoin"), "invite", { auto_join: true });
    await record(t.local("oldinvitee"), "invite");
    await r.del(k.localUsers());

    const added = await t.gh.localUsers.migrate();
    const users = await t.gh.localUsers.list();
    for (const u of ["oldcreator", "oldmember", "oldknocker", "oldjoiner", "oldautojoin", "admin"]) assert.ok(users.includes(t.local(u)), `${u} taken over`);
    assert.ok(!users.includes(t.local("oldinvitee")), "an invite-only record proves nothing: any server could make one");
    assert.ok(!users.includes("@someone:elsewhere.example"));
    assert.ok(added >= 6);
    // Once: a second run does nothing, even after the set changed.
    await t.admin.delete(`${ADMIN}/users/${enc(t.local("oldjoiner"))}`);
    assert.equal(await t.gh.localUsers.migrate(), 0);
    assert.ok(!(await t.gh.localUsers.list()).includes(t.local("oldjoiner")));
  });
});
