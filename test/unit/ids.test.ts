import { test, describe } from "node:test";
import assert from "node:assert/strict";
import {
  checkPduFieldSizes,
  checkPduLimits,
  checkPduSize,
  isValidEventId,
  isValidNewLocalpart,
  isValidRoomAlias,
  isValidRoomId,
  isValidServerName,
  isValidUserId,
  MAX_PDU_BYTES,
  parseEventId,
  parseRoomAlias,
  parseRoomId,
  parseServerName,
  parseUserId,
  pduByteLength,
  pduByteLengthFromContent,
  serverOfEventId,
  serverOfRoomAlias,
  serverOfRoomId,
  serverOfUserId,
  SIZE_LIMITED_PDU_FIELDS,
} from "../../src/protocol/ids.js";
import { MatrixError } from "../../src/protocol/errors.js";
import { contentHashInput } from "../../src/protocol/event-hashing.js";
import { getRoomVersion } from "../../src/protocol/room-versions.js";

const v = (id: string) => getRoomVersion(id)!;
const HASH43 = "P5-6WTYQ_woy6f4nmleE0XqxjtZcyKGza5_gDN-KAdM";
const HASH43_STD = "P5+6WTYQ/woy6f4nmleE0XqxjtZcyKGza5/gDN+KAdM";

describe("server names: valid", () => {
  const cases: [string, { host: string; port?: number; kind: string }][] = [
    ["matrix.org", { host: "matrix.org", kind: "dns" }],
    ["matrix.org:8888", { host: "matrix.org", port: 8888, kind: "dns" }],
    ["1.2.3.4", { host: "1.2.3.4", kind: "ipv4" }],
    ["1.2.3.4:1234", { host: "1.2.3.4", port: 1234, kind: "ipv4" }],
    ["[1234:5678::abcd]", { host: "[1234:5678::abcd]", kind: "ipv6" }],
    ["[1234:5678::abcd]:5678", { host: "[1234:5678::abcd]", port: 5678, kind: "ipv6" }],
    ["[::1]:8448", { host: "[::1]", port: 8448, kind: "ipv6" }],
    ["[::1]", { host: "[::1]", kind: "ipv6" }],
    ["[::ffff:1.2.3.4]", { host: "[::ffff:1.2.3.4]", kind: "ipv6" }],
    ["[2001:DB8::1]", { host: "[2001:DB8::1]", kind: "ipv6" }],
    ["localhost", { host: "localhost", kind: "dns" }],
    ["localhost:8800", { host: "localhost", port: 8800, kind: "dns" }],
    ["EXAMPLE.ORG", { host: "EXAMPLE.ORG", kind: "dns" }],
    ["Example.Org:1", { host: "Example.Org", port: 1, kind: "dns" }],
    ["example.org:65535", { host: "example.org", port: 65535, kind: "dns" }],
    ["example.org:08448", { host: "example.org", port: 8448, kind: "dns" }],
    ["a-b.c-d", { host: "a-b.c-d", kind: "dns" }],
    ["1a.2.3.4", { host: "1a.2.3.4", kind: "dns" }],
    ["1.2.3", { host: "1.2.3", kind: "dns" }],
    ["0.0.0.0", { host: "0.0.0.0", kind: "ipv4" }],
    ["255.255.255.255:443", { host: "255.255.255.255", port: 443, kind: "ipv4" }],
  ];
  for (const [name, expected] of cases) {
    test(`${name} → ${JSON.stringify(expected)}`, () => {
      assert.deepEqual(parseServerName(name), expected);
      assert.ok(isValidServerName(name));
    });
  }
  test("host of exactly 255 characters is accepted, 256 refused", () => {
    const label = "a".repeat(63);
    const host255 = [label, label, label, "a".repeat(63)].join("."); // 63*4 + 3 = 255
    assert.equal(host255.length, 255);
    assert.equal(parseServerName(host255)?.host, host255);
    assert.equal(parseServerName(host255 + ":8448")?.port, 8448);
    assert.equal(parseServerName(host255 + "a"), null);
  });
  test("no port key at all when there is no port", () => {
    assert.ok(!("port" in parseServerName("example.org")!));
  });
});

