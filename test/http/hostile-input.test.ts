// A hostile-input suite (#12 deliverable 7): fast-check generates nested, oversized and malformed
// bodies against the HTTP surface — federation endpoints with valid X-Matrix signatures of a
// remote server, and the admin API — on real Redis. Each property asserts the status, the
// errcode, and that a refused request left Redis unchanged (dumpPrefix). Every expectation comes
// from an oracle written here, on the generated value, not from Gatehouse's own checks.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import fc from "fast-check";
import { TestGatehouse, ADMIN, FED, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";
import { MAX_BODY_NESTING, MAX_EVENT_NESTING } from "../../src/protocol/json-nesting.js";

const RUNS = Number(process.env.GATEHOUSE_HOSTILE_RUNS ?? 50);
const MAX_REQUEST_BYTES = 200_000;

let t: TestGatehouse;
let remote: RemoteServer;
let roomId: string;
let n = 0;

before(async () => {
  t = await TestGatehouse.start({ name: "hostile", env: { GATEHOUSE_MAX_REQUEST_BYTES: String(MAX_REQUEST_BYTES) } });
  remote = await RemoteServer.start();
  roomId = await t.createRoom({ room_version: "12" });
  // Keys of the remote are fetched once here, so the properties exercise the checks, not fetches.
  await t.knock(remote, roomId, remote.userId("warmup"));
});
after(async () => {
  await t.cleanup();
  await remote.close();
});

type Res = { status: number; body: Record<string, unknown> };

function raw(port: number, method: string, path: string, headers: Record<string, string>, body: Buffer): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method, path, headers: { "Content-Type": "application/json", "Content-Length": String(body.length), ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        let parsed: Record<string, unknown> = {};
        try {
          parsed = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>;
        } catch {
          // an empty or non-JSON answer fails the errcode assertion below
        }
        resolve({ status: res.statusCode ?? 0, body: parsed });
      });
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** Runs `send`; when the answer is not a 2xx, Redis must be exactly as before. */
async function unchangedUnlessAccepted(send: () => Promise<Res>): Promise<Res> {
  const before = await t.dump();
  const res = await send();
  if (res.status >= 300) assert.deepEqual(await t.dump(), before, `a refused request (${res.status} ${String(res.body.errcode)}) changed Redis`);
  return res;
}

// --- oracles -------------------------------------------------------------------------------

/** Containers open at the deepest point of a value. */
function depthOf(v: unknown): number {
  if (typeof v !== "object" || v === null) return 0;
  let max = 0;
  for (const c of Array.isArray(v) ? v : Object.values(v)) max = Math.max(max, depthOf(c));
  return 1 + max;
}

/** Does the value hold something canonical JSON cannot: a non-integer, an unsafe integer, a lone surrogate? */
function notCanonical(v: unknown): boolean {
  if (typeof v === "number") return !Number.isSafeInteger(v);
  if (typeof v === "string") return /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(v);
  if (typeof v !== "object" || v === null) return false;
  if (Array.isArray(v)) return v.some(notCanonical);
  return Object.entries(v).some(([k, x]) => notCanonical(k) || notCanonical(x));
}

/** A value `levels` containers deep, alternating objects and arrays as `shape` says. */
function nest(levels: number, shape: boolean[], leaf: unknown): unknown {
  let v = leaf;
  for (let i = 0; i < levels; i++) v = shape[i % shape.length] ? { k: v } : [v];
  return v;
}

// --- generators ----------------------------------------------------------------------------

/** Depths around every boundary that matters, and far beyond them. */
const depthArb = fc.oneof(
  fc.integer({ min: 1, max: MAX_EVENT_NESTING + 5 }),
  fc.integer({ min: MAX_BODY_NESTING - 5, max: MAX_BODY_NESTING + 5 }),
  fc.integer({ min: MAX_EVENT_NESTING, max: 1500 }),
);
const shapeArb = fc.array(fc.boolean(), { minLength: 1, maxLength: 4 });

/** Strings of any code units: astral characters, controls, quotes, and lone surrogate halves. */
const hostileString = (maxLength: number) =>
  fc.string({
    unit: fc.oneof(fc.string({ unit: "binary", minLength: 1, maxLength: 1 }), fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)), fc.constantFrom('"', "\\", "\u0000", "[", "{")),
    maxLength,
  });

