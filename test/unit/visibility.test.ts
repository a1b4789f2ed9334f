// History visibility decisions (src/protocol/visibility.ts): every value × every membership a
// server's or a user's member can have at the event (join, invite, leave, ban, knock, none), the
// boundary rules for a user's own membership events and for history_visibility events; and the
// sweep that finds the state at each event (rooms/history.ts visibilityAtStreams).
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { historyVisibilityOf, membershipOfContent, serverVerdict, userMaySee, type HistoryVisibility, type Membership } from "../../src/protocol/visibility.js";
import { visibilityAtStreams } from "../../src/rooms/history.js";
import type { VisibilityChange } from "../../src/rooms/history.js";

type M = Membership | undefined;
const show = (m: M) => m ?? "none";

describe("historyVisibilityOf / membershipOfContent", () => {
  const cases: [unknown, HistoryVisibility, string][] = [
    [{ history_visibility: "world_readable" }, "world_readable", "a known value is kept"],
    [{ history_visibility: "shared" }, "shared", "a known value is kept"],
    [{ history_visibility: "invited" }, "invited", "a known value is kept"],
    [{ history_visibility: "joined" }, "joined", "a known value is kept"],
    [{ history_visibility: "everyone" }, "shared", "spec: a value not understood counts as shared"],
    [{ history_visibility: 1 }, "shared", "spec: a non-string value is not understood: shared"],
    [{}, "shared", "spec: no value is shared"],
    [undefined, "shared", "no history_visibility event at all: shared"],
  ];
  for (const [content, expected, why] of cases) {
    test(`${JSON.stringify(content)} → ${expected} (${why})`, () => assert.equal(historyVisibilityOf(content), expected));
  }
  test("membershipOfContent keeps the five memberships and nothing else", () => {
    for (const m of ["join", "invite", "leave", "ban", "knock"]) assert.equal(membershipOfContent({ membership: m }), m);
    assert.equal(membershipOfContent({ membership: "joined" }), undefined);
    assert.equal(membershipOfContent({}), undefined);
  });
});

describe("servers: full or redacted (Synapse event_visible_to_server)", () => {
  // [visibility, the membership of the server's one user at the event (after it), verdict, why]
  const cases: [HistoryVisibility, M, "full" | "redacted", string][] = [
    ["world_readable", "join", "full", "world_readable: every server"],
    ["world_readable", "invite", "full", "world_readable: every server"],
    ["world_readable", "leave", "full", "world_readable: every server"],
    ["world_readable", "ban", "full", "world_readable: every server"],
    ["world_readable", "knock", "full", "world_readable: every server"],
    ["world_readable", undefined, "full", "world_readable: even a server with no member"],
    ["shared", "join", "full", "shared: every server in the room"],
    ["shared", "invite", "full", "shared: every server in the room (it joined later: it asks now)"],
    ["shared", "leave", "full", "shared: a server that left and rejoined sees what it missed"],
    ["shared", "ban", "full", "shared: membership at the event does not matter"],
    ["shared", "knock", "full", "shared: membership at the event does not matter"],
    ["shared", undefined, "full", "shared: history before the server's first member joined is shared"],
    ["invited", "join", "full", "invited: a joined user sees it"],
    ["invited", "invite", "full", "invited: an invited user sees it (from the invite on)"],
    ["invited", "leave", "redacted", "invited: a user who had left does not"],
    ["invited", "ban", "redacted", "invited: a banned user does not"],
    ["invited", "knock", "redacted", "invited: a knock is not an invite"],
    ["invited", undefined, "redacted", "invited: before the server's user was invited"],
    ["joined", "join", "full", "joined: a joined user sees it"],
    ["joined", "invite", "redacted", "joined: an invite is not enough"],
    ["joined", "leave", "redacted", "joined: a user who had left does not"],
    ["joined", "ban", "redacted", "joined: a banned user does not"],
    ["joined", "knock", "redacted", "joined: a knocking user does not"],
    ["joined", undefined, "redacted", "joined: the leak of issue 14 — before the server's first member joined"],
  ];
  for (const [visibility, m, expected, why] of cases) {
    test(`${visibility} × ${show(m)} → ${expected} (${why})`, () => {
      assert.equal(serverVerdict({ visibility, memberships: m === undefined ? [] : [m] }), expected);
    });
  }

  const multi: [HistoryVisibility, M[], "full" | "redacted", string][] = [
    ["joined", ["leave", "ban", "join"], "full", "any one joined user of the server is enough"],
    ["invited", ["knock", "invite"], "full", "any one invited user is enough under invited"],
    ["joined", ["invite", "knock", "leave"], "redacted", "no joined user under joined"],
    ["invited", [undefined, "leave"], "redacted", "no joined or invited user under invited"],
  ];
  for (const [visibility, ms, expected, why] of multi) {
    test(`${visibility} × [${ms.map(show).join(", ")}] → ${expected} (${why})`, () => {
      assert.equal(serverVerdict({ visibility, memberships: ms }), expected);
    });
  }
});

