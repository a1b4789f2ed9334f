// Answers from other servers are parsed with the rules inbound bodies follow (#12): a size cap
// (GATEHOUSE_FEDERATION_MAX_RESPONSE_BYTES), strict UTF-8 and at most 1,024 levels of nesting,
// and a success answer must be a JSON object. A hostile remote gets a clean refusal: the admin
// endpoint that proxies it (remote knock) answers 502 M_UNKNOWN and writes nothing; never a 500,
// never a record holding U+FFFD for bytes that were not UTF-8.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, ADMIN } from "../support/gatehouse.js";
import { RawBody, RemoteServer, type RecordedRequest } from "../support/remote-server.js";
import { parseResponseBody } from "../../src/net/federation-client.js";
import { MAX_BODY_NESTING } from "../../src/protocol/json-nesting.js";
import type { Pdu } from "../../src/protocol/pdu.js";

const MAX_RESPONSE = 65_536;
let t: TestGatehouse;
let remote: RemoteServer;
let room: { roomId: string; createId: string; create: Pdu };
let n = 0;

/** What the remote answers to make_knock and send_knock in the current test (null: a correct answer). */
let hostile: { make?: [number, unknown]; send?: [number, unknown] } = {};

const deep = (levels: number): string => "[".repeat(levels) + "]".repeat(levels);
const raw = (text: string | Buffer) => new RawBody(typeof text === "string" ? Buffer.from(text) : text);

before(async () => {
  t = await TestGatehouse.start({ name: "remote-responses", env: { GATEHOUSE_FEDERATION_MAX_RESPONSE_BYTES: String(MAX_RESPONSE) } });
  remote = await RemoteServer.start();
  const { pdu, eventId } = remote.signEvent(
    { type: "m.room.create", sender: remote.userId("host"), state_key: "", content: { room_version: "12" }, prev_events: [], auth_events: [], depth: 1, origin_server_ts: Date.now() },
    "12",
  );
  room = { roomId: `!${eventId.slice(1)}`, createId: eventId, create: pdu };
  remote.extraRoutes = (req: RecordedRequest) => {
    const path = req.url.split("?")[0]!;
    const make = /^\/_matrix\/federation\/v1\/make_knock\/[^/]+\/([^/]+)$/.exec(path);
    if (make) {
      if (hostile.make) return hostile.make;
      const userId = decodeURIComponent(make[1]!);
      return [200, { room_version: "12", event: { type: "m.room.member", room_id: room.roomId, sender: userId, state_key: userId, content: { membership: "knock" }, origin_server_ts: Date.now(), depth: 2, prev_events: [room.createId], auth_events: [] } }];
    }
    if (path.startsWith("/_matrix/federation/v1/send_knock/")) return hostile.send ?? [200, { knock_room_state: [room.create] }];
    return null;
  };
});

after(async () => {
  await t.cleanup();
  await remote.close();
});

const knock = () => t.admin.post(`${ADMIN}/remote/knock`).send({ user_id: t.local(`knocker${++n}`), room_id: room.roomId, via: [remote.serverName] });

