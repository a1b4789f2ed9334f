import { test, describe } from "node:test";
import assert from "node:assert/strict";
import {
  checkContentHash,
  computeContentHash,
  computeEventId,
  eventIdOf,
  eventReferenceOf,
  EventIdError,
  referenceHash,
  roomIdFromCreateEvent,
  withContentHash,
} from "../../src/protocol/event-hashing.js";
import { redactEvent } from "../../src/protocol/redaction.js";
import { getRoomVersion, ROOM_VERSIONS, type RoomVersion } from "../../src/protocol/room-versions.js";
import { canonicalJson } from "../../src/protocol/canonical-json.js";
import { referencedEventIds, serverNameOf } from "../../src/protocol/pdu.js";
import { loadVectors } from "../support/vectors.js";

const vectors = loadVectors("event-signing");

function rv(id: string): RoomVersion {
  const v = getRoomVersion(id);
  assert.ok(v, `room version ${id} known`);
  return v;
}

describe("content hash: spec and upstream vectors", () => {
  for (const [i, c] of (vectors.official as any[]).entries()) {
    test(`official ${i}: ${c.input.type}`, () => {
      assert.equal(computeContentHash(c.input), c.expected_output.hashes.sha256);
      assert.ok(checkContentHash(c.expected_output));
    });
  }
  const gmsl = (vectors.upstream_tests as any[])[0];
  test("gomatrixserverlib historical vector (no content): hash needs no redaction", () => {
    assert.equal(computeContentHash(gmsl.input), gmsl.expected_output.hashes.sha256);
  });
  const synapse = (vectors.upstream_tests as any[]).find((c) => c.expected_event_id_by_room_version);
  test("Synapse test_calculate_event_id event carries its real content hash", () => {
    assert.equal(computeContentHash(synapse.event), synapse.expected_content_hash);
    assert.ok(checkContentHash(synapse.event));
  });
});

describe("event IDs: upstream vectors", () => {
  const synapse = (vectors.upstream_tests as any[]).find((c) => c.expected_event_id_by_room_version);
  for (const [version, expected] of Object.entries<string>(synapse.expected_event_id_by_room_version)) {
    test(`Synapse event, room v${version} → ${expected}`, () => {
      assert.equal(computeEventId(synapse.event, rv(version)), expected);
      // The redacted copy has the same ID: that is what makes IDs stable under redaction.
      assert.equal(computeEventId(redactEvent(synapse.event, rv(version)), rv(version)), expected);
    });
  }
  test("room v1/v2 IDs are not derivable", () => {
    for (const v of ["1", "2"]) assert.throws(() => computeEventId(synapse.event, rv(v)), EventIdError);
  });
});

describe("event IDs and hashes: derived vectors", () => {
  for (const c of vectors.derived as any[]) {
    if (c.expected_event_id_by_room_version) {
      for (const [version, expected] of Object.entries<string>(c.expected_event_id_by_room_version)) {
        test(`Synapse event (derived), room v${version} → ${expected}`, () => {
          assert.equal(computeEventId(c.event, rv(version)), expected);
        });
      }
      continue;
    }
    for (const [version, r] of Object.entries<any>(c.results_by_room_version)) {
      test(`${c.name}, room v${version}: content hash${r.event_id ? " and event ID" : ""}`, () => {
        const hashed = withContentHash(c.input);
        assert.deepEqual(hashed.hashes, r.hashes);
        if (r.event_id) {
          assert.equal(computeEventId(hashed, rv(version)), r.event_id);
          // Signatures never change the ID.
          assert.equal(computeEventId({ ...hashed, signatures: { x: { "ed25519:y": "z" } } }, rv(version)), r.event_id);
        }
        if (r.room_id) assert.equal(roomIdFromCreateEvent(hashed, rv(version)), r.room_id);
      });
    }
  }
});

describe("content hash: behaviour", () => {
  const event = { type: "m.room.message", sender: "@a:d", room_id: "!r:d", content: { body: "hi" }, depth: 1, origin_server_ts: 5, prev_events: [], auth_events: [] };

  test("ignores unsigned, signatures and existing hashes; covers everything else", () => {
    const h = computeContentHash(event);
    assert.equal(computeContentHash({ ...event, unsigned: { age: 1 }, signatures: { d: {} }, hashes: { sha256: "x" } }), h);
    assert.notEqual(computeContentHash({ ...event, origin: "d" }), h);
    assert.notEqual(computeContentHash({ ...event, content: { body: "hi!" } }), h);
  });
  test("withContentHash keeps other hash algorithms and does not mutate", () => {
    const input = { ...event, hashes: { sha256: "old", blake3: "b" } };
    const out = withContentHash(input);
    assert.equal(out.hashes.sha256, computeContentHash(event));
    assert.equal((out.hashes as any).blake3, "b");
    assert.equal(input.hashes.sha256, "old");
  });
  test("checkContentHash: tampered content, missing or garbage hash fail; padded base64 accepted", () => {
    const hashed = withContentHash(event);
    assert.ok(checkContentHash(hashed));
    assert.ok(!checkContentHash({ ...hashed, content: { body: "tampered" } }));
    assert.ok(!checkContentHash(event));
    assert.ok(!checkContentHash({ ...hashed, hashes: { sha256: "!!!" } }));
    assert.ok(!checkContentHash({ ...hashed, hashes: "nope" }));
    assert.ok(checkContentHash({ ...hashed, hashes: { sha256: hashed.hashes.sha256 + "=" } }));
  });
});