describe("server names: invalid", () => {
  const bad: [string, string][] = [
    ["", "empty"],
    ["example.org:0", "port 0"],
    ["example.org:65536", "port 65536"],
    ["example.org:123456", "six-digit port"],
    ["example.org:", "empty port"],
    ["example.org:-1", "negative port"],
    ["example.org:+80", "signed port"],
    ["example.org:8a", "non-numeric port"],
    ["example.org:80:80", "two ports"],
    ["example.org.", "trailing dot"],
    [".example.org", "leading dot"],
    ["example..org", "empty label"],
    ["exa_mple.org", "underscore"],
    ["exa mple.org", "space"],
    ["bücher.example", "unicode (IDN must be punycode)"],
    ["例え.jp", "unicode"],
    ["xn--bcher-kva.example:80 ", "trailing space"],
    ["[::1", "unclosed bracket"],
    ["::1", "unbracketed IPv6"],
    ["1:2:3:4", "unbracketed IPv6-ish"],
    ["[::1]8448", "junk after bracket"],
    ["[::1]:", "empty port after IPv6"],
    ["[::1]:0", "IPv6 port 0"],
    ["[::1]:65536", "IPv6 port 65536"],
    ["[]", "empty brackets"],
    ["[:]", "not an address"],
    ["[1:2:3:4:5:6:7:8:9]", "nine groups"],
    ["[fe80::1%eth0]", "zone id"],
    ["[g::1]", "non-hex"],
    ["[1.2.3.4]", "bracketed IPv4"],
    ["256.1.1.1", "IPv4 octet out of range"],
    ["999.1.1.1:80", "IPv4 octet out of range with port"],
    ["example.org/path", "slash"],
    ["user@example.org", "at sign"],
  ];
  for (const [name, why] of bad) {
    test(`${JSON.stringify(name)} (${why})`, () => {
      assert.equal(parseServerName(name), null);
      assert.equal(isValidServerName(name), false);
    });
  }
  test("non-strings are refused without throwing", () => {
    assert.equal(parseServerName(undefined as unknown as string), null);
    assert.equal(parseServerName(42 as unknown as string), null);
  });
});

describe("user IDs", () => {
  test("parses localpart and server, splitting at the first colon", () => {
    const u = parseUserId("@alice:example.org:8448")!;
    assert.equal(u.localpart, "alice");
    assert.equal(u.serverName, "example.org:8448");
    assert.deepEqual(u.server, { host: "example.org", port: 8448, kind: "dns" });
    assert.equal(u.compliant, true);
  });
  test("IPv6 server", () => {
    assert.equal(parseUserId("@a:[::1]:8448")?.server.kind, "ipv6");
    assert.equal(serverOfUserId("@a:[::1]:8448"), "[::1]:8448");
  });
  test("strict grammar accepts a-z 0-9 . _ = - / +", () => {
    assert.ok(isValidUserId("@a.b_c=d-e/f+g09:example.org", { strict: true }));
  });
  for (const lp of ["Alice", "al ice", "al*ice", "é", "", "a#b", "a\u0000b"]) {
    test(`strict grammar refuses localpart ${JSON.stringify(lp)}`, () => {
      assert.equal(isValidUserId(`@${lp}:example.org`, { strict: true }), false);
      assert.equal(isValidNewLocalpart(lp, "example.org"), false);
    });
  }
  test("historical IDs are accepted inbound and flagged when non-compliant", () => {
    assert.equal(parseUserId("@Alice:example.org")?.compliant, true); // printable ASCII: compliant
    assert.equal(parseUserId("@al*ice!:example.org")?.compliant, true);
    assert.equal(parseUserId("@:example.org")?.compliant, false); // empty localpart
    assert.equal(parseUserId("@al ice:example.org")?.compliant, false); // space is outside U+0021–U+007E
    assert.equal(parseUserId("@ünïcode:example.org")?.compliant, false);
    assert.equal(parseUserId("@a\u0001b:example.org")?.compliant, false); // control characters allowed
  });
  test("NUL and lone surrogates are refused even historically", () => {
    assert.equal(parseUserId("@a\u0000b:example.org"), null);
    assert.equal(parseUserId("@a\uD800:example.org"), null);
  });
  test("sigil, colon and server are required", () => {
    for (const id of ["alice:example.org", "#alice:example.org", "@alice", "@alice:", "@alice:bad_server", "@alice:example.org.", ""])
      assert.equal(parseUserId(id), null, id);
  });
  test("255-byte limit counts UTF-8 bytes including sigil and domain", () => {
    const server = "example.org"; // "@" + lp + ":" + server
    const lp = "a".repeat(255 - 2 - server.length);
    assert.ok(isValidUserId(`@${lp}:${server}`, { strict: true }));
    assert.equal(isValidUserId(`@${lp}a:${server}`), false);
    // 2-byte characters: 121 × "é" = 242 bytes, + 13 = 255 bytes but only 134 characters.
    const uni = "é".repeat(121);
    assert.ok(isValidUserId(`@${uni}:${server}`));
    assert.equal(isValidUserId(`@${uni}é:${server}`), false);
    // 4-byte characters (astral) count as 4.
    assert.equal(isValidUserId(`@${"😀".repeat(60)}:${server}`), true); // 240 + 13 = 253
    assert.equal(isValidUserId(`@${"😀".repeat(61)}:${server}`), false); // 257
  });
  test("serverOfUserId is undefined for malformed IDs", () => {
    assert.equal(serverOfUserId("@alice:example.org"), "example.org");
    assert.equal(serverOfUserId("alice"), undefined);
  });
});