describe("users: an event that is not their own membership (spec algorithm)", () => {
  // [visibility, membership at the event, joined at or after the event, may see, why]
  const cases: [HistoryVisibility, M, boolean, boolean, string][] = [
    ["world_readable", "join", false, true, "rule 1"],
    ["world_readable", "invite", false, true, "rule 1"],
    ["world_readable", "leave", false, true, "rule 1"],
    ["world_readable", "ban", false, true, "rule 1: even a banned user (world_readable is for anyone)"],
    ["world_readable", "knock", false, true, "rule 1"],
    ["world_readable", undefined, false, true, "rule 1: a user who never joined"],
    ["shared", "join", false, true, "rule 2: joined at the event"],
    ["shared", "invite", true, true, "rule 3: invited then, joined later"],
    ["shared", "invite", false, false, "rule 3 needs a join after the event; invited is not enough under shared"],
    ["shared", "leave", true, true, "rule 3: left then, joined again later"],
    ["shared", "leave", false, false, "rule 5: sent after the user left for good"],
    ["shared", "ban", true, true, "rule 3: banned then, unbanned and joined later"],
    ["shared", "ban", false, false, "rule 5: banned and never back"],
    ["shared", "knock", true, true, "rule 3: knocking then, joined later"],
    ["shared", "knock", false, false, "rule 5: a knock alone shows nothing"],
    ["shared", undefined, true, true, "rule 3: history before the user's first join"],
    ["shared", undefined, false, false, "rule 5: never joined (peeking is not allowed under shared)"],
    ["invited", "join", false, true, "rule 2"],
    ["invited", "invite", false, true, "rule 4: invited at the event"],
    ["invited", "leave", true, false, "rule 5: a later join does not open invited history"],
    ["invited", "ban", true, false, "rule 5"],
    ["invited", "knock", true, false, "rule 5: a knock is not an invite"],
    ["invited", undefined, true, false, "rule 5: before the invite"],
    ["joined", "join", false, true, "rule 2"],
    ["joined", "invite", true, false, "rule 5: joined history starts at the join"],
    ["joined", "leave", true, false, "rule 5"],
    ["joined", "ban", true, false, "rule 5"],
    ["joined", "knock", true, false, "rule 5"],
    ["joined", undefined, true, false, "rule 5: before the user's first join"],
  ];
  for (const [visibility, membership, joinedLater, expected, why] of cases) {
    test(`${visibility} × ${show(membership)}${joinedLater ? " (joined later)" : ""} → ${expected ? "visible" : "hidden"} (${why})`, () => {
      assert.equal(userMaySee({ visibility, membership, joinedLater }), expected);
    });
  }
});

describe("users: their own membership events (before or after may allow)", () => {
  // [visibility, membership before → after the event, joined later, may see, why]
  const cases: [HistoryVisibility, M, M, boolean, boolean, string][] = [
    ["joined", undefined, "join", true, true, "a user always sees their own join (after: join)"],
    ["joined", "invite", "join", true, true, "accepting an invite: after is join"],
    ["joined", "knock", "join", true, true, "a knock then a join: after is join"],
    ["joined", "join", "leave", false, true, "leaving: before was join"],
    ["joined", "join", "ban", false, true, "being banned while joined: before was join"],
    ["joined", "invite", "leave", false, true, "rejecting an invite: the leave that ends an invite is shown (Synapse)"],
    ["joined", undefined, "invite", false, false, "an invite under joined: neither before nor after allows"],
    ["invited", undefined, "invite", false, true, "an invite under invited: after is invite (rule 4)"],
    ["invited", "knock", "invite", false, true, "an accepted knock under invited: after is invite"],
    ["joined", undefined, "knock", false, false, "a knock under joined: not shown (the knock is seen through the admin API)"],
    ["invited", undefined, "knock", false, false, "a knock under invited: not an invite"],
    ["shared", undefined, "knock", false, false, "a knock under shared without a later join"],
    ["shared", undefined, "knock", true, true, "a knock under shared, joined later (rule 3)"],
    ["world_readable", undefined, "knock", false, true, "world_readable: anyone"],
    ["joined", "knock", "leave", false, false, "rescinding a knock under joined: neither knock nor leave allows"],
    ["joined", "leave", "ban", false, false, "banned after leaving: neither allows"],
    ["joined", "ban", "leave", false, false, "unbanned: neither allows"],
    ["invited", "invite", "leave", false, true, "rejecting an invite under invited: before was invite"],
    ["joined", "join", "join", false, true, "a profile change while joined"],
  ];
  for (const [visibility, before, after, joinedLater, expected, why] of cases) {
    test(`${visibility}: own ${show(before)} → ${show(after)}${joinedLater ? " (joined later)" : ""} → ${expected ? "visible" : "hidden"} (${why})`, () => {
      assert.equal(userMaySee({ visibility, membership: after, ownMemberEvent: { membershipBefore: before }, joinedLater }), expected);
    });
  }
});

