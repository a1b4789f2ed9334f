/**
 * Property-based tests (fast-check) for the parsers and encoders that face the network: they must
 * never crash, never accept what they should refuse, and round-trip what they produce.
 */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { canonicalJson, CanonicalJsonError, findNonCanonicalNumber, parseStrictJson } from "../../src/protocol/canonical-json.js";
import { formatXMatrixHeader, parseXMatrixHeader, parseXMatrixHeaders } from "../../src/protocol/x-matrix.js";
import { compileServerAcl } from "../../src/protocol/server-acl.js";
import { parseServerName, parseUserId, parseRoomId, parseEventId } from "../../src/protocol/ids.js";
import { validatePduFormat } from "../../src/protocol/pdu-format.js";
import { checkEvent } from "../../src/protocol/event-signing.js";
import { redactEvent } from "../../src/protocol/redaction.js";
import { ROOM_VERSIONS, getRoomVersion } from "../../src/protocol/room-versions.js";
import { decodeBase64, decodeBase64Url, encodeBase64, encodeBase64Url } from "../../src/protocol/base64.js";

const RUNS = Number(process.env.FUZZ_RUNS ?? 300);
const opts = { numRuns: RUNS };

/** JSON values canonical JSON can hold: safe integers only. */
const canonicalValue = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small" },
    fc.constant(null),
    fc.boolean(),
    fc.maxSafeInteger(),
    fc.string({ unit: "grapheme" }),
    fc.array(tie("value"), { maxLength: 4 }),
    fc.dictionary(fc.string({ unit: "grapheme", maxLength: 6 }), tie("value"), { maxKeys: 5 }),
  ),
})).value;

describe("fuzz: canonical JSON", () => {
  test("round-trips: JSON.parse(canonical(v)) deep-equals v, and canonical is idempotent", () => {
    fc.assert(
      fc.property(canonicalValue, (v) => {
        const text = canonicalJson(v);
        const back = JSON.parse(text);
        assert.deepEqual(back, v === -0 ? 0 : JSON.parse(JSON.stringify(v)));
        assert.equal(canonicalJson(back), text);
        assert.equal(findNonCanonicalNumber(text), null);
      }),
      opts,
    );
  });
  test("object keys come out in code-point order", () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string({ unit: "binary", maxLength: 4 }).filter((s) => s.isWellFormed()), fc.constant(1), { maxKeys: 8 }), (obj) => {
        const keys = Object.keys(JSON.parse(canonicalJson(obj)));
        const byCodePoint = [...keys].sort((a, b) => {
          const ca = [...a].map((c) => c.codePointAt(0)!);
          const cb = [...b].map((c) => c.codePointAt(0)!);
          for (let i = 0; i < Math.min(ca.length, cb.length); i++) if (ca[i] !== cb[i]) return ca[i]! - cb[i]!;
          return ca.length - cb.length;
        });
        // JSON.parse re-orders integer-like keys, so compare the encoder's own key order instead.
        const encoded = canonicalJson(obj);
        const order = Object.keys(obj).sort((a, b) => encoded.indexOf(JSON.stringify(a) + ":") - encoded.indexOf(JSON.stringify(b) + ":"));
        assert.deepEqual(order, byCodePoint);
      }),
      opts,
    );
  });
  test("floats and out-of-range integers are always refused", () => {
    fc.assert(
      fc.property(fc.oneof(fc.double({ noInteger: true }), fc.integer().map((n) => n + 0.5), fc.constantFrom(2 ** 53, -(2 ** 53), 1e300, NaN, Infinity)), (x) => {
        assert.throws(() => canonicalJson({ x }), CanonicalJsonError);
      }),
      opts,
    );
  });
  test("parseStrictJson never throws anything but SyntaxError / CanonicalJsonError on arbitrary text", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.json()), (text) => {
        try {
          parseStrictJson(text);
        } catch (e) {
          assert.ok(e instanceof SyntaxError || e instanceof CanonicalJsonError, String(e));
        }
      }),
      opts,
    );
  });
});

describe("fuzz: base64", () => {
  test("encode/decode round-trip, both alphabets; decoders refuse foreign characters", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
        assert.deepEqual(new Uint8Array(decodeBase64(encodeBase64(bytes))!), bytes);
        assert.deepEqual(new Uint8Array(decodeBase64Url(encodeBase64Url(bytes))!), bytes);
        assert.equal(encodeBase64(bytes).includes("="), false);
      }),
      opts,
    );
    fc.assert(
      fc.property(fc.string(), (s) => {
        const d = decodeBase64(s);
        if (d !== null) assert.match(s, /^[A-Za-z0-9+/]*={0,2}$/);
      }),
      opts,
    );
  });
});

const serverName = fc.oneof(
  fc.domain(),
  fc.tuple(fc.domain(), fc.integer({ min: 1, max: 65535 })).map(([d, p]) => `${d}:${p}`),
  fc.ipV4(),
  fc.tuple(fc.ipV4(), fc.integer({ min: 1, max: 65535 })).map(([d, p]) => `${d}:${p}`),
  fc.ipV6().map((ip) => `[${ip}]`),
);

