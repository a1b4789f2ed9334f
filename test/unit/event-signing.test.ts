import { test, describe } from "node:test";
import assert from "node:assert/strict";
import {
  addEventSignature,
  buildEvent,
  checkEvent,
  EventBuildError,
  requiredSigningServers,
  signEvent,
  verifyEventSignatures,
  verifyEventSignedBy,
  type EventTemplate,
} from "../../src/protocol/event-signing.js";
import { computeEventId, checkContentHash } from "../../src/protocol/event-hashing.js";
import { redactEvent, RedactionError } from "../../src/protocol/redaction.js";
import { getRoomVersion, ROOM_VERSIONS, type RoomVersion } from "../../src/protocol/room-versions.js";
import { canonicalJson } from "../../src/protocol/canonical-json.js";
import { decodeBase64 } from "../../src/protocol/base64.js";
import { makeSigningKey, type SigningKey } from "../../src/protocol/signing-key.js";
import { nodeEd25519, tweetnaclEd25519 } from "../../src/protocol/ed25519.js";
import type { VerifierLookup } from "../../src/protocol/json-signing.js";
import { loadVectors } from "../support/vectors.js";

const vectors = loadVectors("event-signing");
const keyVector = loadVectors("signing").key;
const seed = decodeBase64(keyVector.seed_base64)!;
const specKey = makeSigningKey(keyVector.key_id, seed);

function rv(id: string): RoomVersion {
  const v = getRoomVersion(id);
  assert.ok(v, `room version ${id} known`);
  return v;
}

/** Lookup over a fixed set of (server, key) pairs. */
function lookupFor(...entries: [server: string, key: SigningKey][]): VerifierLookup {
  return (entity, keyId) => {
    for (const [server, key] of entries)
      if (server === entity && key.keyId === keyId) return nodeEd25519.verifier(key.publicKey);
    return undefined;
  };
}
const specLookup = lookupFor(["domain", specKey]);

function seedOf(n: number): Uint8Array {
  return new Uint8Array(32).fill(n);
}

/** The bytes actually signed: canonical redacted event without signatures/unsigned. */
function signedBytesOf(event: Record<string, unknown>, v: RoomVersion, missingContent?: "insert-empty"): string {
  const { signatures: _s, unsigned: _u, ...rest } = redactEvent(event, v, missingContent ? { missingContent } : {});
  return canonicalJson(rest);
}

describe("event signing: spec vectors (room v1 rules)", () => {
  for (const [i, c] of (vectors.official as any[]).entries()) {
    test(`official ${i}: ${c.input.type}`, () => {
      const snapshot = canonicalJson(c.input);
      const signed = signEvent(c.input, "domain", specKey, rv("1"));
      assert.deepEqual(signed, c.expected_output);
      assert.equal(signedBytesOf(signed, rv("1")), c.signed_bytes);
      assert.equal(canonicalJson(c.input), snapshot, "input untouched");
      assert.ok(verifyEventSignedBy(c.expected_output, rv("1"), "domain", specLookup).ok);
      assert.ok(checkContentHash(c.expected_output));
      // Only the vector with an event_id is a complete v1 PDU; the other lacks the ID whose
      // server must also sign in v1/v2, so the full check must refuse it.
      const check = checkEvent(c.expected_output, rv("1"), specLookup);
      assert.equal(check.signaturesOk, "event_id" in c.input, check.signatureError);
      assert.equal(check.hashOk, true);
    });
  }
});

describe("event signing: upstream vectors", () => {
  const [gmsl, gmslModified] = vectors.upstream_tests as any[];
  const insertEmpty = { missingContent: "insert-empty" } as const;

  test("gomatrixserverlib historical vector: refused by default (no content)", () => {
    assert.throws(() => signEvent(gmsl.input, "domain", specKey, rv("1")), RedactionError);
    const check = verifyEventSignedBy(gmsl.expected_output, rv("1"), "domain", specLookup);
    assert.deepEqual(check, { ok: false, reason: "event has no content" });
    assert.equal(checkEvent(gmsl.expected_output, rv("1"), specLookup).signaturesOk, false);
  });
  test("gomatrixserverlib historical vector: reproduced with missingContent insert-empty", () => {
    const signed = signEvent(gmsl.input, "domain", specKey, rv("1"), insertEmpty);
    assert.deepEqual(signed, gmsl.expected_output);
    assert.equal("content" in signed, false, "content: {} only exists in the redacted copy");
    assert.equal(signedBytesOf(signed, rv("1"), "insert-empty"), gmsl.signed_bytes);
    assert.ok(verifyEventSignedBy(gmsl.expected_output, rv("1"), "domain", specLookup, insertEmpty).ok);
  });
  test(`gomatrixserverlib: ${gmslModified.note}`, () => {
    assert.equal(gmslModified.kind, "verify-must-fail");
    const result = verifyEventSignedBy(gmslModified.event, rv("1"), "domain", specLookup, insertEmpty);
    assert.deepEqual(result, { ok: false, reason: "bad signature by domain with ed25519:1" });
  });
});