describe("room IDs", () => {
  test("pre-v12 form", () => {
    const r = parseRoomId("!abc:example.org")!;
    assert.equal(r.kind, "server");
    assert.equal(r.kind === "server" && r.localpart, "abc");
    assert.equal(serverOfRoomId("!abc:example.org"), "example.org");
  });
  test("v12 form: ! + 43 URL-safe base64 characters, no server", () => {
    assert.deepEqual(parseRoomId(`!${HASH43}`), { kind: "hash", hash: HASH43 });
    assert.equal(serverOfRoomId(`!${HASH43}`), undefined);
  });
  test("room version decides which form is allowed", () => {
    assert.ok(isValidRoomId(`!${HASH43}`, v("12")));
    assert.equal(isValidRoomId("!abc:example.org", v("12")), false);
    assert.ok(isValidRoomId("!abc:example.org", v("11")));
    assert.equal(isValidRoomId(`!${HASH43}`, v("11")), false);
    assert.equal(isValidRoomId(`!${HASH43}`, v("1")), false);
  });
  test("v12 hash must be exactly 43 URL-safe characters", () => {
    assert.equal(isValidRoomId(`!${HASH43.slice(1)}`), false);
    assert.equal(isValidRoomId(`!${HASH43}A`), false);
    assert.equal(isValidRoomId(`!${HASH43_STD}`), false); // '+' and '/' are not URL-safe
    assert.equal(isValidRoomId(`$${HASH43}`), false);
  });
  test("opaque part may hold any code point but ':' and NUL", () => {
    assert.ok(isValidRoomId("!a b\u0001é😀:example.org"));
    assert.equal(isValidRoomId("!a\u0000:example.org"), false);
    assert.equal(isValidRoomId("!abc"), false);
    assert.equal(isValidRoomId("!abc:"), false);
  });
  test("255-byte limit", () => {
    const lp = "a".repeat(255 - 2 - "example.org".length);
    assert.ok(isValidRoomId(`!${lp}:example.org`));
    assert.equal(isValidRoomId(`!${lp}a:example.org`), false);
  });
});

describe("event IDs", () => {
  test("v1–v2: $opaque:server", () => {
    assert.equal(parseEventId("$abc:example.org", v("1"))?.kind, "server");
    assert.equal(serverOfEventId("$abc:example.org"), "example.org");
    assert.equal(isValidEventId(`$${HASH43}`, v("2")), false);
    assert.equal(isValidEventId("$abc", v("1")), false);
  });
  test("v3: standard base64 (+ and / allowed, - and _ not)", () => {
    assert.ok(isValidEventId(`$${HASH43_STD}`, v("3")));
    assert.equal(isValidEventId(`$${HASH43}`, v("3")), false);
    assert.equal(isValidEventId("$abc:example.org", v("3")), false);
  });
  test("v4+: URL-safe base64", () => {
    for (const id of ["4", "6", "10", "11", "12"]) {
      assert.ok(isValidEventId(`$${HASH43}`, v(id)), id);
      assert.equal(isValidEventId(`$${HASH43_STD}`, v(id)), false, id);
      assert.equal(isValidEventId("$abc:example.org", v(id)), false, id);
    }
  });
  test("an ID using neither special character is valid in every hash version", () => {
    const plain = "$" + "A".repeat(43);
    for (const id of ["3", "4", "12"]) assert.ok(isValidEventId(plain, v(id)));
  });
  test("without a room version any format is accepted", () => {
    assert.deepEqual(parseEventId(`$${HASH43}`), { kind: "hash", hash: HASH43 });
    assert.deepEqual(parseEventId(`$${HASH43_STD}`), { kind: "hash", hash: HASH43_STD });
    assert.equal(parseEventId("$abc:example.org")?.kind, "server");
    assert.equal(serverOfEventId(`$${HASH43}`), undefined);
  });
  test("wrong length, padding or sigil", () => {
    assert.equal(isValidEventId(`$${HASH43.slice(2)}`), false);
    assert.equal(isValidEventId(`$${HASH43}=`), false);
    assert.equal(isValidEventId(`!${HASH43}`), false);
    assert.equal(isValidEventId(""), false);
  });
});