describe("fuzz: X-Matrix header", () => {
  test("format → parse round-trips for valid parameters", () => {
    fc.assert(
      fc.property(serverName, serverName, fc.stringMatching(/^[a-zA-Z0-9_]{1,10}$/), fc.base64String({ minLength: 4, maxLength: 88 }), (origin, destination, version, sig) => {
        const s = sig.replace(/=+$/, "");
        const header = formatXMatrixHeader({ origin, destination, key: `ed25519:${version}`, sig: s });
        const parsed = parseXMatrixHeader(header);
        assert.ok(parsed.ok, `${header}: ${!parsed.ok ? parsed.error.message : ""}`);
        assert.deepEqual(parsed.auth, { origin, destination, key: `ed25519:${version}`, sig: s });
      }),
      opts,
    );
  });
  test("never throws on arbitrary input; failures are Matrix errors 400/401", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string().map((s) => `X-Matrix ${s}`), fc.array(fc.string(), { maxLength: 3 })), (h) => {
        for (const r of parseXMatrixHeaders(h as string | string[])) {
          if (!r.ok) assert.ok([400, 401].includes(r.error.status));
        }
      }),
      opts,
    );
  });
});

describe("fuzz: server ACL", () => {
  const globToRegex = (glob: string) =>
    new RegExp("^" + [...glob].map((c) => (c === "*" ? ".*" : c === "?" ? "." : c.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))).join("") + "$", "is");
  test("the matcher agrees with an anchored, case-insensitive regex; deny wins over allow", () => {
    fc.assert(
      fc.property(fc.array(fc.stringMatching(/^[a-z0-9.*?-]{1,8}$/), { maxLength: 3 }), fc.array(fc.stringMatching(/^[a-z0-9.*?-]{1,8}$/), { maxLength: 3 }), fc.domain(), (allow, deny, host) => {
        const acl = compileServerAcl({ allow, deny, allow_ip_literals: true });
        const h = host.toLowerCase();
        const expected = !deny.some((g) => globToRegex(g).test(h)) && allow.some((g) => globToRegex(g).test(h));
        assert.equal(acl.allowsServer(host), expected);
        assert.equal(acl.allowsServer(`${host}:8448`), expected, "the port is ignored");
      }),
      opts,
    );
  });
  test("arbitrary content never throws", () => {
    fc.assert(fc.property(fc.anything(), fc.string(), (content, name) => void compileServerAcl(content).allowsServer(name)), opts);
  });
});

describe("fuzz: identifiers", () => {
  test("valid server names parse; user IDs on them round-trip", () => {
    fc.assert(
      fc.property(serverName, fc.stringMatching(/^[a-z0-9._=/+-]{1,20}$/), (name, local) => {
        assert.ok(parseServerName(name), name);
        const u = parseUserId(`@${local}:${name}`, { strict: true });
        assert.ok(u, `@${local}:${name}`);
        assert.equal(u.serverName, name);
      }),
      opts,
    );
  });
  test("parsers never throw on arbitrary strings", () => {
    fc.assert(
      fc.property(fc.string({ unit: "grapheme", maxLength: 300 }), (s) => {
        parseServerName(s);
        parseUserId(s);
        parseUserId(s, { strict: true });
        for (const v of ROOM_VERSIONS.values()) {
          parseRoomId(s, v);
          parseEventId(s, v);
        }
      }),
      opts,
    );
  });
});

describe("fuzz: event validation", () => {
  const v12 = getRoomVersion("12")!;
  const v10 = getRoomVersion("10")!;
  const pduish = fc.record(
    {
      type: fc.oneof(fc.constant("m.room.member"), fc.string()),
      sender: fc.oneof(fc.constant("@a:example.org"), fc.string()),
      room_id: fc.oneof(fc.constant("!r:example.org"), fc.string()),
      state_key: fc.oneof(fc.constant("@a:example.org"), fc.string()),
      content: fc.oneof(fc.constant({ membership: "knock" }), fc.object()),
      origin_server_ts: fc.oneof(fc.nat(), fc.double()),
      depth: fc.oneof(fc.nat(), fc.integer()),
      prev_events: fc.array(fc.oneof(fc.string(), fc.anything()), { maxLength: 3 }),
      auth_events: fc.array(fc.oneof(fc.string(), fc.anything()), { maxLength: 3 }),
      hashes: fc.oneof(fc.record({ sha256: fc.base64String() }), fc.anything()),
      signatures: fc.oneof(fc.constant({ "example.org": { "ed25519:x": "AAAA" } }), fc.anything()),
    },
    { requiredKeys: [] },
  );
  test("validatePduFormat, redaction and checkEvent never throw on arbitrary PDU-like objects; nothing unsigned passes", () => {
    fc.assert(
      fc.property(fc.oneof(pduish, fc.anything()), (pdu) => {
        for (const v of [v10, v12]) {
          const formatError = validatePduFormat(pdu, v);
          if (formatError) assert.ok([400, 413].includes(formatError.status));
          if (typeof pdu === "object" && pdu !== null && !Array.isArray(pdu)) {
            const r = checkEvent(pdu as Record<string, unknown>, v, () => undefined);
            assert.equal(r.signaturesOk, false, "no key is known, so no event can pass");
            try {
              redactEvent(pdu as Record<string, unknown>, v);
            } catch (e) {
              assert.match((e as Error).name, /RedactionError|CanonicalJsonError/);
            }
          }
        }
      }),
      opts,
    );
  });
});
