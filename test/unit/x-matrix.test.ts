import { test, describe } from "node:test";
import assert from "node:assert/strict";
import {
  authenticateRequest,
  formatXMatrixHeader,
  parseXMatrixHeader,
  parseXMatrixHeaders,
  requestSigningObject,
  requestSignedBytesFromCanonical,
  signRequest,
  signRequestCanonical,
  verifyRequest,
  type XMatrixAuth,
} from "../../src/protocol/x-matrix.js";
import { decodeBase64, encodeBase64 } from "../../src/protocol/base64.js";
import { canonicalJson, parseStrictJson } from "../../src/protocol/canonical-json.js";
import { defaultEd25519, tweetnaclEd25519 } from "../../src/protocol/ed25519.js";
import { makeSigningKey } from "../../src/protocol/signing-key.js";
import type { VerifierLookup } from "../../src/protocol/json-signing.js";
import { loadVectors } from "../support/vectors.js";

interface SigningCase {
  source: string;
  method: string;
  uri: string;
  origin: string;
  destination: string;
  key_id: string;
  body_text: string | null;
  signed_object: Record<string, unknown>;
  signed_bytes: string;
  expected_sig: string;
  expected_header: string;
}
interface ParseCase {
  source: string;
  header: string;
  expected: { origin: string; destination: string | null; key: string; sig: string };
  note?: string;
}
const vectors = loadVectors<{
  key: { seed_base64: string; key_id: string; server_name: string; public_key_base64: string };
  signing_cases: SigningCase[];
  parse_cases: ParseCase[];
  lenient_parse_cases: ParseCase[];
}>("request-auth");

const key = makeSigningKey(vectors.key.key_id, decodeBase64(vectors.key.seed_base64)!);
const ORIGIN = vectors.key.server_name;
const lookup: VerifierLookup = (entity, keyId) =>
  entity === ORIGIN && keyId === key.keyId ? defaultEd25519.verifier(key.publicKey) : undefined;

const content = (c: SigningCase) => (c.body_text === null ? undefined : parseStrictJson(c.body_text));

function parsed(header: string): XMatrixAuth {
  const r = parseXMatrixHeader(header);
  if (!r.ok) assert.fail(`expected ${JSON.stringify(header)} to parse: ${r.error.message}`);
  return r.auth;
}

function parseError(header: string | undefined) {
  const r = parseXMatrixHeader(header);
  if (r.ok) assert.fail(`expected ${JSON.stringify(header)} to be refused, got ${JSON.stringify(r.auth)}`);
  return r.error;
}

describe("X-Matrix: signing vectors (request-auth.json)", () => {
  test("key derives the published public key", () => {
    assert.equal(key.publicKeyBase64, vectors.key.public_key_base64);
  });
  for (const c of vectors.signing_cases) {
    const label = `${c.method} ${c.uri}`;
    test(`signed object and bytes: ${label}`, () => {
      const obj = requestSigningObject({ method: c.method, uri: c.uri, origin: c.origin, destination: c.destination, content: content(c) });
      assert.deepEqual(obj, c.signed_object);
      assert.equal(canonicalJson(obj), c.signed_bytes);
      if (c.body_text === null) assert.ok(!("content" in obj), "no body ⇒ no content key");
    });
    test(`signature: ${label}`, () => {
      const header = signRequest({ method: c.method, uri: c.uri, origin: c.origin, destination: c.destination, content: content(c), key });
      assert.equal(header, `X-Matrix origin="${c.origin}",destination="${c.destination}",key="${c.key_id}",sig="${c.expected_sig}"`);
      assert.equal(parsed(header).sig, c.expected_sig);
    });
    test(`signature over a body given as canonical text: ${label}`, () => {
      const req = { method: c.method, uri: c.uri, origin: c.origin, destination: c.destination };
      const text = c.body_text === null ? undefined : canonicalJson(content(c));
      assert.equal(requestSignedBytesFromCanonical(req, text).toString("utf8"), c.signed_bytes);
      assert.equal(signRequestCanonical({ ...req, key }, text), signRequest({ ...req, content: content(c), key }));
    });
    test(`signature is the same with tweetnacl: ${label}`, () => {
      const k2 = makeSigningKey(c.key_id, decodeBase64(vectors.key.seed_base64)!, tweetnaclEd25519);
      const header = signRequest({ method: c.method, uri: c.uri, origin: c.origin, destination: c.destination, content: content(c), key: k2 });
      assert.equal(parsed(header).sig, c.expected_sig);
    });
    test(`upstream header parses and verifies: ${label}`, () => {
      const auth = parsed(c.expected_header);
      assert.deepEqual(auth, { origin: c.origin, destination: c.destination, key: c.key_id, sig: c.expected_sig });
      const r = verifyRequest(auth, { method: c.method, uri: c.uri, content: content(c) }, lookup, c.destination);
      assert.deepEqual(r, { ok: true, origin: c.origin, keyId: c.key_id });
    });
    test(`our header verifies via authenticateRequest: ${label}`, () => {
      const header = signRequest({ method: c.method, uri: c.uri, origin: c.origin, destination: c.destination, content: content(c), key });
      const r = authenticateRequest(header, { method: c.method, uri: c.uri, content: content(c) }, lookup, c.destination);
      assert.equal(r.ok, true);
    });
  }
});

