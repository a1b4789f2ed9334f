// Issue #12, "Bad input: refuse early, write nothing, keep serving": the defects of the issue,
// each as a case that failed before (500, a write, a key fetch, or an accepted event) and the
// status and errcode it gets now, with Redis unchanged.
import { test, describe, before, after } from "node:test";
import http from "node:http";
import assert from "node:assert/strict";
import { TestGatehouse, ADMIN, FED, enc } from "../support/gatehouse.js";
import { RemoteServer, randomKey } from "../support/remote-server.js";
import net from "node:net";
import type { AddressInfo } from "node:net";
import { signRequest } from "../../src/protocol/x-matrix.js";
import { signJson } from "../../src/protocol/json-signing.js";
import { MAX_BODY_NESTING, MAX_EVENT_NESTING } from "../../src/protocol/json-nesting.js";
import { createRoom } from "../../src/rooms/create-room.js";
import { addEventSignature } from "../../src/protocol/event-signing.js";
import { getRoomVersion } from "../../src/protocol/room-versions.js";
import type { Pdu } from "../../src/protocol/pdu.js";

let t: TestGatehouse;
let remote: RemoteServer;
let roomId: string;
let user: string;
let n = 0;

before(async () => {
  t = await TestGatehouse.start({ name: "bad-input", env: { GATEHOUSE_KEY_FETCH_TIMEOUT_MS: "500" } });
  remote = await RemoteServer.start();
  roomId = await t.createRoom({ room_version: "12" });
  user = remote.userId("alice");
  await t.knockAcceptJoin(remote, roomId, user);
});
after(async () => {
  await t.cleanup();
  await remote.close();
});

function assertError(res: { status: number; body: Record<string, unknown> }, status: number, errcode: string) {
  assert.equal(res.status, status, JSON.stringify(res.body).slice(0, 300));
  assert.equal(res.body.errcode, errcode, JSON.stringify(res.body).slice(0, 300));
}

/** A request with exactly these bytes as its body (supertest would re-encode a Buffer as JSON). */
export function rawRequest(port: number, method: string, path: string, headers: Record<string, string>, body: Buffer): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method, path, headers: { "Content-Type": "application/json", "Content-Length": String(body.length), ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let parsed: Record<string, unknown>;
        try {
          parsed = JSON.parse(text) as Record<string, unknown>;
        } catch {
          parsed = { raw: text };
        }
        resolve({ status: res.statusCode ?? 0, body: parsed });
      });
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** `{"a":{"a":…{"a":leaf}}}`, `levels` objects deep. */
export function nestedObject(levels: number, leaf: unknown = 1): unknown {
  let v: unknown = leaf;
  for (let i = 0; i < levels; i++) v = { a: v };
  return v;
}
const nestedText = (levels: number) => '{"a":'.repeat(levels - 1) + "{}" + "}".repeat(levels - 1);

