import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { redactEvent, RedactionError } from "../../src/protocol/redaction.js";
import { getRoomVersion, ROOM_VERSIONS, type RoomVersion } from "../../src/protocol/room-versions.js";
import { canonicalJson } from "../../src/protocol/canonical-json.js";
import { loadVectors } from "../support/vectors.js";

const vectors = loadVectors("redaction");

function rv(id: string): RoomVersion {
  const v = getRoomVersion(id);
  assert.ok(v, `room version ${id} known`);
  return v;
}

describe("redaction: shared vectors", () => {
  for (const [i, c] of (vectors.cases as any[]).entries()) {
    const label = `${c.input.type}${c.derived ? " (derived)" : ""}`;
    test(`case ${i}: v${c.room_version} ${label} — ${String(c.source).split(":")[0]!.slice(0, 40)}`, () => {
      const before = canonicalJson(c.input);
      const out = redactEvent(c.input, rv(c.room_version));
      // The vectors say "compare after canonical JSON encoding": key order is irrelevant.
      assert.equal(canonicalJson(out), canonicalJson(c.expected));
      assert.equal(canonicalJson(c.input), before, "input untouched");
    });
  }
});

const base = {
  room_id: "!r:example.org",
  sender: "@u:example.org",
  origin_server_ts: 1,
  depth: 1,
  prev_events: ["$p"],
  auth_events: ["$a"],
  hashes: { sha256: "h" },
  signatures: { "example.org": { "ed25519:1": "s" } },
  unsigned: { age: 1 },
};

describe("redaction: behaviour", () => {
  test("never mutates the input and returns a deep copy", () => {
    const event = { ...base, type: "m.room.power_levels", state_key: "", content: { users: { "@u:example.org": 100 }, x: 1 } };
    const snapshot = structuredClone(event);
    const out = redactEvent(event, rv("10"));
    assert.deepEqual(event, snapshot);
    ((out.content as Record<string, unknown>).users as Record<string, number>)["@evil:example.org"] = 100;
    (out.prev_events as string[]).push("$q");
    (out.signatures as any)["example.org"]["ed25519:1"] = "changed";
    assert.deepEqual(event, snapshot, "mutating the redacted copy must not reach the input");
  });

  test("drops unsigned and unknown top-level keys in every version", () => {
    for (const v of ROOM_VERSIONS.values()) {
      const out = redactEvent({ ...base, type: "m.room.message", content: { body: "x" }, extra: 1, redacts: "$x" }, v);
      assert.equal(out.unsigned, undefined);
      assert.equal(out.extra, undefined);
      assert.equal(out.redacts, undefined, "top-level redacts is never on the keep-list");
      assert.deepEqual(out.content, {});
    }
  });

  test("origin/membership/prev_state kept until v10, dropped from v11", () => {
    const event = { ...base, type: "X", content: {}, origin: "example.org", membership: "join", prev_state: [] };
    for (const v of ROOM_VERSIONS.values()) {
      const out = redactEvent(event, v);
      const kept = v.redaction.keepOriginMembershipPrevState;
      assert.equal("origin" in out && "membership" in out && "prev_state" in out, kept, `v${v.id}`);
    }
    assert.ok(rv("10").redaction.keepOriginMembershipPrevState);
    assert.ok(!rv("11").redaction.keepOriginMembershipPrevState);
  });

  test("event_id is kept (v1/v2 need it; a stray one in v3+ stays and changes the hash)", () => {
    assert.equal(redactEvent({ ...base, type: "X", content: {}, event_id: "$e:example.org" }, rv("11")).event_id, "$e:example.org");
  });

  test("v12 create event without room_id redacts without inventing one", () => {
    const out = redactEvent({ type: "m.room.create", state_key: "", sender: "@a:d", content: { room_version: "12", x: [1] } }, rv("12"));
    assert.equal("room_id" in out, false);
    assert.deepEqual(out.content, { room_version: "12", x: [1] });
  });

  test("content keys absent from the event are not invented", () => {
    assert.deepEqual(redactEvent({ ...base, type: "m.room.power_levels", content: { ban: 50 } }, rv("11")).content, { ban: 50 });
  });

  test("non-string type redacts content to {}", () => {
    assert.deepEqual(redactEvent({ ...base, type: 5, content: { membership: "join" } }, rv("11")).content, {});
  });

  test("a __proto__ key in content is copied as data, never as a prototype", () => {
    const event = JSON.parse('{"type":"m.room.create","sender":"@a:d","content":{"__proto__":{"polluted":true}}}');
    const out = redactEvent(event, rv("11"));
    assert.equal(Object.getPrototypeOf(out.content), Object.prototype);
    assert.equal(canonicalJson(out.content), '{"__proto__":{"polluted":true}}');
    assert.equal(({} as any).polluted, undefined);
  });
});

describe("redaction: events without content", () => {
  const noContent = { event_id: "$0:domain", origin: "domain", origin_server_ts: 1000000, type: "X", unsigned: { age_ts: 1000000 } };

  test("refused by default (Synapse behaviour; content is a required PDU field)", () => {
    assert.throws(() => redactEvent(noContent, rv("1")), RedactionError);
  });
  test("non-object content is always refused", () => {
    for (const content of [null, [], "x", 1]) {
      assert.throws(() => redactEvent({ ...noContent, content }, rv("1"), { missingContent: "insert-empty" }), RedactionError);
    }
  });
  test("insert-empty (gomatrixserverlib behaviour) adds content: {}", () => {
    const out = redactEvent(noContent, rv("1"), { missingContent: "insert-empty" });
    assert.equal(canonicalJson(out), '{"content":{},"event_id":"$0:domain","origin":"domain","origin_server_ts":1000000,"type":"X"}');
    assert.equal("content" in noContent, false, "input untouched");
  });
});