describe("X-Matrix: parse vectors (request-auth.json)", () => {
  for (const c of vectors.parse_cases) {
    test(`${c.header}`, () => assert.deepEqual(parsed(c.header), c.expected));
  }
});

describe("X-Matrix: lenient parse vectors (request-auth.json)", () => {
  // RFC 9110 allows whitespace around '=' (BWS) and empty list elements, so these are accepted.
  for (const c of vectors.lenient_parse_cases) {
    test(`${JSON.stringify(c.header)}`, () => assert.deepEqual(parsed(c.header), c.expected));
  }
});

describe("X-Matrix: parsing details", () => {
  test("scheme is case-insensitive", () => {
    assert.equal(parsed('x-matrix origin="a.org",key="ed25519:1",sig="s"').origin, "a.org");
    assert.equal(parsed('X-MATRIX origin="a.org",key="ed25519:1",sig="s"').origin, "a.org");
  });
  test("several spaces after the scheme", () => {
    assert.equal(parsed('X-Matrix    origin="a.org",key="ed25519:1",sig="s"').origin, "a.org");
  });
  test("unknown parameters are ignored", () => {
    assert.deepEqual(parsed('X-Matrix origin="a.org",foo="bar",key="ed25519:1",sig="s",x=y'), {
      origin: "a.org",
      destination: null,
      key: "ed25519:1",
      sig: "s",
    });
  });
  test("`signature` is accepted as the spec's name for `sig`", () => {
    assert.equal(parsed('X-Matrix origin="a.org",key="ed25519:1",signature="abc"').sig, "abc");
  });
  test("escaped backslash and quote in a quoted value; commas inside quotes", () => {
    assert.equal(parsed('X-Matrix origin="a.org",key="ed25519:1",sig="a\\\\b\\"c,d"').sig, 'a\\b"c,d');
    assert.equal(parsed('X-Matrix origin="a.org",key="ed25519:1",sig="\\s"').sig, "s");
  });
  test("unquoted IPv6 origin with port is not accepted bare ('[' is not a token character)", () => {
    const err = parseError("X-Matrix origin=[::1]:8448,key=ed25519:1,sig=s");
    assert.equal(err.status, 400);
  });
  test("quoted IPv6 origin with port", () => {
    assert.equal(parsed('X-Matrix origin="[::1]:8448",key="ed25519:1",sig="s"').origin, "[::1]:8448");
  });
  test("unquoted base64 signature with / + =", () => {
    assert.equal(parsed("X-Matrix origin=a.org,key=ed25519:1,sig=ab/c+d==").sig, "ab/c+d==");
  });
  test("trailing comma and leading empty elements", () => {
    assert.equal(parsed('X-Matrix ,, origin="a.org",key="ed25519:1",sig="s",').origin, "a.org");
  });
  test("parseXMatrixHeaders handles one, many and none", () => {
    assert.equal(parseXMatrixHeaders('X-Matrix origin="a.org",key="ed25519:1",sig="s"').length, 1);
    assert.equal(parseXMatrixHeaders(['X-Matrix origin="a.org",key="ed25519:1",sig="s"', 'X-Matrix origin="a.org",key="ed25519:2",sig="t"']).length, 2);
    const none = parseXMatrixHeaders(undefined);
    assert.equal(none.length, 1);
    assert.equal(none[0]!.ok, false);
    assert.equal(parseXMatrixHeaders([])[0]!.ok, false);
  });
});