describe("deliverable 1: bounded, strict parsing before any key fetch", () => {
  // A fresh remote server whose keys Gatehouse has never fetched: any fetch would show up in its log.
  let stranger: RemoteServer;
  before(async () => {
    stranger = await RemoteServer.start();
  });
  after(() => stranger.close());

  const bodies: { why: string; raw: Buffer; errcode: string }[] = [
    { why: "10,000 levels deep (was a 500 before the signature was checked)", raw: Buffer.from(nestedText(10_000)), errcode: "M_NOT_JSON" },
    { why: `one level past MAX_BODY_NESTING (${MAX_BODY_NESTING})`, raw: Buffer.from(nestedText(MAX_BODY_NESTING + 1)), errcode: "M_NOT_JSON" },
    { why: "invalid UTF-8 (a lone continuation byte; was stored as U+FFFD)", raw: Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0x80]), Buffer.from('"}')]), errcode: "M_NOT_JSON" },
    { why: "overlong UTF-8 encoding of '/'", raw: Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')]), errcode: "M_NOT_JSON" },
    { why: "UTF-8-encoded surrogate (CESU-8)", raw: Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')]), errcode: "M_NOT_JSON" },
  ];

  for (const b of bodies) {
    test(`federation: ${b.why} → 400 ${b.errcode}, no key fetched, nothing written`, async () => {
      const uri = `${FED}/v1/send/bad-${++n}`;
      // A real X-Matrix header of the stranger (over another body): a key fetch would happen if
      // the body got as far as the signature check.
      const res = await t.assertNothingWritten(() => rawRequest(t.federationPort, "PUT", uri, { Authorization: stranger.authHeader("PUT", uri, t.serverName, {}) }, b.raw));
      assertError(res, 400, b.errcode);
      assert.deepEqual(stranger.requestsTo("/_matrix/key"), [], "no key fetch for a body that is refused");
    });

    test(`admin: ${b.why} → 400 ${b.errcode}, nothing written`, async () => {
      const res = await t.assertNothingWritten(() => rawRequest(t.adminPort, "POST", `${ADMIN}/rooms`, { Authorization: `Bearer ${t.adminToken}` }, b.raw));
      assertError(res, 400, b.errcode);
    });
  }

  test(`a knock nesting ${MAX_EVENT_NESTING + 1} levels (a PDU Gatehouse would relay) → 400 M_BAD_JSON, nothing written`, async () => {
    const knocker = remote.userId(`deep${++n}`);
    const made = await t.makeMembership(remote, "knock", roomId, knocker, ["12"]);
    assert.equal(made.status, 200);
    // PDU (1) → content (2) → … : content.a nests the rest.
    const { pdu, eventId } = remote.signEvent({ ...made.body.event, content: { membership: "knock", a: nestedObject(MAX_EVENT_NESTING - 1) } }, "12");
    const res = await t.assertNothingWritten(() => t.fed(remote, "PUT", `${FED}/v1/send_knock/${enc(roomId)}/${enc(eventId)}`, pdu));
    assertError(res, 400, "M_BAD_JSON");
  });

  test(`a knock at exactly ${MAX_EVENT_NESTING} levels is accepted`, async () => {
    const knocker = remote.userId(`deep${++n}`);
    const made = await t.makeMembership(remote, "knock", roomId, knocker, ["12"]);
    const { pdu, eventId } = remote.signEvent({ ...made.body.event, content: { membership: "knock", a: nestedObject(MAX_EVENT_NESTING - 2) } }, "12");
    const res = await t.fed(remote, "PUT", `${FED}/v1/send_knock/${enc(roomId)}/${enc(eventId)}`, pdu);
    assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 300));
  });

  test("a PDU in /send nesting 600 levels is judged by the spec rules only: accepted, not refused (the room must not split)", async () => {
    const { pdu, eventId } = await t.remoteEvent(remote, roomId, { type: "m.room.message", sender: user, content: { msgtype: "m.text", body: "deep", a: nestedObject(600) } });
    const res = await t.fed(remote, "PUT", `${FED}/v1/send/deep-${++n}`, { origin: remote.serverName, origin_server_ts: Date.now(), pdus: [pdu] });
    assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 300));
    assert.deepEqual(res.body, { pdus: { [eventId]: {} } });
    assert.ok(await t.store.getEvent(roomId, eventId));
  });

  test(`an invite for a local user nesting past ${MAX_EVENT_NESTING} levels (we would countersign it) → 400 M_BAD_JSON, nothing written`, async () => {
    const create = remote.signEvent({ type: "m.room.create", sender: remote.userId("host"), state_key: "", content: { room_version: "12" }, prev_events: [], auth_events: [], depth: 1, origin_server_ts: Date.now() }, "12");
    const remoteRoomId = `!${create.eventId.slice(1)}`;
    const invite = (extra: unknown) =>
      remote.signEvent(
        { type: "m.room.member", room_id: remoteRoomId, sender: remote.userId("host"), state_key: t.local(`invitee${++n}`), content: { membership: "invite", x: extra }, prev_events: [create.eventId], auth_events: [], depth: 2, origin_server_ts: Date.now() },
        "12",
      );
    const deep = invite(nestedObject(MAX_EVENT_NESTING - 1));
    const uri = `${FED}/v2/invite/${enc(remoteRoomId)}/${enc(deep.eventId)}`;
    const res = await t.assertNothingWritten(() => t.fed(remote, "PUT", uri, { room_version: "12", event: deep.pdu, invite_room_state: [create.pdu] }));
    assertError(res, 400, "M_BAD_JSON");
    // The same invite, shallow: countersigned (a guard that the request itself is right).
    const shallow = invite(1);
    await t.gh.localUsers.add(shallow.pdu.state_key); // only local users who exist take invites (local-users.ts)
    const ok = await t.fed(remote, "PUT", `${FED}/v2/invite/${enc(remoteRoomId)}/${enc(shallow.eventId)}`, { room_version: "12", event: shallow.pdu, invite_room_state: [create.pdu] });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
  });

  test(`admin: event content nesting past ${MAX_EVENT_NESTING} levels → 400 M_BAD_JSON, nothing written`, async () => {
    const res = await t.assertNothingWritten(() => t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/send/m.room.message`).send({ content: { body: "x", a: nestedObject(MAX_EVENT_NESTING) } }));
    assertError(res, 400, "M_BAD_JSON");
  });
});

describe("deliverable 3: local events obey the limits remote ones do; admin writes validate fully first", () => {
  const big = "x".repeat(200_000);
  const long = "k".repeat(300);
  // Each row: a write through the admin API that was accepted or a 500 before, why, and its answer now.
  const writes: { why: string; send: () => Promise<{ status: number; body: Record<string, unknown> }>; status: number; errcode: string }[] = [
    { why: "a 200 kB topic (was accepted and queued to peers)", send: () => t.admin.put(`${ADMIN}/rooms/${enc(roomId)}/state/m.room.topic/`).send({ content: { topic: big } }), status: 413, errcode: "M_TOO_LARGE" },
    { why: "a 300-byte state_key (was accepted)", send: () => t.admin.put(`${ADMIN}/rooms/${enc(roomId)}/state/org.example.s/${long}`).send({ content: {} }), status: 413, errcode: "M_TOO_LARGE" },
    { why: "a 300-byte event type", send: () => t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/send/${long}`).send({ content: { body: "x" } }), status: 413, errcode: "M_TOO_LARGE" },
    { why: "a float in content (was a 500)", send: () => t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/send/m.room.message`).set("Content-Type", "application/json").send('{"content":{"body":"x","n":1.5}}'), status: 400, errcode: "M_BAD_JSON" },
    { why: "1.0 in content (JSON.parse would hide it as 1)", send: () => t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/send/m.room.message`).set("Content-Type", "application/json").send('{"content":{"body":"x","n":1.0}}'), status: 400, errcode: "M_BAD_JSON" },
    { why: "an integer beyond 2^53", send: () => t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/send/m.room.message`).set("Content-Type", "application/json").send('{"content":{"body":"x","n":9007199254740993}}'), status: 400, errcode: "M_BAD_JSON" },
    { why: "a lone surrogate in content (was a 500)", send: () => t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/send/m.room.message`).set("Content-Type", "application/json").send('{"content":{"body":"\\ud800"}}'), status: 400, errcode: "M_BAD_JSON" },
    { why: "a lone surrogate (UTF-8-encoded) in a state key path parameter (was a 500)", send: () => t.admin.put(`${ADMIN}/rooms/${enc(roomId)}/state/org.example.s/%ED%A0%80`).send({ content: {} }), status: 400, errcode: "M_INVALID_PARAM" },
    { why: "a cut-short percent escape in a path parameter (was a 500)", send: () => t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/send/m.room.%E0`).send({ content: {} }), status: 400, errcode: "M_INVALID_PARAM" },
    { why: "a federation path parameter that is not percent-encoded UTF-8 (was a 500)", send: () => t.fed(remote, "GET", `${FED}/v1/make_knock/${enc(roomId)}/%E0%80`), status: 400, errcode: "M_INVALID_PARAM" },
  ];
  for (const w of writes) {
    test(`admin: ${w.why} → ${w.status} ${w.errcode}, nothing written`, async () => {
      assertError(await t.assertNothingWritten(w.send), w.status, w.errcode);
    });
  }

  const creations: { why: string; body: Record<string, unknown> | string; status: number; errcode: string }[] = [
    { why: "a float in creation_content (was a 500 and a half-created room)", body: `{"creator":"@admin:gatehouse.test","creation_content":{"n":0.5}}`, status: 400, errcode: "M_BAD_JSON" },
    { why: "a lone surrogate in the name (was a 500 after the first events were written)", body: `{"creator":"@admin:gatehouse.test","name":"\\udc00"}`, status: 400, errcode: "M_BAD_JSON" },
    { why: "deep nesting in initial_state (was a 500 after the first events were written)", body: { initial_state: [{ type: "org.example.deep", state_key: "", content: nestedObject(MAX_EVENT_NESTING) }] }, status: 400, errcode: "M_BAD_JSON" },
    { why: "a second create event in initial_state (was a 500 and a half-created room)", body: { initial_state: [{ type: "m.room.create", state_key: "", content: { room_version: "12" } }] }, status: 400, errcode: "M_INVALID_PARAM" },
    { why: "a 200 kB topic", body: { topic: big }, status: 413, errcode: "M_TOO_LARGE" },
    { why: "a 300-byte state_key in initial_state", body: { initial_state: [{ type: "org.example.s", state_key: long, content: {} }] }, status: 413, errcode: "M_TOO_LARGE" },
    // The spec's createRoom error for an initial state the auth rules refuse (one errcode for the admin and client APIs).
    { why: "an initial_state event the auth rules refuse (another user's join), after five good events", body: { initial_state: [{ type: "m.room.member", state_key: "@other:gatehouse.test", content: { membership: "join" } }] }, status: 400, errcode: "M_INVALID_ROOM_STATE" },
    { why: "a name that is not a string", body: { name: 5 }, status: 400, errcode: "M_INVALID_PARAM" },
    { why: "an alias taken by another room", body: { room_alias_name: "taken" }, status: 400, errcode: "M_ROOM_IN_USE" },
  ];
  before(async () => {
    await t.createRoom({ room_alias_name: "taken" });
  });
  for (const c of creations) {
    test(`POST /rooms: ${c.why} → ${c.status} ${c.errcode}, no trace of a room`, async () => {
      const body = typeof c.body === "string" ? c.body : JSON.stringify({ creator: t.creator, ...c.body });
      const res = await t.assertNothingWritten(() => t.admin.post(`${ADMIN}/rooms`).set("Content-Type", "application/json").send(body));
      assertError(res, c.status, c.errcode);
    });
  }

  test("accepting a knock: an invitee server that pads its countersignature past 65,536 bytes gets 502, nothing written (was persisted and relayed)", async () => {
    const other = await RemoteServer.start();
    try {
      const knocker = other.userId(`padded${++n}`);
      await t.knock(other, roomId, knocker);
      other.extraRoutes = (req) => {
        if (req.method !== "PUT" || !req.url.startsWith("/_matrix/federation/v2/invite/")) return null;
        const b = req.body as { room_version: string; event: Pdu };
        const signed = addEventSignature(b.event, other.serverName, other.key, getRoomVersion(b.room_version)!);
        const sigs = signed.signatures![other.serverName]!;
        return [200, { event: { ...signed, signatures: { ...signed.signatures, [other.serverName]: { ...sigs, "ed25519:pad": "p".repeat(70_000) } } } }];
      };
      const res = await t.assertNothingWritten(() => t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/knocks/${enc(knocker)}/accept`).send({}));
      assertError(res, 502, "M_UNKNOWN");
      assert.equal(await t.store.getMembership(roomId, knocker), "knock");
    } finally {
      await other.close();
    }
  });

  test("room creation is all or nothing: a fault at each step k leaves Redis unchanged", async () => {
    const input = { creator: t.creator, join_rule: "knock", name: "n", topic: "t", room_alias_name: `all-or-nothing-${++n}`, invite: [t.local("bob")], initial_state: [{ type: "org.example.s", state_key: "", content: { a: 1 } }] };
    const steps: string[] = [];
    // A dry run that stops at the write: counts the steps (and proves the stop itself writes nothing).
    await assert.rejects(
      t.assertNothingWritten(() =>
        createRoom(t.gh, input, {
          beforeStep: (_k, label) => {
            steps.push(label);
            if (label === "write") throw new Error("stop before the write");
          },
        }),
      ),
      /stop before the write/,
    );
    assert.deepEqual(steps, ["m.room.create", "m.room.member", "m.room.power_levels", "m.room.canonical_alias", "m.room.join_rules", "m.room.history_visibility", "m.room.guest_access", "org.example.s", "m.room.name", "m.room.topic", "m.room.member", "write"]);
    for (let k = 1; k <= steps.length; k++) {
      await assert.rejects(
        t.assertNothingWritten(() =>
          createRoom(t.gh, input, {
            beforeStep: (step) => {
              if (step === k) throw new Error(`injected fault at step ${k}`);
            },
          }),
        ),
        new RegExp(`injected fault at step ${k}$`),
      );
    }
    // And with no fault the same input creates the room, alias included.
    const created = await createRoom(t.gh, input);
    assert.equal(await t.store.aliasTarget(created.room_alias!), created.room_id);
    assert.equal((await t.store.timeline(created.room_id)).length, steps.length - 1);
  });

  test("the write itself refuses when the alias was taken in between: M_ROOM_IN_USE and only the other room's alias", async () => {
    const name = `raced-${++n}`;
    const alias = `#${name}:${t.serverName}`;
    const before = await t.dump();
    const err = await createRoom(t.gh, { creator: t.creator, room_alias_name: name }, {
      // Another creator claims the alias after our check, just before our write.
      beforeStep: async (_k, label) => {
        if (label === "write") await t.store.setAlias(alias, "!other:gatehouse.test");
      },
    }).then(
      () => assert.fail("created a room with a taken alias"),
      (e: unknown) => e,
    );
    assert.equal((err as { errcode?: string }).errcode, "M_ROOM_IN_USE");
    const after = await t.dump();
    const aliasesKey = `${t.prefix}:aliases`;
    assert.deepEqual({ ...after, [aliasesKey]: undefined }, { ...before, [aliasesKey]: undefined });
    await t.store.removeAlias(alias);
  });
});