describe("event signing: derived vectors (every listed room version)", () => {
  for (const c of vectors.derived as any[]) {
    if (!c.results_by_room_version) continue;
    for (const [version, r] of Object.entries<any>(c.results_by_room_version)) {
      test(`${c.name}, room v${version}`, () => {
        const v = rv(version);
        const signed = signEvent(c.input, "domain", specKey, v);
        assert.deepEqual(signed.hashes, r.hashes);
        assert.equal(signed.signatures.domain!["ed25519:1"], r.signature);
        assert.equal(signedBytesOf(signed, v), r.signed_bytes);
        assert.deepEqual(signed.unsigned, c.input.unsigned, "unsigned is carried, not signed");
        assert.ok(verifyEventSignedBy(signed, v, "domain", specLookup).ok);
        const check = checkEvent(signed, v, specLookup);
        // v1/v2 also need the event_id server's signature, and these inputs carry no event_id.
        assert.equal(check.signaturesOk, v.eventIdFormat !== "server-chosen", check.signatureError);
        assert.equal(check.hashOk, true);
        if (r.event_id) assert.equal(check.eventId, r.event_id);
      });
    }
  }
});

describe("buildEvent", () => {
  const create = (vectors.derived as any[]).find((c) => c.name === "v12-create-event");
  const knock = (vectors.derived as any[]).find((c) => c.name === "knock-member-event");
  const noClock = () => assert.fail("clock must not be read when origin_server_ts is given");

  test("v12 create event: reproduces the derived vector, its event ID and room ID", () => {
    const r = create.results_by_room_version["12"];
    const built = buildEvent(create.input, { roomVersion: rv("12"), serverName: "domain", key: specKey, clock: noClock });
    assert.equal(built.eventId, r.event_id);
    assert.equal(built.roomId, r.room_id);
    assert.equal(built.pdu.signatures!.domain!["ed25519:1"], r.signature);
  });
  for (const version of ["7", "10", "11", "12"]) {
    test(`knock event, room v${version}: same PDU as signEvent and the vector's event ID (unsigned dropped)`, () => {
      const r = knock.results_by_room_version[version];
      const built = buildEvent(knock.input, { roomVersion: rv(version), serverName: "domain", key: specKey, clock: noClock });
      assert.equal(built.eventId, r.event_id);
      assert.equal(built.roomId, knock.input.room_id);
      assert.equal(built.pdu.unsigned, undefined);
      assert.equal(built.pdu.signatures!.domain!["ed25519:1"], r.signature);
    });
  }
  const template: EventTemplate = {
    type: "m.room.message",
    sender: "@gw:gateway.example",
    room_id: "!r:gateway.example",
    content: { body: "hello" },
    prev_events: ["$p"],
    auth_events: ["$a"],
    depth: 3,
  };
  const opts = (version: string) => ({ roomVersion: rv(version), serverName: "gateway.example", key: specKey, clock: () => 1234 });

  test("uses the injected clock when origin_server_ts is absent", () => {
    const built = buildEvent(template, opts("10"));
    assert.equal(built.pdu.origin_server_ts, 1234);
    assert.equal(built.eventId, computeEventId(built.pdu, rv("10")));
    assert.ok(checkEvent(built.pdu, rv("10"), lookupFor(["gateway.example", specKey])).signaturesOk);
  });
  test("replaces template hashes/signatures and drops unsigned", () => {
    const built = buildEvent(
      { ...template, hashes: { sha256: "bogus" }, signatures: { "evil.example": { "ed25519:x": "y" } }, unsigned: { age: 1 } },
      opts("11"),
    );
    assert.ok(checkContentHash(built.pdu));
    assert.deepEqual(Object.keys(built.pdu.signatures!), ["gateway.example"]);
    assert.equal(built.pdu.unsigned, undefined);
  });
  test("v1/v2 need a server-chosen event_id on our server and pair references", () => {
    const v1 = { ...template, prev_events: [["$p:gateway.example", { sha256: "x" }]], auth_events: [] } as EventTemplate;
    assert.throws(() => buildEvent(v1, opts("1")), EventBuildError);
    assert.throws(() => buildEvent({ ...v1, event_id: "$e:other.example" }, opts("1")), EventBuildError);
    const built = buildEvent({ ...v1, event_id: "$e:gateway.example" }, opts("1"));
    assert.equal(built.eventId, "$e:gateway.example");
    assert.throws(() => buildEvent({ ...template, event_id: "$e:gateway.example" }, opts("1")), EventBuildError, "v3-style refs in v1");
  });
  test("v3+ refuse event_id and pair references", () => {
    assert.throws(() => buildEvent({ ...template, event_id: "$e:gateway.example" }, opts("3")), EventBuildError);
    assert.throws(() => buildEvent({ ...template, prev_events: [["$p:d", { sha256: "x" }]] }, opts("3")), EventBuildError);
  });
  test("room_id: required outside v12 create, forbidden on v12 create", () => {
    const { room_id: _r, ...noRoom } = template;
    assert.throws(() => buildEvent(noRoom as EventTemplate, opts("12")), EventBuildError);
    const createT = { ...template, type: "m.room.create", state_key: "", content: { room_version: "12" } };
    assert.throws(() => buildEvent(createT, opts("12")), EventBuildError);
    const { room_id: _x, ...createNoRoom } = createT;
    assert.throws(() => buildEvent(createNoRoom as EventTemplate, opts("11")), EventBuildError, "v11 create needs room_id");
    assert.match(buildEvent(createNoRoom as EventTemplate, opts("12")).roomId, /^![A-Za-z0-9_-]{43}$/);
  });
  test("refuses senders of other servers, bad depth, non-object content", () => {
    assert.throws(() => buildEvent({ ...template, sender: "@u:other.example" }, opts("10")), EventBuildError);
    assert.throws(() => buildEvent({ ...template, depth: -1 }, opts("10")), EventBuildError);
    assert.throws(() => buildEvent({ ...template, depth: 1.5 }, opts("10")), EventBuildError);
    assert.throws(() => buildEvent({ ...template, content: [] as any }, opts("10")), EventBuildError);
  });
});