describe("X-Matrix: rejected headers", () => {
  const unauthorized401: [string | undefined, string][] = [
    [undefined, "missing"],
    ["", "empty"],
    ["   ", "blank"],
    ['Bearer origin="a.org",key="ed25519:1",sig="s"', "wrong scheme"],
    ['X-Matrixx origin="a.org",key="ed25519:1",sig="s"', "scheme with extra letters"],
    ['XMatrix origin="a.org",key="ed25519:1",sig="s"', "misspelt scheme"],
    ['X-Matrix,origin="a.org",key="ed25519:1",sig="s"', "no space after scheme"],
  ];
  for (const [h, why] of unauthorized401) {
    test(`401 M_UNAUTHORIZED: ${why}`, () => {
      const err = parseError(h);
      assert.equal(err.status, 401);
      assert.equal(err.errcode, "M_UNAUTHORIZED");
    });
  }
  const malformed400: [string, string][] = [
    ["X-Matrix", "no parameters"],
    ["X-Matrix ", "only a space"],
    ['X-Matrix key="ed25519:1",sig="s"', "missing origin"],
    ['X-Matrix origin="a.org",sig="s"', "missing key"],
    ['X-Matrix origin="a.org",key="ed25519:1"', "missing sig"],
    ['X-Matrix origin="a.org",origin="b.org",key="ed25519:1",sig="s"', "duplicate origin"],
    ['X-Matrix origin="a.org",ORIGIN="a.org",key="ed25519:1",sig="s"', "duplicate origin differing in case"],
    ['X-Matrix origin="a.org",key="ed25519:1",key="ed25519:2",sig="s"', "duplicate key"],
    ['X-Matrix origin="a.org",key="ed25519:1",sig="s",sig="t"', "duplicate sig"],
    ['X-Matrix origin="a.org",key="ed25519:1",sig="s",signature="t"', "sig and signature together"],
    ['X-Matrix origin="a.org",destination="b",destination="c",key="ed25519:1",sig="s"', "duplicate destination"],
    ['X-Matrix origin="a.org",key="ed25519:1",sig="s",foo=1,foo=2', "duplicate unknown parameter"],
    ['X-Matrix origin="bad_server",key="ed25519:1",sig="s"', "origin not a server name"],
    ['X-Matrix origin="",key="ed25519:1",sig="s"', "empty origin"],
    ['X-Matrix origin="a.org:0",key="ed25519:1",sig="s"', "origin with port 0"],
    ['X-Matrix origin="a.org",key="",sig="s"', "empty key"],
    ['X-Matrix origin="a.org",key="nocolon",sig="s"', "key without algorithm"],
    ['X-Matrix origin="a.org",key="ed25519:1",sig=""', "empty sig"],
    ['X-Matrix origin="a.org",key="ed25519:1",sig="s', "unterminated quote"],
    ['X-Matrix origin="a.org",key="ed25519:1",sig="s\\', "dangling backslash"],
    ['X-Matrix origin="a.org" key="ed25519:1",sig="s"', "missing comma"],
    ['X-Matrix origin="a.org",key="ed25519:1",sig', "parameter without ="],
    ['X-Matrix origin="a.org",key="ed25519:1",sig=', "parameter with empty bare value"],
    ['X-Matrix origin="a.org",key="ed25519:1",="s"', "value without name"],
    ['X-Matrix origin="a.org",key="ed25519:1",sig="s"x', "junk after quoted value"],
    ['X-Matrix origin="a.\u0001org",key="ed25519:1",sig="s"', "control character"],
    ["X-Matrix abc123==", "token68 credentials"],
  ];
  for (const [h, why] of malformed400) {
    test(`400 M_UNAUTHORIZED: ${why}`, () => {
      const err = parseError(h);
      assert.equal(err.status, 400, err.message);
      assert.equal(err.errcode, "M_UNAUTHORIZED");
      assert.match(err.message, /Malformed Authorization header/);
    });
  }
});