/** JSON values that include floats, huge integers and lone surrogates. */
const hostileValue = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small" },
    hostileString(8),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.integer(),
    fc.constantFrom(2 ** 53, -(2 ** 53) - 2, 0.5, 1e21),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie("value"), { maxLength: 4 }),
    fc.dictionary(hostileString(6), tie("value"), { maxKeys: 4 }),
  ),
})).value;

describe("hostile input: federation (signed by a real remote server)", () => {
  test("property: a knock whose content nests d levels is 200 up to the event limit, else 400 M_BAD_JSON / M_NOT_JSON, never 5xx, nothing written", async () => {
    await fc.assert(
      fc.asyncProperty(depthArb, shapeArb, async (d, shape) => {
        const user = remote.userId(`nest${++n}`);
        const made = await t.makeMembership(remote, "knock", roomId, user, ["12"]);
        assert.equal(made.status, 200, JSON.stringify(made.body));
        const content = { membership: "knock", x: nest(d, shape, "leaf") };
        const { pdu, eventId } = remote.signEvent({ ...made.body.event, content }, "12");
        const pduDepth = depthOf(pdu);
        const res = await unchangedUnlessAccepted(() => t.fed(remote, "PUT", `${FED}/v1/send_knock/${enc(roomId)}/${enc(eventId)}`, pdu));
        if (pduDepth > MAX_BODY_NESTING) {
          assert.equal(res.status, 400);
          assert.equal(res.body.errcode, "M_NOT_JSON");
        } else if (pduDepth > MAX_EVENT_NESTING) {
          assert.equal(res.status, 400);
          assert.equal(res.body.errcode, "M_BAD_JSON");
        } else {
          assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 300));
        }
      }),
      { numRuns: RUNS },
    );
  });

  test("property: a signed transaction body with malformed bytes (invalid UTF-8, cut short, trailing garbage) is 400 M_NOT_JSON, never 5xx, nothing written", async () => {
    const badBytes = fc.constantFrom([0x80], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xff], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82]);
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant("utf8" as const), at: fc.nat(), bytes: badBytes }),
      fc.record({ kind: fc.constant("cut" as const), at: fc.nat() }),
      fc.record({ kind: fc.constant("garbage" as const), text: fc.constantFrom("}", "]", ",", "x", "{}", '"') }),
    );
    await fc.assert(
      fc.asyncProperty(mutation, fc.string({ maxLength: 40 }), async (m, note) => {
        const uri = `${FED}/v1/send/hostile-${++n}`;
        const body = { origin: remote.serverName, origin_server_ts: 1, pdus: [], edus: [{ edu_type: "org.example.note", content: { note } }] };
        const text = Buffer.from(JSON.stringify(body));
        let bytes: Buffer;
        if (m.kind === "utf8") {
          // Inside a string value, so only the encoding is wrong.
          const at = text.indexOf('"note":"') + 8 + (m.at % (Buffer.byteLength(note) + 1));
          bytes = Buffer.concat([text.subarray(0, at), Buffer.from(m.bytes), text.subarray(at)]);
        } else if (m.kind === "cut") {
          bytes = text.subarray(0, m.at % text.length);
        } else {
          bytes = Buffer.concat([text, Buffer.from(m.text)]);
        }
        const res = await unchangedUnlessAccepted(() => raw(t.federationPort, "PUT", uri, { Authorization: remote.authHeader("PUT", uri, t.serverName, body) }, bytes));
        // A cut that leaves nothing is an empty body: no JSON at all, so the signature fails.
        if (bytes.length === 0) assert.deepEqual([res.status, res.body.errcode], [401, "M_UNAUTHORIZED"]);
        else assert.deepEqual([res.status, res.body.errcode], [400, "M_NOT_JSON"], `${m.kind}: ${JSON.stringify(res.body)}`);
      }),
      { numRuns: RUNS },
    );
  });

  test("property: an oversized knock is 413 M_TOO_LARGE (the PDU's 65,536 bytes, or the request's limit), never 5xx, nothing written", async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 65_537, max: MAX_REQUEST_BYTES * 2 }), fc.constantFrom("reason", "displayname", "org.example.pad"), async (size, field) => {
        const user = remote.userId(`big${++n}`);
        const made = await t.makeMembership(remote, "knock", roomId, user, ["12"]);
        const { pdu, eventId } = remote.signEvent({ ...made.body.event, content: { membership: "knock", [field]: "p".repeat(size) } }, "12");
        const res = await unchangedUnlessAccepted(() => t.fed(remote, "PUT", `${FED}/v1/send_knock/${enc(roomId)}/${enc(eventId)}`, pdu));
        assert.deepEqual([res.status, res.body.errcode], [413, "M_TOO_LARGE"]);
      }),
      { numRuns: Math.ceil(RUNS / 2) },
    );
  });

  test("property: /send with nested PDUs (any depth up to the body limit) answers 200 or 400, never 5xx; PDUs that are not events write nothing", async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: MAX_BODY_NESTING + 50 }), shapeArb, async (d, shape) => {
        const uri = `${FED}/v1/send/nested-${++n}`;
        const body = { origin: remote.serverName, origin_server_ts: 1, pdus: [nest(d, shape, 1)] };
        const bodyDepth = depthOf(body);
        // Past the body limit the signature is never looked at; below it the request is signed properly.
        const auth = bodyDepth > MAX_BODY_NESTING ? remote.authHeader("PUT", uri, t.serverName, {}) : remote.authHeader("PUT", uri, t.serverName, body);
        const before = await t.dump();
        const res = await t.fed(remote, "PUT", uri, body, { auth });
        assert.deepEqual(await t.dump(), before);
        if (bodyDepth > MAX_BODY_NESTING) assert.deepEqual([res.status, res.body.errcode], [400, "M_NOT_JSON"]);
        else assert.deepEqual([res.status, res.body], [200, { pdus: {} }]);
      }),
      { numRuns: RUNS },
    );
  });
});