describe("event verification", () => {
  const remote = makeSigningKey("ed25519:r1", seedOf(1));
  const resident = makeSigningKey("ed25519:g1", seedOf(2));
  const lookup = lookupFor(["remote.example", remote], ["gateway.example", resident]);
  const base = {
    type: "m.room.message",
    sender: "@u:remote.example",
    room_id: "!r:gateway.example",
    content: { body: "hello" },
    prev_events: ["$p"],
    auth_events: ["$a"],
    depth: 3,
    origin_server_ts: 1000,
  };

  test("checkEvent (redacts and encodes once for signatures and event ID) answers as the separate checks do: table, every version", () => {
    const cases: { why: string; event: (v: RoomVersion) => Record<string, unknown> }[] = [
      { why: "a good event", event: (v) => signEvent({ ...base, ...(v.eventIdFormat === "server-chosen" ? { event_id: "$e:remote.example" } : {}) }, "remote.example", remote, v) },
      { why: "tampered content (hash bad, signatures fine)", event: (v) => ({ ...signEvent({ ...base, ...(v.eventIdFormat === "server-chosen" ? { event_id: "$e:remote.example" } : {}) }, "remote.example", remote, v), content: { body: "changed" } }) },
      { why: "a tampered protected field (signature bad, another event ID)", event: (v) => ({ ...signEvent({ ...base, ...(v.eventIdFormat === "server-chosen" ? { event_id: "$e:remote.example" } : {}) }, "remote.example", remote, v), depth: 4 }) },
      { why: "signed by an unknown key", event: (v) => signEvent({ ...base, ...(v.eventIdFormat === "server-chosen" ? { event_id: "$e:remote.example" } : {}) }, "remote.example", makeSigningKey("ed25519:other", seedOf(9)), v) },
      { why: "no content: redaction refuses it, so no signature check and no event ID", event: (v) => { const { content: _c, ...rest } = signEvent({ ...base, ...(v.eventIdFormat === "server-chosen" ? { event_id: "$e:remote.example" } : {}) }, "remote.example", remote, v); return rest; } },
      { why: "a float in content (not canonical JSON): hash and event ID fail", event: (v) => ({ ...signEvent({ ...base, ...(v.eventIdFormat === "server-chosen" ? { event_id: "$e:remote.example" } : {}) }, "remote.example", remote, v), content: { body: "x", n: 1.5 } }) },
    ];
    for (const [, v] of ROOM_VERSIONS) {
      for (const c of cases) {
        const event = c.event(v);
        const got = checkEvent(event, v, lookup);
        const sig = verifyEventSignatures(event, v, lookup);
        let eventId: string | null = null;
        try {
          eventId = v.eventIdFormat === "server-chosen" ? (event.event_id as string) : computeEventId(event, v);
        } catch {
          eventId = null;
        }
        const why = `v${v.id}: ${c.why}`;
        assert.equal(got.signaturesOk, sig.ok, why);
        assert.equal(got.signatureError, sig.ok ? undefined : sig.reason, why);
        assert.equal(got.eventId, eventId, why);
      }
    }
  });

  test("tampered content: signatures still OK, hash bad, redacted copy offered (every version)", () => {
    for (const v of ROOM_VERSIONS.values()) {
      const e = v.eventIdFormat === "server-chosen" ? { ...base, event_id: "$e:remote.example", prev_events: [], auth_events: [] } : base;
      const signed = signEvent(e, "remote.example", remote, v);
      const check = checkEvent({ ...signed, content: { body: "tampered" } }, v, lookup);
      assert.equal(check.signaturesOk, true, `v${v.id}`);
      assert.equal(check.hashOk, false);
      assert.deepEqual(check.redactedIfHashBad, redactEvent(signed, v));
      if (v.eventIdFormat !== "server-chosen") assert.equal(check.eventId, computeEventId(signed, v), "ID survives tampering of content");
    }
  });
  test("tampered protected fields fail the signature", () => {
    const v = rv("11");
    const signed = signEvent(base, "remote.example", remote, v);
    for (const patch of [{ type: "m.room.other" }, { origin_server_ts: 1001 }, { depth: 4 }, { prev_events: ["$q"] }, { hashes: { sha256: "AAAA" } }]) {
      const check = checkEvent({ ...signed, ...patch }, v, lookup);
      assert.equal(check.signaturesOk, false, JSON.stringify(patch));
    }
    const badSig = structuredClone(signed);
    badSig.signatures["remote.example"]!["ed25519:r1"] = "A".repeat(86);
    assert.equal(checkEvent(badSig, v, lookup).signaturesOk, false);
  });
  test("a redacted copy of a valid event still verifies", () => {
    const v = rv("10");
    const signed = signEvent(base, "remote.example", remote, v);
    const check = checkEvent(redactEvent(signed, v), v, lookup);
    assert.ok(check.signaturesOk);
    assert.equal(check.hashOk, false);
  });
  test("unknown key, unknown signer, missing signatures", () => {
    const v = rv("10");
    const signed = signEvent(base, "remote.example", remote, v);
    const r1 = verifyEventSignatures(signed, v, () => undefined);
    assert.deepEqual(r1, { ok: false, reason: "no known key for remote.example" });
    const byOther = signEvent(base, "gateway.example", resident, v);
    assert.equal(verifyEventSignatures(byOther, v, lookup).ok, false, "signed by someone other than the sender's server");
    const { signatures: _s, ...unsignedEvent } = signed;
    assert.equal(verifyEventSignatures(unsignedEvent, v, lookup).ok, false);
  });
  test("co-signing adds a signature, keeps hashes and event ID", () => {
    const v = rv("12");
    const signed = signEvent(base, "remote.example", remote, v);
    const cosigned = addEventSignature(signed, "gateway.example", resident, v);
    assert.deepEqual(Object.keys(cosigned.signatures).sort(), ["gateway.example", "remote.example"]);
    assert.equal(cosigned.hashes, signed.hashes);
    assert.equal(computeEventId(cosigned, v), computeEventId(signed, v));
    assert.ok(verifyEventSignatures(cosigned, v, lookupFor(["gateway.example", resident])).ok === false, "sender's server still required");
    assert.ok(verifyEventSignatures(cosigned, v, lookup).ok);
    assert.equal(Object.keys(signed.signatures).length, 1, "input untouched");
  });
  test("signing with a second key of the same server keeps the first", () => {
    const v = rv("11");
    const second = makeSigningKey("ed25519:r2", seedOf(3));
    const twice = signEvent(signEvent(base, "remote.example", remote, v), "remote.example", second, v);
    assert.deepEqual(Object.keys(twice.signatures["remote.example"]!).sort(), ["ed25519:r1", "ed25519:r2"]);
    assert.ok(verifyEventSignatures(twice, v, lookupFor(["remote.example", second])).ok);
    assert.ok(verifyEventSignatures(twice, v, lookup).ok);
  });
  test("v1/v2 require the event_id server's signature too", () => {
    const v = rv("2");
    const event = { ...base, event_id: "$e:gateway.example", prev_events: [], auth_events: [] };
    assert.deepEqual(requiredSigningServers(event, v), { ok: true, servers: ["remote.example", "gateway.example"] });
    const onlySender = signEvent(event, "remote.example", remote, v);
    assert.equal(verifyEventSignatures(onlySender, v, lookup).ok, false);
    assert.ok(verifyEventSignatures(addEventSignature(onlySender, "gateway.example", resident, v), v, lookup).ok);
    assert.deepEqual(requiredSigningServers(event, rv("3")), { ok: true, servers: ["remote.example"] });
  });
  test("restricted joins (v8+) require the authorising server's signature", () => {
    const join = {
      ...base,
      type: "m.room.member",
      state_key: "@u:remote.example",
      content: { membership: "join", join_authorised_via_users_server: "@admin:gateway.example" },
    };
    assert.deepEqual(requiredSigningServers(join, rv("8")), { ok: true, servers: ["remote.example", "gateway.example"] });
    assert.deepEqual(requiredSigningServers(join, rv("7")), { ok: true, servers: ["remote.example"] });
    const v = rv("10");
    const signed = signEvent(join, "remote.example", remote, v);
    assert.equal(verifyEventSignatures(signed, v, lookup).ok, false);
    assert.ok(verifyEventSignatures(addEventSignature(signed, "gateway.example", resident, v), v, lookup).ok);
  });
  test("third-party-invite invites are exempt from the sender's-server signature (spec)", () => {
    const invite = {
      ...base,
      type: "m.room.member",
      state_key: "@bob:other.example",
      content: { membership: "invite", third_party_invite: { signed: { mxid: "@bob:other.example", token: "t" } } },
    };
    assert.deepEqual(requiredSigningServers(invite, rv("11")), { ok: true, servers: [] });
    const plain = { ...invite, content: { membership: "invite" } };
    assert.deepEqual(requiredSigningServers(plain, rv("11")), { ok: true, servers: ["remote.example"] });
  });
  test("malformed events give a reason, never throw", () => {
    const v = rv("10");
    for (const bad of [{ ...base, sender: 5 }, { ...base, sender: "@nocolon" }, { ...base, content: undefined }, { ...base, depth: 1.5 }]) {
      const check = checkEvent(bad, v, lookup);
      assert.equal(check.signaturesOk, false);
      assert.ok(check.signatureError, JSON.stringify(bad));
    }
    assert.equal(checkEvent({ ...base, content: undefined }, v, lookup).eventId, null);
    assert.equal(checkEvent(base, rv("1"), lookup).eventId, null, "v1 without event_id");
  });
  test("node:crypto and tweetnacl keys give byte-identical event signatures", () => {
    const v = rv("12");
    const a = signEvent(base, "remote.example", makeSigningKey("ed25519:r1", seedOf(1), nodeEd25519), v);
    const b = signEvent(base, "remote.example", makeSigningKey("ed25519:r1", seedOf(1), tweetnaclEd25519), v);
    assert.deepEqual(a, b);
    const naclLookup: VerifierLookup = (e, k) => (e === "remote.example" && k === "ed25519:r1" ? tweetnaclEd25519.verifier(remote.publicKey) : undefined);
    assert.ok(verifyEventSignatures(a, v, naclLookup).ok);
  });
});