describe("X-Matrix: verification failures", () => {
  const put = vectors.signing_cases.find((c) => c.method === "PUT")!;
  const get = vectors.signing_cases.find((c) => c.method === "GET")!;
  const DEST = put.destination;
  const good = () => parsed(put.expected_header);
  const req = () => ({ method: put.method, uri: put.uri, content: content(put) });

  function expectFail(r: ReturnType<typeof verifyRequest>, status: number, pattern?: RegExp) {
    if (r.ok) assert.fail("expected verification to fail");
    assert.equal(r.error.status, status, r.reason);
    assert.equal(r.reason, r.error.message);
    if (pattern) assert.match(r.reason, pattern);
  }

  test("baseline passes", () => assert.equal(verifyRequest(good(), req(), lookup, DEST).ok, true));
  test("wrong destination in header: 401", () => {
    expectFail(verifyRequest(good(), req(), lookup, "other.example"), 401, /addressed to/);
  });
  test("destination absent: verified against our own name", () => {
    const auth = { ...good(), destination: null };
    assert.equal(verifyRequest(auth, req(), lookup, DEST).ok, true);
    // …so a signature made for another destination still fails without the parameter.
    expectFail(verifyRequest(auth, req(), lookup, "other.example"), 401, /Invalid X-Matrix signature/);
  });
  test("tampered uri", () => expectFail(verifyRequest(good(), { ...req(), uri: put.uri + "x" }, lookup, DEST), 401));
  test("tampered query string (percent-encoding is byte-exact)", () => {
    const auth = parsed(get.expected_header);
    const r = { method: "GET", uri: get.uri.replace("%23", "#") };
    expectFail(verifyRequest(auth, r, lookup, get.destination), 401);
    assert.equal(verifyRequest(auth, { method: "GET", uri: get.uri }, lookup, get.destination).ok, true);
  });
  test("tampered method", () => expectFail(verifyRequest(good(), { ...req(), method: "POST" }, lookup, DEST), 401));
  test("lower-case method does not verify an upper-case signature", () =>
    expectFail(verifyRequest(good(), { ...req(), method: "put" }, lookup, DEST), 401));
  test("tampered body", () => {
    const body = structuredClone(content(put)) as Record<string, unknown>;
    body.origin_server_ts = 1;
    expectFail(verifyRequest(good(), { ...req(), content: body }, lookup, DEST), 401);
  });
  test("body added to a bodiless request", () => {
    const auth = parsed(get.expected_header);
    expectFail(verifyRequest(auth, { method: "GET", uri: get.uri, content: {} }, lookup, get.destination), 401);
  });
  test("body removed from a request that had one", () =>
    expectFail(verifyRequest(good(), { method: put.method, uri: put.uri }, lookup, DEST), 401));
  test("JSON null body counts as no body (as Synapse)", () => {
    const auth = parsed(get.expected_header);
    assert.equal(verifyRequest(auth, { method: "GET", uri: get.uri, content: null }, lookup, get.destination).ok, true);
  });
  test("spoofed origin", () => expectFail(verifyRequest({ ...good(), origin: "evil.example" }, req(), lookup, DEST), 401));
  test("unknown key", () => expectFail(verifyRequest({ ...good(), key: "ed25519:other" }, req(), lookup, DEST), 401, /no known key/));
  test("non-ed25519 key", () => expectFail(verifyRequest({ ...good(), key: "curve25519:x" }, req(), lookup, DEST), 401));
  test("bad base64 signature", () => expectFail(verifyRequest({ ...good(), sig: "!!!not base64!!!" }, req(), lookup, DEST), 401));
  test("base64 of the wrong length", () => expectFail(verifyRequest({ ...good(), sig: encodeBase64(new Uint8Array(32)) }, req(), lookup, DEST), 401));
  test("flipped signature bit", () => {
    const bytes = decodeBase64(good().sig)!;
    bytes[0] = bytes[0]! ^ 1;
    expectFail(verifyRequest({ ...good(), sig: encodeBase64(bytes) }, req(), lookup, DEST), 401);
  });
  test("body without canonical form: 400 M_BAD_JSON", () => {
    const r = verifyRequest(good(), { ...req(), content: { a: 1.5 } }, lookup, DEST);
    expectFail(r, 400);
    assert.equal(!r.ok && r.error.errcode, "M_BAD_JSON");
  });
  test("no headers at all", () => expectFail(verifyRequest([], req(), lookup, DEST), 401));
  test("authenticateRequest reports parse errors", () => {
    expectFail(authenticateRequest(undefined, req(), lookup, DEST), 401);
    expectFail(authenticateRequest('X-Matrix origin="a.org"', req(), lookup, DEST), 400);
  });
  test("does not mutate the request content", () => {
    const body = content(put);
    const before = JSON.stringify(body);
    verifyRequest(good(), { ...req(), content: body }, lookup, DEST);
    assert.equal(JSON.stringify(body), before);
  });
});