describe("hostile input: admin API", () => {
  test("property: event content with floats, unsafe integers, lone surrogates and deep nesting is 400 M_BAD_JSON / M_NOT_JSON, else 200; refusals write nothing", async () => {
    const content = fc.oneof(
      fc.dictionary(hostileString(6), hostileValue, { maxKeys: 5 }),
      fc.tuple(depthArb, shapeArb).map(([d, shape]) => ({ deep: nest(d, shape, 0) })),
    );
    const seen = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(content, async (c) => {
        const text = JSON.stringify({ content: { body: "hostile", ...c } });
        const res = await unchangedUnlessAccepted(() => t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/send/m.room.message`).set("Content-Type", "application/json").send(text));
        const bodyDepth = depthOf(JSON.parse(text));
        // The PDU: content sits one level below the event object.
        const eventDepth = bodyDepth;
        let expected: [number, string | undefined];
        if (bodyDepth > MAX_BODY_NESTING) expected = [400, "M_NOT_JSON"];
        else if (notCanonical(c)) expected = [400, "M_BAD_JSON"];
        else if (eventDepth > MAX_EVENT_NESTING) expected = [400, "M_BAD_JSON"];
        else expected = [200, undefined];
        assert.deepEqual([res.status, res.body.errcode], expected, `${text.slice(0, 200)} → ${JSON.stringify(res.body).slice(0, 200)}`);
        seen.set(`${expected[0]} ${expected[1] ?? ""}`, (seen.get(`${expected[0]} ${expected[1] ?? ""}`) ?? 0) + 1);
      }),
      { numRuns: RUNS * 2 },
    );
    // The generators reach every answer (else the property would prove less than it says).
    for (const answer of ["200 ", "400 M_BAD_JSON", "400 M_NOT_JSON"]) assert.ok(seen.has(answer), `no generated case got ${answer}: ${JSON.stringify([...seen])}`);
  });

  test("property: createRoom with arbitrary initial_state, names and limits is all or nothing: a refusal (never 5xx) leaves no trace of a room", async () => {
    const stateEvent = fc.record(
      {
        type: fc.oneof(fc.constantFrom("m.room.create", "m.room.member", "m.room.join_rules", "m.room.server_acl", "m.room.power_levels", "org.example.s"), hostileString(300)),
        state_key: fc.oneof(fc.constant(""), fc.constantFrom("@admin:gatehouse.test", "@x:gatehouse.test"), hostileString(300)),
        content: fc.oneof(fc.dictionary(fc.string({ maxLength: 6 }), hostileValue, { maxKeys: 4 }), fc.constantFrom({ join_rule: "public" }, { allow: ["example.org"] }, { membership: "join" })),
      },
      { requiredKeys: ["type", "content"] },
    );
    const input = fc.record(
      {
        name: fc.oneof(hostileString(20), fc.integer(), fc.constant("x".repeat(70_000))),
        join_rule: fc.constantFrom("knock", "public", "restricted", "nonsense"),
        initial_state: fc.array(stateEvent, { maxLength: 3 }),
        creation_content: fc.dictionary(fc.string({ maxLength: 6 }), hostileValue, { maxKeys: 3 }),
      },
      { requiredKeys: [] },
    );
    await fc.assert(
      fc.asyncProperty(input, async (body) => {
        const text = JSON.stringify({ creator: t.creator, ...body });
        const res = await unchangedUnlessAccepted(() => t.admin.post(`${ADMIN}/rooms`).set("Content-Type", "application/json").send(text));
        assert.ok(res.status < 500, `${res.status} ${JSON.stringify(res.body)} for ${text.slice(0, 300)}`);
        if (res.status === 200) assert.ok(await t.store.getRoom(res.body.room_id as string));
        // M_INVALID_ROOM_STATE: initial_state the auth rules refuse (the spec's createRoom errcode).
        else assert.match(String(res.body.errcode), /^M_(BAD_JSON|NOT_JSON|INVALID_PARAM|TOO_LARGE|FORBIDDEN|ROOM_IN_USE|UNSUPPORTED_ROOM_VERSION|INVALID_ROOM_STATE)$/);
      }),
      { numRuns: RUNS },
    );
  });
});

describe("hostile input: admin /users/{userId}", () => {
  /**
   * Oracle: an existing user's ID is taken as opaque, as the spec asks of IDs created before its
   * grammar (historical localparts, even empty ones, exist on real servers): everything up to the
   * first colon except NUL, the server's own name after it, at most 255 bytes.
   */
  const isLocalUserId = (id: string) => {
    const m = /^@([^:\u0000]*):([\s\S]*)$/.exec(id);
    return m !== null && m[2] === t.serverName && Buffer.byteLength(id, "utf8") <= 255;
  };
  const localpart = fc.oneof(
    fc.string({ unit: fc.constantFrom(..."abcxyz019._=-/+".split("")), minLength: 1, maxLength: 12 }),
    hostileString(12),
    fc.constant("x".repeat(240)),
    fc.constant(""),
  );
  const server = fc.oneof(fc.constant("gatehouse.test"), fc.constantFrom("other.example", "gatehouse.test:8448", "GATEHOUSE.TEST", "[::1]"), hostileString(10));
  const userId = fc.oneof(
    fc.tuple(localpart, server).map(([l, s]) => `@${l}:${s}`),
    fc.tuple(fc.constantFrom("", "#", "!", "$", "@@"), localpart, server).map(([sigil, l, s]) => `${sigil}${l}:${s}`),
    hostileString(40),
  );

  test("property: GET/POST/DELETE of any user ID is 200 for a valid local user ID, else 400 M_INVALID_PARAM; refusals write nothing", async () => {
    const seen = new Set<string>();
    await fc.assert(
      fc.asyncProperty(userId, fc.constantFrom("get", "post", "delete") as fc.Arbitrary<"get" | "post" | "delete">, async (id, method) => {
        // encodeURIComponent throws on a lone surrogate: such an ID cannot be put in a URL by a client either.
        let path: string;
        try {
          path = `${ADMIN}/users/${encodeURIComponent(id)}`;
        } catch {
          return;
        }
        const res = await unchangedUnlessAccepted(() => t.admin[method](path));
        const valid = isLocalUserId(id);
        // An empty ID is the path /users/: the list for GET, 405 M_UNRECOGNIZED for other methods.
        if (id === "") assert.deepEqual([res.status, res.body.errcode], method === "get" ? [200, undefined] : [405, "M_UNRECOGNIZED"]);
        else if (valid) assert.equal(res.status, 200, `${method} ${JSON.stringify(id)} → ${res.status} ${JSON.stringify(res.body)}`);
        else assert.deepEqual([res.status, res.body.errcode], [400, "M_INVALID_PARAM"], `${method} ${JSON.stringify(id)} → ${JSON.stringify(res.body)}`);
        if (id !== "") seen.add(valid ? "valid" : "invalid");
        if (valid && method === "post") assert.ok((await t.admin.get(path)).body.exists, `${id} was added but does not exist`);
      }),
      { numRuns: RUNS * 2 },
    );
    for (const kind of ["valid", "invalid"]) assert.ok(seen.has(kind), `no generated case was ${kind}`);
  });
});
