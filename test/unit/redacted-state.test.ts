// What the auth rules decide from a redacted state event, per room version: since the state used
// for auth, the state cache and state resolution holds redacted copies (RoomStore.getStateEvents,
// as Synapse's event cache serves pruned events), each row is a decision that changes (or not)
// when the room's power levels, server ACL or join rules are redacted.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { getRoomVersion, type RoomVersion } from "../../src/protocol/room-versions.js";
import { redactEvent } from "../../src/protocol/redaction.js";
import { joinRuleAllowsKnock, joinRuleOf, namedLevel } from "../../src/protocol/auth/index.js";
import { checkServerAcl, compileServerAcl } from "../../src/protocol/server-acl.js";

const VERSIONS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"] as const;
const rv = (id: string): RoomVersion => getRoomVersion(id)!;
const stateEvent = (type: string, content: Record<string, unknown>) => ({
  type,
  state_key: "",
  sender: "@admin:gate.example",
  room_id: "!r:gate.example",
  content,
  depth: 5,
  origin_server_ts: 1,
  prev_events: [],
  auth_events: [],
});
const redactedContent = (type: string, content: Record<string, unknown>, v: string) => redactEvent(stateEvent(type, content), rv(v)).content as Record<string, unknown>;
const before11 = (v: string) => Number(v) < 11;

describe("redacted m.room.power_levels", () => {
  const content = { invite: 100, kick: 75, ban: 75, redact: 75, events_default: 10, state_default: 80, users_default: 0, users: { "@mod:gate.example": 100 }, events: { "m.room.name": 90 } };
  for (const v of VERSIONS) {
    const redacted = redactedContent("m.room.power_levels", content, v);
    const cases: { what: string; got: unknown; want: unknown; why: string }[] = [
      {
        what: "invite level",
        got: namedLevel("invite", redacted, rv(v)),
        want: before11(v) ? 0 : 100,
        why: before11(v) ? "v1–v10 redaction drops `invite`: the default (0) applies, anyone may invite" : "v11+ redaction keeps `invite` (MSC2176)",
      },
      { what: "kick level", got: namedLevel("kick", redacted, rv(v)), want: 75, why: "`kick` survives redaction in every version" },
      { what: "ban level", got: namedLevel("ban", redacted, rv(v)), want: 75, why: "`ban` survives redaction in every version" },
      { what: "redact level", got: namedLevel("redact", redacted, rv(v)), want: 75, why: "`redact` survives redaction in every version" },
      { what: "users", got: redacted.users, want: content.users, why: "`users` survives redaction in every version" },
      { what: "events", got: redacted.events, want: content.events, why: "`events` survives redaction in every version" },
    ];
    for (const c of cases) test(`v${v}: ${c.what} → ${JSON.stringify(c.want)} (${c.why})`, () => assert.deepEqual(c.got, c.want));
  }
});

describe("redacted m.room.server_acl", () => {
  const content = { allow: ["*"], deny: ["evil.example"], allow_ip_literals: true };
  for (const v of VERSIONS) {
    const acl = compileServerAcl(redactedContent("m.room.server_acl", content, v));
    const cases: { server: string; allowedBefore: boolean; why: string }[] = [
      { server: "good.example", allowedBefore: true, why: "no key of m.room.server_acl survives redaction: no allow, nobody is allowed (spec: an empty allow denies all)" },
      { server: "evil.example", allowedBefore: false, why: "denied before, and still denied" },
      { server: "127.0.0.1", allowedBefore: true, why: "allow_ip_literals is gone too (it would default to true, but nothing is allowed)" },
    ];
    for (const c of cases) {
      test(`v${v}: ${c.server} is refused once the ACL is redacted (${c.why})`, () => {
        assert.equal(checkServerAcl(compileServerAcl(content), c.server) === null, c.allowedBefore, "before");
        assert.notEqual(checkServerAcl(acl, c.server), null, "after");
      });
    }
  }
});

describe("redacted m.room.join_rules", () => {
  for (const v of VERSIONS) {
    const version = rv(v);
    const knock = redactedContent("m.room.join_rules", { join_rule: "knock" }, v);
    const lookupOf = (content: Record<string, unknown>) => (type: string) => (type === "m.room.join_rules" ? stateEvent(type, content) : undefined);
    test(`v${v}: join_rule "knock" survives redaction; knocking allowed ${version.knock} (join_rule is kept in every version; knocks exist from v7)`, () => {
      assert.equal(joinRuleOf(lookupOf(knock) as never), "knock");
      assert.equal(joinRuleAllowsKnock(joinRuleOf(lookupOf(knock) as never), version), version.knock);
    });
    const restricted = redactedContent("m.room.join_rules", { join_rule: "restricted", allow: [{ type: "m.room_membership", room_id: "!space:gate.example" }] }, v);
    const keepsAllow = Number(v) >= 8;
    test(`v${v}: a restricted rule's allow ${keepsAllow ? "survives" : "is dropped"} (${keepsAllow ? "v8+ redaction keeps `allow`" : "v1–v7 redaction keeps only `join_rule` (restricted rooms need v8)"})`, () => {
      assert.equal(restricted.join_rule, "restricted");
      assert.equal("allow" in restricted, keepsAllow);
    });
  }
});