describe("X-Matrix: several headers (one per key)", () => {
  const key2 = makeSigningKey("ed25519:second", new Uint8Array(32).fill(7));
  const both: VerifierLookup = (entity, keyId) =>
    entity !== "a.example" ? undefined : keyId === key.keyId ? defaultEd25519.verifier(key.publicKey) : keyId === key2.keyId ? defaultEd25519.verifier(key2.publicKey) : undefined;
  const base = { method: "GET", uri: "/_matrix/federation/v1/state/!r:x", origin: "a.example", destination: "b.example" };
  const h1 = parsed(signRequest({ ...base, key }));
  const h2 = parsed(signRequest({ ...base, key: key2 }));
  const onlyFirst: VerifierLookup = (e, k) => (k === key.keyId ? both(e, k) : undefined);

  test("two valid signatures pass", () => assert.equal(verifyRequest([h1, h2], base, both, "b.example").ok, true));
  test("one known valid key suffices when the other key is unknown", () =>
    assert.equal(verifyRequest([h1, h2], base, onlyFirst, "b.example").ok, true));
  test("a known key with a bad signature fails the request", () => {
    const forged = { ...h2, sig: h1.sig };
    assert.equal(verifyRequest([h1, forged], base, both, "b.example").ok, false);
  });
  test("headers with different origins are refused", () => {
    const r = verifyRequest([h1, { ...h2, origin: "c.example" }], base, both, "b.example");
    assert.equal(!r.ok && r.error.status, 400);
  });
  test("two different signatures for one key are refused", () => {
    const r = verifyRequest([h1, { ...h1, sig: h2.sig }], base, both, "b.example");
    assert.equal(!r.ok && r.error.status, 400);
  });
  test("any header naming another destination fails", () => {
    const r = verifyRequest([h1, { ...h2, destination: "c.example" }], base, both, "b.example");
    assert.equal(!r.ok && r.error.status, 401);
  });
});