describe("event IDs: behaviour", () => {
  const event = withContentHash({ type: "m.room.message", sender: "@a:d", room_id: "!r:d", content: { body: "hi" }, depth: 1, origin_server_ts: 5, prev_events: [], auth_events: [] });

  test("v3 uses standard base64, v4+ URL-safe, all 43 characters after $", () => {
    // Search a few timestamps for a hash whose base64 contains + or /, so the alphabets differ.
    for (let ts = 0; ts < 200; ts++) {
      const e = withContentHash({ ...event, origin_server_ts: ts });
      const v3 = computeEventId(e, rv("3"));
      const v4 = computeEventId(e, rv("4"));
      assert.match(v3, /^\$[A-Za-z0-9+/]{43}$/);
      assert.match(v4, /^\$[A-Za-z0-9_-]{43}$/);
      assert.equal(v4, v3.replaceAll("+", "-").replaceAll("/", "_"));
    }
  });
  test("content changes the ID only through hashes (the ID commits to the content hash)", () => {
    const v = rv("10");
    const id = computeEventId(event, v);
    assert.equal(computeEventId({ ...event, content: { body: "other" } }, v), id, "stale hash ⇒ same redacted form");
    assert.notEqual(computeEventId(withContentHash({ ...event, content: { body: "other" } }), v), id);
  });
  test("a stray event_id in a v3+ event changes the ID", () => {
    assert.notEqual(computeEventId({ ...event, event_id: "$x:d" }, rv("10")), computeEventId(event, rv("10")));
  });
  test("eventIdOf: v1/v2 read event_id, v3+ derive", () => {
    assert.equal(eventIdOf({ ...event, event_id: "$abc:d" }, rv("1")), "$abc:d");
    assert.throws(() => eventIdOf(event, rv("2")), EventIdError);
    assert.equal(eventIdOf(event, rv("11")), computeEventId(event, rv("11")));
  });
  test("reference hash is 32 bytes and redaction-based", () => {
    const h = referenceHash(event, rv("11"));
    assert.equal(h.length, 32);
    assert.deepEqual(referenceHash(redactEvent(event, rv("11")), rv("11")), h);
  });
  test("eventReferenceOf: v1/v2 pair with reference hash, v3+ bare ID", () => {
    const v1 = { ...event, event_id: "$abc:d" };
    const ref = eventReferenceOf(v1, rv("1"));
    assert.ok(Array.isArray(ref));
    assert.equal(ref[0], "$abc:d");
    assert.equal(ref[1].sha256, referenceHash(v1, rv("1")).toString("base64").replace(/=+$/, ""));
    assert.equal(eventReferenceOf(event, rv("9")), computeEventId(event, rv("9")));
  });
  test("never mutates its input", () => {
    const snapshot = canonicalJson(event);
    for (const v of ROOM_VERSIONS.values()) if (v.eventIdFormat !== "server-chosen") computeEventId(event, v);
    assert.equal(canonicalJson(event), snapshot);
  });
});

describe("v12 room IDs", () => {
  const create = (vectors.derived as any[]).find((c) => c.name === "v12-create-event");
  test("only for versions flagged roomIdIsCreateEventHash, only for create events", () => {
    const hashed = withContentHash(create.input);
    assert.throws(() => roomIdFromCreateEvent(hashed, rv("11")), EventIdError);
    assert.throws(() => roomIdFromCreateEvent({ ...hashed, type: "m.room.member" }, rv("12")), EventIdError);
    assert.throws(() => roomIdFromCreateEvent({ ...hashed, state_key: "x" }, rv("12")), EventIdError);
    assert.match(roomIdFromCreateEvent(hashed, rv("12")), /^![A-Za-z0-9_-]{43}$/);
  });
});

describe("pdu helpers", () => {
  test("referencedEventIds enforces the version's reference shape", () => {
    assert.deepEqual(referencedEventIds(["$a", "$b"], rv("3")), ["$a", "$b"]);
    assert.equal(referencedEventIds([["$a:d", { sha256: "x" }]], rv("3")), null);
    assert.deepEqual(referencedEventIds([["$a:d", { sha256: "x" }]], rv("2")), ["$a:d"]);
    assert.equal(referencedEventIds(["$a:d"], rv("1")), null);
    assert.equal(referencedEventIds([["$a:d", {}]], rv("1")), null);
    assert.equal(referencedEventIds("nope", rv("10")), null);
  });
  test("serverNameOf keeps ports and IPv6 literals", () => {
    assert.equal(serverNameOf("@u:localhost:8008"), "localhost:8008");
    assert.equal(serverNameOf("$0:domain"), "domain");
    assert.equal(serverNameOf("@u:[::1]:8448"), "[::1]:8448");
    assert.equal(serverNameOf("@nocolon"), null);
    assert.equal(serverNameOf("@u:"), null);
  });
});