describe("deliverable 4: Authorization headers agree before any key fetch; key fetches are bounded", () => {
  test("headers naming two origins: 400 M_UNAUTHORIZED, and neither origin's keys are fetched (were fetched one after another)", async () => {
    const [a, b] = await Promise.all([RemoteServer.start(), RemoteServer.start()]);
    try {
      const uri = `${FED}/v1/make_knock/${enc(roomId)}/${enc(a.userId("x"))}?ver=12`;
      const res = await t.assertNothingWritten(() => t.fed(a, "GET", uri, undefined, { auth: [a.authHeader("GET", uri, t.serverName), b.authHeader("GET", uri, t.serverName)] }));
      assertError(res, 400, "M_UNAUTHORIZED");
      assert.deepEqual([...a.requestsTo("/_matrix/key"), ...b.requestsTo("/_matrix/key")], [], "no key fetched");
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test("headers addressed to another server next to ours: refused before any key fetch", async () => {
    const a = await RemoteServer.start();
    try {
      const uri = `${FED}/v1/make_knock/${enc(roomId)}/${enc(a.userId("x"))}?ver=12`;
      const res = await t.fed(a, "GET", uri, undefined, { auth: [a.authHeader("GET", uri, "elsewhere.test"), a.authHeader("GET", uri, t.serverName)] });
      assertError(res, 401, "M_UNAUTHORIZED");
      assert.deepEqual(a.requestsTo("/_matrix/key"), []);
    } finally {
      await a.close();
    }
  });

  test("nine headers of one origin: 400 M_UNAUTHORIZED before any key fetch", async () => {
    const a = await RemoteServer.start();
    try {
      const uri = `${FED}/v1/make_knock/${enc(roomId)}/${enc(a.userId("x"))}?ver=12`;
      const auth = Array.from({ length: 9 }, (_, i) => a.authHeader("GET", uri, t.serverName, undefined, randomKey(`ed25519:k${i}`)));
      assertError(await t.fed(a, "GET", uri, undefined, { auth }), 400, "M_UNAUTHORIZED");
      assert.deepEqual(a.requestsTo("/_matrix/key"), []);
    } finally {
      await a.close();
    }
  });

  test("a 2 MiB key document is not read (GATEHOUSE_KEY_FETCH_MAX_BYTES, 1 MiB; 64 MiB were read before): 401", async () => {
    const a = await RemoteServer.start();
    try {
      a.extraRoutes = (req) =>
        req.url.startsWith("/_matrix/key/v2/server")
          ? [200, signJson({ ...(a.keyDocument() as Record<string, unknown>), signatures: undefined, padding: "p".repeat(2 * 1_048_576) }, a.serverName, a.key)]
          : null;
      const uri = `${FED}/v1/make_knock/${enc(roomId)}/${enc(a.userId("x"))}?ver=12`;
      const res = await t.fed(a, "GET", uri);
      assertError(res, 401, "M_UNAUTHORIZED");
      assert.equal(a.requestsTo("/_matrix/key/v2/server").length, 1, "the document was asked for once");
    } finally {
      await a.close();
    }
  });

  test("a key server that never answers holds a request for GATEHOUSE_KEY_FETCH_TIMEOUT_MS (500 ms here), not 10 s: 401", async () => {
    // Accepts TCP connections and never says a word (not even the TLS handshake).
    const sockets: net.Socket[] = [];
    const silent = net.createServer((s) => sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", () => r()));
    const origin = `127.0.0.1:${(silent.address() as AddressInfo).port}`;
    try {
      const uri = `${FED}/v1/make_knock/${enc(roomId)}/${enc(`@x:${origin}`)}?ver=12`;
      const auth = signRequest({ method: "GET", uri, origin, destination: t.serverName, key: randomKey() });
      const started = Date.now();
      const res = await t.fed(remote, "GET", uri, undefined, { auth });
      assertError(res, 401, "M_UNAUTHORIZED");
      assert.ok(Date.now() - started < 5000, `answered after ${Date.now() - started} ms`);
      assert.ok(sockets.length >= 1, "the key server was asked");
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });
});

describe("deliverable 5: rooms (self-locking ACLs, join rules merge, knocks over /send)", () => {
  // A second Gatehouse whose server name is an IP literal, with a small knock limit.
  let lit: TestGatehouse;
  let litRoom: string;
  before(async () => {
    lit = await TestGatehouse.start({
      name: "bad-input-lit",
      serverName: "127.0.0.1:8448",
      env: { GATEHOUSE_RATELIMIT_KNOCKS_PER_ROOM_PER_SECOND: "1", GATEHOUSE_RATELIMIT_KNOCKS_PER_ROOM_BURST: "2" },
    });
    litRoom = await lit.createRoom({ room_version: "12" });
  });
  after(() => lit.cleanup());

  const acls: { why: string; gh: () => TestGatehouse; content: Record<string, unknown>; reason: RegExp | null }[] = [
    { why: "allow_ip_literals false with an IP-literal own name (was accepted)", gh: () => lit, content: { allow: ["*"], allow_ip_literals: false }, reason: /allow_ip_literals is false and 127\.0\.0\.1:8448 is an IP literal/ },
    { why: "our own name denied", gh: () => t, content: { allow: ["*"], deny: ["gatehouse.test"] }, reason: /matches the deny pattern "gatehouse.test"/ },
    { why: "a deny glob matching us", gh: () => t, content: { allow: ["*"], deny: ["*.test"] }, reason: /deny pattern "\*\.test"/ },
    { why: "an allow list without us", gh: () => t, content: { allow: ["example.org"] }, reason: /matches no allow pattern/ },
    { why: "no allow list at all (denies everyone)", gh: () => t, content: { deny: [] }, reason: /the allow list is empty/ },
    { why: "an ACL that keeps us (a guard: still accepted)", gh: () => t, content: { allow: ["*"], deny: ["evil.example"], allow_ip_literals: false }, reason: null },
    { why: "an IP-literal own name with IP literals allowed (a guard: still accepted)", gh: () => lit, content: { allow: ["*"], allow_ip_literals: true }, reason: null },
  ];
  for (const a of acls) {
    test(`PUT m.room.server_acl: ${a.why} → ${a.reason ? "400 M_INVALID_PARAM with the reason, nothing written" : "200"}`, async () => {
      const gh = a.gh();
      const room = gh === lit ? litRoom : roomId;
      const put = () => gh.admin.put(`${ADMIN}/rooms/${enc(room)}/state/m.room.server_acl/`).send({ content: a.content });
      if (!a.reason) {
        const res = await put();
        assert.equal(res.status, 200, JSON.stringify(res.body));
        return;
      }
      const res = await gh.assertNothingWritten(put);
      assertError(res, 400, "M_INVALID_PARAM");
      assert.match(String(res.body.error), a.reason);
    });
  }

  test("POST /rooms with a self-locking ACL in initial_state → 400 M_INVALID_PARAM, no trace of a room", async () => {
    const res = await t.assertNothingWritten(() =>
      t.admin.post(`${ADMIN}/rooms`).send({ creator: t.creator, initial_state: [{ type: "m.room.server_acl", state_key: "", content: { allow: ["example.org"] } }] }),
    );
    assertError(res, 400, "M_INVALID_PARAM");
  });

  const allow = [{ type: "m.room_membership", room_id: "!space:gatehouse.test" }];
  const merges: { why: string; body: Record<string, unknown>; expect: Record<string, unknown> | string }[] = [
    {
      why: "join_rule and an initial_state allow list: the allow list is kept (was dropped)",
      body: { join_rule: "knock_restricted", initial_state: [{ type: "m.room.join_rules", content: { join_rule: "knock_restricted", allow } }] },
      expect: { join_rule: "knock_restricted", allow },
    },
    {
      why: "join_rule fills in an initial_state join_rules event that only gives the allow list",
      body: { join_rule: "restricted", initial_state: [{ type: "m.room.join_rules", content: { allow } }] },
      expect: { join_rule: "restricted", allow },
    },
    {
      why: "initial_state join rules win over the preset, as in Synapse (public_chat would make it public)",
      body: { preset: "public_chat", initial_state: [{ type: "m.room.join_rules", content: { join_rule: "knock_restricted", allow } }] },
      expect: { join_rule: "knock_restricted", allow },
    },
    {
      why: "join_rule and initial_state naming different rules: refused, not one silently dropped",
      body: { join_rule: "knock", initial_state: [{ type: "m.room.join_rules", content: { join_rule: "public" } }] },
      expect: "M_INVALID_PARAM",
    },
  ];
  for (const m of merges) {
    test(`createRoom join rules: ${m.why}`, async () => {
      if (typeof m.expect === "string") {
        const res = await t.assertNothingWritten(() => t.admin.post(`${ADMIN}/rooms`).send({ creator: t.creator, ...m.body }));
        assertError(res, 400, m.expect);
        return;
      }
      const res = await t.admin.post(`${ADMIN}/rooms`).send({ creator: t.creator, ...m.body });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual((await t.store.getStateEvent(res.body.room_id, "m.room.join_rules", ""))?.content, m.expect);
    });
  }

  test("knocks relayed in /send count against the room's knock limit (burst 2): the third is refused, and make_knock is then limited too", async () => {
    const knockers = ["k1", "k2", "k3"].map((l) => remote.userId(`${l}-${++n}`));
    const pdus = [];
    const ids = [];
    for (const k of knockers) {
      const { pdu, eventId } = await lit.remoteEvent(remote, litRoom, { type: "m.room.member", sender: k, state_key: k, content: { membership: "knock" } });
      pdus.push(pdu);
      ids.push(eventId);
    }
    const res = await lit.fed(remote, "PUT", `${FED}/v1/send/knocks-${++n}`, { origin: remote.serverName, origin_server_ts: Date.now(), pdus });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const results = res.body.pdus as Record<string, Record<string, unknown>>;
    assert.deepEqual(results[ids[0]!], {});
    assert.deepEqual(results[ids[1]!], {});
    assert.equal(results[ids[2]!]?.errcode, "M_LIMIT_EXCEEDED", JSON.stringify(results));
    assert.equal(await lit.store.getEvent(litRoom, ids[2]!), null, "the refused knock is not stored");
    assert.equal(await lit.store.getMembership(litRoom, knockers[2]!), null);
    const made = await lit.makeMembership(remote, "knock", litRoom, remote.userId(`k4-${++n}`), ["12"]);
    assertError(made, 429, "M_LIMIT_EXCEEDED");
  });
});