describe("X-Matrix: building headers", () => {
  test("strict form: one space, lower-case names, all quoted, no spaces around commas", () => {
    assert.equal(
      formatXMatrixHeader({ origin: "a.org", destination: "b.org:8448", key: "ed25519:k", sig: "AbC+/" }),
      'X-Matrix origin="a.org",destination="b.org:8448",key="ed25519:k",sig="AbC+/"',
    );
  });
  test("refuses values that would need escaping", () => {
    for (const bad of ['a"b', "a\\b", "a,b", "a\nb", ""])
      assert.throws(() => formatXMatrixHeader({ origin: bad, destination: "b.org", key: "ed25519:k", sig: "s" }), Error, JSON.stringify(bad));
  });
  test("signRequest refuses lower-case methods, relative URIs and bad server names", () => {
    const ok = { method: "GET", uri: "/_matrix/x", origin: "a.org", destination: "b.org", key };
    assert.doesNotThrow(() => signRequest(ok));
    assert.throws(() => signRequest({ ...ok, method: "get" }));
    assert.throws(() => signRequest({ ...ok, uri: "_matrix/x" }));
    assert.throws(() => signRequest({ ...ok, uri: "https://b.org/_matrix/x" }));
    assert.throws(() => signRequest({ ...ok, origin: "a.org." }));
    assert.throws(() => signRequest({ ...ok, destination: "b.org:0" }));
  });
  test("signed bytes built around a canonical body equal the canonical signed object", () => {
    const base = { method: "PUT", uri: "/_matrix/federation/v1/send/1_2?x=%C3%A9", origin: "a.org:8448", destination: "[::1]:1" };
    const bodies: unknown[] = [
      {},
      [],
      "text",
      0,
      { pdus: [{ b: 1, a: "é\u0000\n\"\\", "\uE000": 2, "\u{1F600}": [true, false, null], "10": -1, "9": 9007199254740991 }], origin: "a.org:8448", edus: [] },
    ];
    const lookupFor = (origin: string): VerifierLookup => (entity, keyId) =>
      entity === origin && keyId === key.keyId ? defaultEd25519.verifier(key.publicKey) : undefined;
    for (const body of bodies) {
      const text = canonicalJson(body);
      assert.equal(requestSignedBytesFromCanonical(base, text).toString("utf8"), canonicalJson(requestSigningObject({ ...base, content: body })), text);
      const header = signRequestCanonical({ ...base, key }, text);
      assert.equal(header, signRequest({ ...base, content: body, key }));
      assert.equal(authenticateRequest(header, { method: base.method, uri: base.uri, content: body }, lookupFor("a.org:8448"), base.destination).ok, true);
    }
    // No body and a JSON null body are both signed without `content` (as requestSigningObject).
    assert.equal(signRequestCanonical({ ...base, key }, undefined), signRequest({ ...base, key }));
    assert.equal(signRequestCanonical({ ...base, key }, "null"), signRequest({ ...base, content: null, key }));
    assert.throws(() => signRequestCanonical({ ...base, method: "put", key }, "{}"));
  });
  test("content {} is signed (PUT with empty body), distinct from no content", () => {
    const base = { method: "PUT", uri: "/_matrix/x", origin: "a.org", destination: "b.org", key };
    const withEmpty = parsed(signRequest({ ...base, content: {} }));
    const without = parsed(signRequest(base));
    assert.notEqual(withEmpty.sig, without.sig);
    assert.deepEqual(requestSigningObject({ ...base, content: {} }).content, {});
  });
  test("round trip with IPv6 origin and destination", () => {
    const base = { method: "GET", uri: "/_matrix/x?a=1&a=2", origin: "[::1]:8448", destination: "[2001:db8::2]" };
    const header = signRequest({ ...base, key });
    const auth = parsed(header);
    assert.equal(auth.origin, "[::1]:8448");
    const lk: VerifierLookup = (e, k) => (e === "[::1]:8448" && k === key.keyId ? defaultEd25519.verifier(key.publicKey) : undefined);
    assert.equal(verifyRequest(auth, base, lk, "[2001:db8::2]").ok, true);
  });
});