describe("room aliases", () => {
  test("parse and server", () => {
    assert.equal(parseRoomAlias("#room:example.org")?.localpart, "room");
    assert.equal(serverOfRoomAlias("#room:example.org:8448"), "example.org:8448");
  });
  test("unicode localparts are allowed; NUL, missing server are not", () => {
    assert.ok(isValidRoomAlias("#café 😀:example.org"));
    assert.equal(isValidRoomAlias("#a\u0000:example.org"), false);
    assert.equal(isValidRoomAlias("#room"), false);
    assert.equal(isValidRoomAlias("@room:example.org"), false);
  });
  test("255-byte limit", () => {
    const lp = "a".repeat(255 - 2 - "example.org".length);
    assert.ok(isValidRoomAlias(`#${lp}:example.org`));
    assert.equal(isValidRoomAlias(`#${lp}a:example.org`), false);
  });
});

describe("PDU size limits", () => {
  const base = {
    type: "m.room.message",
    room_id: "!r:example.org",
    sender: "@a:example.org",
    content: { body: "hi" },
    origin_server_ts: 1,
    depth: 1,
    prev_events: [],
    auth_events: [],
    hashes: { sha256: "x" },
    signatures: { "example.org": { "ed25519:1": "sig" } },
  };

  test("a normal PDU passes", () => {
    assert.equal(checkPduLimits(base), null);
  });
  for (const field of SIZE_LIMITED_PDU_FIELDS) {
    test(`${field}: 255 bytes pass, 256 fail with 413 M_TOO_LARGE`, () => {
      assert.equal(checkPduFieldSizes({ ...base, [field]: "a".repeat(255) }), null);
      const err = checkPduFieldSizes({ ...base, [field]: "a".repeat(256) });
      assert.ok(err instanceof MatrixError);
      assert.equal(err.status, 413);
      assert.equal(err.errcode, "M_TOO_LARGE");
      assert.match(err.message, new RegExp(field));
    });
  }
  test("field limit counts bytes, not characters", () => {
    assert.equal(checkPduFieldSizes({ ...base, state_key: "é".repeat(127) }), null); // 254 bytes
    assert.equal(checkPduFieldSizes({ ...base, state_key: "é".repeat(128) })?.errcode, "M_TOO_LARGE"); // 256 bytes
  });
  test("non-string fields are left to the format validator", () => {
    assert.equal(checkPduFieldSizes({ ...base, state_key: 5 }), null);
  });
  test("whole PDU: exactly 65536 bytes passes, 65537 fails", () => {
    const overhead = pduByteLength({ ...base, content: { body: "" } });
    const exact = { ...base, content: { body: "x".repeat(MAX_PDU_BYTES - overhead) } };
    assert.equal(pduByteLength(exact), MAX_PDU_BYTES);
    assert.equal(checkPduSize(exact), null);
    const over = { ...base, content: { body: "x".repeat(MAX_PDU_BYTES - overhead + 1) } };
    const err = checkPduSize(over)!;
    assert.equal(err.status, 413);
    assert.equal(err.errcode, "M_TOO_LARGE");
    assert.equal(checkPduLimits(over)?.errcode, "M_TOO_LARGE");
  });
  test("signatures count toward the limit", () => {
    const overhead = pduByteLength({ ...base, content: { body: "" } });
    const exact = { ...base, content: { body: "x".repeat(MAX_PDU_BYTES - overhead) } };
    const moreSigs = { ...exact, signatures: { ...exact.signatures, "other.org": { "ed25519:1": "s" } } };
    assert.equal(checkPduSize(moreSigs)?.errcode, "M_TOO_LARGE");
  });
  test("size counts UTF-8 bytes of canonical JSON", () => {
    // "é" is 2 bytes raw in canonical JSON (no \u escaping).
    assert.equal(pduByteLength({ a: "é" }), '{"a":"é"}'.length + 1);
  });
  test("a PDU with no canonical form is 400 M_BAD_JSON, not a crash", () => {
    const err = checkPduSize({ ...base, depth: 1.5 })!;
    assert.equal(err.status, 400);
    assert.equal(err.errcode, "M_BAD_JSON");
  });

  // The inbound verifier measures a PDU from its content-hash input (encoded once for the hash
  // check too) plus the members the hash leaves out: it must give pduByteLength's answer exactly.
  const { hashes: _h, signatures: _s, ...noHashNoSigs } = base;
  const fromContentCases: { why: string; pdu: Record<string, unknown> }[] = [
    { why: "a usual PDU: hashes and signatures added to the content-hash input", pdu: base },
    { why: "unsigned counts too (it is in the PDU as received)", pdu: { ...base, unsigned: { age: 5, "é": ["ü", { x: null }] } } },
    { why: "none of the three: the input is the whole PDU", pdu: noHashNoSigs },
    { why: "only the three: the input is {} (no comma before the first)", pdu: { hashes: base.hashes, signatures: base.signatures } },
    { why: "one member and an empty object", pdu: { signatures: {} } },
    { why: "an empty PDU", pdu: {} },
    { why: "multi-byte and escaped characters in the members", pdu: { ...base, signatures: { "é.org": { "ed25519:1": 'a"\\\n\u0001💥' } } } },
    { why: "the members sort between the other keys, not after them", pdu: { a: 1, i: 2, t: 3, z: 4, hashes: {}, unsigned: {} } },
  ];
  for (const c of fromContentCases) {
    test(`pduByteLengthFromContent = pduByteLength: ${c.why}`, () => {
      assert.equal(pduByteLengthFromContent(c.pdu, contentHashInput(c.pdu).length), pduByteLength(c.pdu));
    });
  }
  test("pduByteLengthFromContent: the 65536-byte limit is exact when the bytes are in unsigned or signatures", () => {
    const overhead = pduByteLength({ ...base, unsigned: { pad: "" } });
    const exact = { ...base, unsigned: { pad: "x".repeat(MAX_PDU_BYTES - overhead) } };
    assert.equal(checkPduSize(exact, contentHashInput(exact).length), null);
    const over = { ...base, unsigned: { pad: "x".repeat(MAX_PDU_BYTES - overhead + 1) } };
    assert.equal(checkPduSize(over, contentHashInput(over).length)?.errcode, "M_TOO_LARGE");
    const bigSig = { ...base, signatures: { "example.org": { "ed25519:1": "s".repeat(MAX_PDU_BYTES) } } };
    assert.equal(checkPduSize(bigSig, contentHashInput(bigSig).length)?.errcode, "M_TOO_LARGE");
  });
  test("pduByteLengthFromContent: a member with no canonical form is 400 M_BAD_JSON with the same message", () => {
    const bad = { ...base, unsigned: { age: 1.5 } };
    const err = checkPduSize(bad, contentHashInput(bad).length)!;
    assert.equal(err.errcode, "M_BAD_JSON");
    assert.equal(err.message, checkPduSize(bad)!.message);
  });
});

describe("isIPv6Address (pure, agrees with node:net except zone IDs)", async () => {
  const { isIPv6 } = await import("node:net");
  const { isIPv6Address } = await import("../../src/protocol/ids.js");
  const cases = ["::1", "::", "1:2:3:4:5:6:7:8", "1::8", "::ffff:1.2.3.4", "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7:8:9", ":::", "1:::2",
    "12345::", "::1.2.3.4", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "1:2:3:4:5:6:7:1.2.3.4", "1::2::3", "g::1", "1:2:3:4:5:6:7",
    "::ffff:256.1.1.1", ":1::", ":1", "1:", "ABCD:ef01::", "1::1.2.3", "1::01.2.3.4"];
  for (const c of cases) {
    test(`${c} → ${isIPv6(c)}`, () => assert.equal(isIPv6Address(c), isIPv6(c)));
  }
  test("zone IDs are refused (not valid in server names)", () => assert.equal(isIPv6Address("fe80::1%eth0"), false));
});