describe("users: history_visibility events (before or after may allow)", () => {
  // [visibility before → after, the user's membership, joined later, may see, why]
  const cases: [HistoryVisibility, HistoryVisibility, M, boolean, boolean, string][] = [
    ["world_readable", "joined", undefined, false, true, "spec example: world_readable → joined is seen by a non-member"],
    ["joined", "world_readable", undefined, false, true, "spec example: joined → world_readable is seen by a non-member"],
    ["shared", "joined", undefined, true, true, "before was shared and the user joined later"],
    ["joined", "shared", "invite", true, true, "after is shared and the user joined later"],
    ["joined", "invited", "invite", false, true, "after is invited and the user was invited"],
    ["invited", "joined", "invite", false, true, "before was invited and the user was invited"],
    ["joined", "invited", "knock", true, false, "neither joined nor invited allows a knocking user"],
    ["invited", "joined", undefined, true, false, "neither allows a user who only joined later"],
  ];
  for (const [before, after, membership, joinedLater, expected, why] of cases) {
    test(`${before} → ${after}, user ${show(membership)}${joinedLater ? " (joined later)" : ""} → ${expected ? "visible" : "hidden"} (${why})`, () => {
      assert.equal(userMaySee({ visibility: after, visibilityBefore: before, membership, joinedLater }), expected);
      // Without the boundary rule only `after` would count: the rule is what these cases test.
    });
  }
  test("without visibilityBefore only the visibility after the event counts", () => {
    assert.equal(userMaySee({ visibility: "joined", membership: undefined, joinedLater: false }), false);
  });
});

describe("visibilityAtStreams: the state after (and before) each event", () => {
  const log: VisibilityChange[] = [
    { stream: 2, stateKey: "@c:a", kind: "member", membership: "join" },
    { stream: 3, stateKey: "", kind: "visibility", visibility: "joined" },
    { stream: 5, stateKey: "@u:b", kind: "member", membership: "invite" },
    { stream: 7, stateKey: "@u:b", kind: "member", membership: "join" },
    { stream: 9, stateKey: "@v:b", kind: "member", membership: "knock" },
    { stream: 10, stateKey: "", kind: "visibility", visibility: "shared" },
  ];
  const onB = (u: string) => u.endsWith(":b");
  test("positions in any order, null for events not in the timeline, only kept members tracked", () => {
    const out = visibilityAtStreams(log, [7, 1, null, 4, 10, 3], onB);
    assert.equal(out[2], null);
    assert.deepEqual(out[1], { visibility: "shared", visibilityBefore: "shared", members: new Map(), membersBefore: new Map() });
    assert.deepEqual(out[5], { visibility: "joined", visibilityBefore: "shared", members: new Map(), membersBefore: new Map() });
    assert.deepEqual(out[3]!.members, new Map(), "@c:a is not on server b");
    assert.deepEqual(out[0], { visibility: "joined", visibilityBefore: "joined", members: new Map([["@u:b", "join"]]), membersBefore: new Map([["@u:b", "invite"]]) });
    const twice = visibilityAtStreams(log, [7, 7], onB);
    assert.deepEqual(twice[1], twice[0], "an event asked for twice gets the same state before and after it");
    assert.deepEqual(out[4], {
      visibility: "shared",
      visibilityBefore: "joined",
      members: new Map([["@u:b", "join"], ["@v:b", "knock"]]),
      membersBefore: new Map([["@u:b", "join"], ["@v:b", "knock"]]),
    });
  });
});