describe("remote answers are parsed bounded: the admin remote knock refuses hostile ones cleanly", () => {
  const name = (s: string) => ({ type: "m.room.name", state_key: "", sender: "@h:x", content: { name: s } });
  const rows: { why: string; answer: typeof hostile; message: RegExp }[] = [
    {
      why: "send_knock answers nesting 10,000 levels deep (was: a 500 when the record was stored, with the user already listed)",
      answer: { send: [200, raw(`{"knock_room_state":[{"type":"m.room.name","state_key":"","sender":"@h:x","content":{"name":"n","x":${deep(10_000)}}}]}`)] },
      message: /nesting deeper than 1024 levels/,
    },
    {
      why: `send_knock answers nesting ${MAX_BODY_NESTING + 1} levels (the inbound body limit, one past it)`,
      answer: { send: [200, raw(`{"a":${deep(MAX_BODY_NESTING)}}`)] },
      message: /nesting deeper than 1024 levels/,
    },
    {
      why: "make_knock answers with bytes that are not UTF-8 (was: decoded to U+FFFD)",
      answer: { make: [200, raw(Buffer.concat([Buffer.from('{"room_version":"12","x":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]))] },
      message: /not valid UTF-8/,
    },
    {
      why: "send_knock's knock_room_state holds bytes that are not UTF-8 (was: stored as U+FFFD, answered 200)",
      answer: { send: [200, raw(Buffer.concat([Buffer.from('{"knock_room_state":[{"type":"m.room.name","state_key":"","sender":"@h:x","content":{"name":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}}]}')]))] },
      message: /not valid UTF-8/,
    },
    {
      why: `send_knock answers more than GATEHOUSE_FEDERATION_MAX_RESPONSE_BYTES (${MAX_RESPONSE}) (was: read up to 64 MiB, accepted)`,
      answer: { send: [200, { knock_room_state: [name("x".repeat(MAX_RESPONSE))] }] },
      message: new RegExp(`larger than ${MAX_RESPONSE} bytes`),
    },
    { why: "make_knock answers 200 with a body that is not JSON", answer: { make: [200, raw("<html>ok</html>")] }, message: /not a JSON object/ },
    { why: "make_knock answers 200 with JSON null", answer: { make: [200, null] }, message: /not a JSON object/ },
    { why: "send_knock answers 200 with a JSON array (was: accepted, a record without state)", answer: { send: [200, []] }, message: /not a JSON object/ },
    {
      why: "a refusal (403) nesting too deep: refused as malformed, not passed through",
      answer: { make: [403, raw(`{"errcode":"M_FORBIDDEN","error":${deep(5000)}}`)] },
      message: /nesting deeper than 1024 levels/,
    },
  ];
  for (const row of rows) {
    test(row.why, async () => {
      hostile = row.answer;
      try {
        const res = await t.assertNothingWritten(() => knock());
        assert.equal(res.status, 502, JSON.stringify(res.body).slice(0, 300));
        assert.equal(res.body.errcode, "M_UNKNOWN");
        assert.match(String(res.body.error), row.message);
      } finally {
        hostile = {};
      }
    });
  }

  test("the same knock with honest answers is taken (the rows above fail for their reason only), and deep-but-allowed answers still parse", async () => {
    const ok = await knock();
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.membership, "knock");
    hostile = { send: [200, raw(`{"knock_room_state":[],"x":${deep(MAX_BODY_NESTING - 1)}}`)] };
    try {
      assert.equal((await knock()).status, 200);
    } finally {
      hostile = {};
    }
  });
});

describe("parseResponseBody (the parser every outbound answer goes through)", () => {
  const rows: { why: string; bytes: Buffer; ok: boolean; body?: unknown }[] = [
    { why: "empty: no body", bytes: Buffer.alloc(0), ok: true, body: undefined },
    { why: "an object", bytes: Buffer.from('{"a":[1,{"b":"é"}]}'), ok: true, body: { a: [1, { b: "é" }] } },
    { why: "an HTML error page: no JSON body, not refused (call() refuses it on a success answer)", bytes: Buffer.from("<html>502</html>"), ok: true, body: undefined },
    { why: "an overlong encoding of '/' (0xC0 0xAF) is not UTF-8", bytes: Buffer.from([0x22, 0xc0, 0xaf, 0x22]), ok: false },
    { why: "a lone surrogate encoded as bytes (0xED 0xA0 0x80) is not UTF-8", bytes: Buffer.from([0x22, 0xed, 0xa0, 0x80, 0x22]), ok: false },
    { why: `exactly ${MAX_BODY_NESTING} levels`, bytes: Buffer.from(deep(MAX_BODY_NESTING)), ok: true },
    { why: `${MAX_BODY_NESTING + 1} levels`, bytes: Buffer.from(deep(MAX_BODY_NESTING + 1)), ok: false },
    { why: "brackets inside strings do not count", bytes: Buffer.from(JSON.stringify({ s: "[".repeat(5000) })), ok: true, body: { s: "[".repeat(5000) } },
  ];
  for (const row of rows) {
    test(row.why, () => {
      const out = parseResponseBody(row.bytes);
      assert.equal(out.ok, row.ok);
      if (out.ok && "body" in row) assert.deepEqual(out.body, row.body);
    });
  }
});
