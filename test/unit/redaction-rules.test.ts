// When an accepted m.room.redaction applies (src/protocol/redaction-rules.ts), where its target
// is per room version, and what is recorded with it.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { redactionApplies, redactionRecordOf, redactionTarget, senderHasRedactLevel } from "../../src/protocol/redaction-rules.js";
import { getRoomVersion, type RoomVersion } from "../../src/protocol/room-versions.js";

const v = (id: string): RoomVersion => getRoomVersion(id)!;
const ROOM = "!r:hs.example";

describe("redactionTarget: top level in v1–v10, content from v11", () => {
  const cases: [string, Record<string, unknown>, string | undefined, string][] = [
    ["10", { redacts: "$top", content: { redacts: "$in" } }, "$top", "v10 reads the top-level field"],
    ["10", { content: { redacts: "$in" } }, undefined, "v10 ignores content.redacts"],
    ["11", { redacts: "$top", content: { redacts: "$in" } }, "$in", "v11 (MSC2174) reads content.redacts"],
    ["11", { redacts: "$top", content: {} }, undefined, "v11 ignores the top-level field"],
    ["12", { content: { redacts: 5 } }, undefined, "not a string: no target"],
    ["1", { redacts: "$x:hs" }, "$x:hs", "v1 top level"],
  ];
  for (const [version, fields, expected, why] of cases) {
    test(`v${version} ${JSON.stringify(fields)} → ${expected} (${why})`, () => {
      assert.equal(redactionTarget({ type: "m.room.redaction", sender: "@a:hs", ...fields }, v(version)), expected);
    });
  }
});

describe("redactionApplies", () => {
  const redaction = (sender: string, room = ROOM) => ({ type: "m.room.redaction", sender, room_id: room });
  const target = (sender: string, type = "m.room.message", room = ROOM) => ({ type, sender, room_id: room });
  const cases: [string, ReturnType<typeof redaction>, ReturnType<typeof target>, boolean, boolean, string][] = [
    ["10", redaction("@mod:a"), target("@u:b"), true, true, "v3+: the sender had the redact level"],
    ["10", redaction("@other:b"), target("@u:b"), false, true, "v3+: same server as the target's sender"],
    ["12", redaction("@u:b"), target("@u:b"), false, true, "v3+: own event"],
    ["10", redaction("@x:a"), target("@u:b"), false, false, "v3+: neither redact level nor same server"],
    ["12", redaction("@x:a"), target("@u:b"), false, false, "v12: neither"],
    ["1", redaction("@x:a"), target("@u:b"), false, true, "v1: auth rule 11 already decided (the event was accepted)"],
    ["10", redaction("@mod:a"), target("@u:b", "m.room.create"), true, false, "create events are never redacted (Synapse)"],
    ["10", redaction("@u:b", "!other:hs"), target("@u:b"), true, false, "a redaction in another room"],
  ];
  for (const [version, r, t, level, expected, why] of cases) {
    test(`v${version} ${r.sender} redacts ${t.type} of ${t.sender}${level ? " (redact level)" : ""} → ${expected} (${why})`, () => {
      assert.equal(redactionApplies(r, t, level, v(version)).applies, expected);
    });
  }
});

describe("senderHasRedactLevel", () => {
  const pl = { type: "m.room.power_levels", sender: "@c:hs", state_key: "", content: { users: { "@mod:hs": 50, "@c:hs": 100 }, redact: 50 } };
  const create = { type: "m.room.create", sender: "@c:hs", state_key: "", content: { creator: "@c:hs" } };
  const lookup = (type: string) => (type === "m.room.power_levels" ? pl : type === "m.room.create" ? create : undefined);
  test("power ≥ redact level: yes; below: no; v12 creators: yes", () => {
    assert.equal(senderHasRedactLevel("@mod:hs", lookup, v("10")), true);
    assert.equal(senderHasRedactLevel("@u:hs", lookup, v("10")), false);
    assert.equal(senderHasRedactLevel("@c:hs", () => (undefined), v("10")), false, "no create, no power levels: 0 < 50");
    assert.equal(senderHasRedactLevel("@c:hs", (t) => (t === "m.room.create" ? create : undefined), v("12")), true, "v12 creator has infinite power");
  });
});

describe("redactionRecordOf: what the persist script records", () => {
  const pl = { type: "m.room.power_levels", sender: "@c:hs", state_key: "", content: { users: { "@mod:hs": 50 } } };
  const lookup = (type: string) => (type === "m.room.power_levels" ? pl : undefined);
  const cases: [string, Record<string, unknown>, ReturnType<typeof redactionRecordOf>, string][] = [
    ["12", { type: "m.room.redaction", sender: "@mod:hs", content: { redacts: "$t" } }, { target: "$t", senderHasRedactLevel: true }, "a moderator's redaction (redact defaults to 50)"],
    ["12", { type: "m.room.redaction", sender: "@u:hs", content: { redacts: "$t" } }, { target: "$t", senderHasRedactLevel: false }, "a user's redaction: recorded, applies only to their server's events"],
    ["10", { type: "m.room.redaction", sender: "@u:hs", redacts: "$t", content: {} }, { target: "$t", senderHasRedactLevel: false }, "v10: top-level redacts"],
    ["12", { type: "m.room.redaction", sender: "@u:hs", content: {} }, undefined, "no target: nothing to record"],
    ["12", { type: "m.room.redaction", sender: "@u:hs", state_key: "", content: { redacts: "$t" } }, undefined, "a state event of that type is not a redaction"],
    ["12", { type: "m.room.message", sender: "@u:hs", content: { redacts: "$t" } }, undefined, "not a redaction"],
  ];
  for (const [version, ev, expected, why] of cases) {
    test(`v${version} ${JSON.stringify(ev)} → ${JSON.stringify(expected)} (${why})`, () => {
      assert.deepEqual(redactionRecordOf(ev as { type: string; sender: string }, lookup, v(version)), expected);
    });
  }
});
