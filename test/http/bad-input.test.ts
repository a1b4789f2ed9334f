// Issue #12, "Bad input: refuse early, write nothing, keep serving": the defects of the issue,
// each as a case that failed before (500, a write, a key fetch, or an accepted event) and the
// status and errcode it gets now, with Redis unchanged.
import { test, describe, before, after } from "node:test";
import http from "node:http";
import assert from "node:assert/strict";
import { TestGatehouse, ADMIN, FED, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";
import { MAX_BODY_NESTING, MAX_EVENT_NESTING } from "../../src/protocol/json-nesting.js";

let t: TestGatehouse;
let remote: RemoteServer;
let roomId: string;
let user: string;
let n = 0;

before(async () => {
  t = await TestGatehouse.start({ name: "bad-input" });
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

  test(`admin: event content nesting past ${MAX_EVENT_NESTING} levels → 400 M_BAD_JSON, nothing written`, async () => {
    const res = await t.assertNothingWritten(() => t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/send/m.room.message`).send({ content: { body: "x", a: nestedObject(MAX_EVENT_NESTING) } }));
    assertError(res, 400, "M_BAD_JSON");
  });
});
