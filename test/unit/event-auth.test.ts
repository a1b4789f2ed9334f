import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { getRoomVersion, type RoomVersion } from "../../src/protocol/room-versions.js";
import {
  authEventKeys,
  canApplyRedaction,
  canSendState,
  checkAuthEventsList,
  checkEventAuth,
  currentMembership,
  DEFAULT_POWER_LEVELS,
  isPrivilegedCreator,
  isValidUserId,
  joinRuleAllowsKnock,
  joinRuleOf,
  namedLevel,
  NO_POWER_LEVELS_EVENT_DEFAULTS,
  parsePowerLevel,
  powerLevelOf,
  requiredPowerLevel,
  roomCreators,
  ruleNumber,
  selectAuthEvents,
  stateLookupFromEvents,
  type AuthCheckOptions,
  type AuthResult,
  type EventLike,
  type StateLookup,
} from "../../src/protocol/auth/index.js";

// ---------------------------------------------------------------------------------------------
// Fixture builder: plain objects, no hashing or signing.
// ---------------------------------------------------------------------------------------------

const ADMIN = "@admin:gate.example"; // room creator
const MOD = "@mod:gate.example"; // PL 50: kick/ban/invite
const ALICE = "@alice:gate.example"; // PL 0 member
const BOB = "@bob:remote.example"; // the knocker
const CAROL = "@carol:remote.example"; // a second remote user
const CO = "@co:gate.example"; // v12 additional creator in some fixtures

const KNOCK_VERSIONS = ["7", "8", "9", "10", "11", "12"] as const;
const ALL_VERSIONS = ["1", "2", "3", "4", "5", "6", ...KNOCK_VERSIONS] as const;

function rv(id: string): RoomVersion {
  const v = getRoomVersion(id);
  assert.ok(v, `room version ${id}`);
  return v;
}

interface Room {
  rv: RoomVersion;
  roomId: string;
  createId: string;
  create: EventLike;
  state: Map<string, EventLike>;
  lookup: StateLookup;
  /** Put a state event into the room's state (replacing the old one). */
  set(ev: EventLike): void;
  setMember(user: string, membership: string | null): void;
}

interface RoomOptions {
  /** null = no m.room.join_rules event. Default "knock". */
  joinRule?: string | null;
  /** Content of m.room.power_levels; null = no power-levels event. */
  powerLevels?: Record<string, unknown> | null;
  /** Extra users → PL merged into the default `users`. */
  users?: Record<string, unknown>;
  /** Memberships merged over the default (ADMIN, MOD, ALICE joined). */
  members?: Record<string, string | null>;
  createContent?: Record<string, unknown>;
}

function standardPowerLevels(v: RoomVersion, extraUsers: Record<string, unknown> = {}): Record<string, unknown> {
  // v12 creators must not appear in `users` (rule 10.4); they have infinite power anyway.
  const users: Record<string, unknown> = v.privilegedCreators ? { [MOD]: 50 } : { [ADMIN]: 100, [MOD]: 50 };
  return { users: { ...users, ...extraUsers }, users_default: 0, events_default: 0, state_default: 50, ban: 50, kick: 50, redact: 50, invite: 0 };
}

function makeRoom(version: string, opts: RoomOptions = {}): Room {
  const v = rv(version);
  const createContent: Record<string, unknown> = { room_version: version, ...(v.createHasCreator ? { creator: ADMIN } : {}), ...opts.createContent };
  let roomId: string;
  let createId: string;
  let create: EventLike;
  if (v.roomIdIsCreateEventHash) {
    createId = `$CreateHashV${version}`;
    roomId = `!CreateHashV${version}`;
    create = { type: "m.room.create", state_key: "", sender: ADMIN, content: createContent, prev_events: [], auth_events: [], event_id: createId };
  } else {
    createId = "$create:gate.example";
    roomId = "!room:gate.example";
    create = { type: "m.room.create", state_key: "", sender: ADMIN, room_id: roomId, content: createContent, prev_events: [], auth_events: [], event_id: createId };
  }
  const state = new Map<string, EventLike>();
  const key = (t: string, s: string) => `${t}|${s}`;
  const room: Room = {
    rv: v,
    roomId,
    createId,
    create,
    state,
    lookup: (t, s) => state.get(key(t, s)),
    set(ev) {
      state.set(key(ev.type, ev.state_key!), ev);
    },
    setMember(user, membership) {
      if (membership === null) state.delete(key("m.room.member", user));
      else room.set(stateEvent(room, "m.room.member", user, user, { membership }));
    },
  };
  room.set(create);
  const pl = opts.powerLevels === undefined ? standardPowerLevels(v, opts.users) : opts.powerLevels;
  if (pl !== null) room.set(stateEvent(room, "m.room.power_levels", "", ADMIN, pl));
  const jr = opts.joinRule === undefined ? "knock" : opts.joinRule;
  if (jr !== null) room.set(stateEvent(room, "m.room.join_rules", "", ADMIN, { join_rule: jr }));
  const members: Record<string, string | null> = { [ADMIN]: "join", [MOD]: "join", [ALICE]: "join", ...opts.members };
  for (const [u, m] of Object.entries(members)) room.setMember(u, m);
  return room;
}

function stateEvent(room: Pick<Room, "roomId">, type: string, stateKey: string, sender: string, content: Record<string, unknown>): EventLike {
  return { type, state_key: stateKey, sender, content, room_id: room.roomId, prev_events: ["$prev"], auth_events: [] };
}

function member(room: Room, sender: string, target: string, membership: string, extra: Record<string, unknown> = {}): EventLike {
  return stateEvent(room, "m.room.member", target, sender, { membership, ...extra });
}

function message(room: Room, sender: string, type = "m.room.message", content: Record<string, unknown> = { body: "hi" }): EventLike {
  return { type, sender, content, room_id: room.roomId, prev_events: ["$prev"], auth_events: [] };
}

function check(room: Room, ev: EventLike, opts: AuthCheckOptions = {}): AuthResult {
  return checkEventAuth(ev, room.rv, room.lookup, opts);
}

function allowed(res: AuthResult, msg = ""): void {
  assert.equal(res.allowed, true, `expected allowed${msg ? ` (${msg})` : ""}, got: ${res.allowed ? "" : res.reason}`);
}

function rejected(res: AuthResult, reason?: RegExp, rule?: string): void {
  assert.equal(res.allowed, false, "expected rejection, got allowed");
  if (res.allowed) return;
  if (reason) assert.match(res.reason, reason);
  if (rule) assert.equal(res.rule, rule, `rule number (reason: ${res.reason})`);
  assert.match(res.reason, /\(room v\d+ auth rule [\d.]+\)$/, "reason cites version and rule");
}

/** Spec rule numbers for member sub-rules, transcribed from the v7, v8–v11 and v12 texts. */
function memberRuleNo(version: string, section: "join" | "invite" | "leave" | "ban" | "knock", sub: number): string {
  const v = Number(version);
  const top = v >= 12 ? 5 : 4;
  const sections = v >= 8 ? { join: 3, invite: 4, leave: 5, ban: 6, knock: 7 } : { join: 2, invite: 3, leave: 4, ban: 5, knock: 6 };
  return `${top}.${sections[section]}.${sub}`;
}

// ---------------------------------------------------------------------------------------------
// §4 knock life-cycle table (auth-rules.md): every cell, in every knock-capable room version.
// ---------------------------------------------------------------------------------------------

type From = "none" | "leave" | "knock" | "invite" | "ban" | "join";
interface Cell {
  from: From;
  to: "knock" | "invite" | "join" | "leave (self)" | "leave (other)" | "ban";
  allowed: boolean;
  why: string;
  reason?: RegExp;
  /** [section, sub-rule] of the rejecting member rule. */
  rule?: ["join" | "invite" | "leave" | "ban" | "knock", number];
}

const LIFECYCLE: Cell[] = [
  // none / leave
  ...(["none", "leave"] as const).flatMap((from): Cell[] => [
    { from, to: "knock", allowed: true, why: "join rule is knock" },
    { from, to: "invite", allowed: true, why: "inviter joined, PL ≥ invite" },
    { from, to: "join", allowed: false, why: "join rule knock needs an invite first", reason: /not invited/, rule: ["join", 4] },
    { from, to: "leave (self)", allowed: false, why: "self-leave needs invite/join/knock", reason: /cannot leave/, rule: ["leave", 1] },
    { from, to: "leave (other)", allowed: true, why: "kick power (no-op kick)" },
    { from, to: "ban", allowed: true, why: "ban power" },
  ]),
  // knock
  { from: "knock", to: "knock", allowed: true, why: "re-knock" },
  { from: "knock", to: "invite", allowed: true, why: "accept: inviter joined, PL ≥ invite" },
  { from: "knock", to: "join", allowed: false, why: "knock join rule never admits a knocker directly", reason: /not invited/, rule: ["join", 4] },
  { from: "knock", to: "leave (self)", allowed: true, why: "rescind" },
  { from: "knock", to: "leave (other)", allowed: true, why: "deny: PL ≥ kick and > target" },
  { from: "knock", to: "ban", allowed: true, why: "ban power" },
  // invite
  { from: "invite", to: "knock", allowed: false, why: "invited users may not knock", reason: /already invited/, rule: ["knock", 4] },
  { from: "invite", to: "invite", allowed: true, why: "re-invite is not forbidden by the rules" },
  { from: "invite", to: "join", allowed: true, why: "join after invite" },
  { from: "invite", to: "leave (self)", allowed: true, why: "reject the invite" },
  { from: "invite", to: "leave (other)", allowed: true, why: "revoke the invite (kick power)" },
  { from: "invite", to: "ban", allowed: true, why: "ban power" },
  // ban
  { from: "ban", to: "knock", allowed: false, why: "banned", reason: /banned/, rule: ["knock", 4] },
  { from: "ban", to: "invite", allowed: false, why: "banned target", reason: /already banned/, rule: ["invite", 3] },
  { from: "ban", to: "join", allowed: false, why: "banned", reason: /banned/, rule: ["join", 3] },
  { from: "ban", to: "leave (self)", allowed: false, why: "banned users cannot leave", reason: /membership is ban/, rule: ["leave", 1] },
  { from: "ban", to: "leave (other)", allowed: true, why: "unban: PL ≥ ban and kick, > target" },
  { from: "ban", to: "ban", allowed: true, why: "re-ban with ban power" },
  // join
  { from: "join", to: "knock", allowed: false, why: "already joined", reason: /already joined/, rule: ["knock", 4] },
  { from: "join", to: "invite", allowed: false, why: "already joined", reason: /already joined/, rule: ["invite", 3] },
  { from: "join", to: "join", allowed: true, why: "profile change" },
  { from: "join", to: "leave (self)", allowed: true, why: "leave" },
  { from: "join", to: "leave (other)", allowed: true, why: "kick" },
  { from: "join", to: "ban", allowed: true, why: "kick+ban" },
];

function lifecycleEvent(room: Room, to: Cell["to"]): EventLike {
  switch (to) {
    case "knock":
      return member(room, BOB, BOB, "knock");
    case "invite":
      return member(room, MOD, BOB, "invite");
    case "join":
      return member(room, BOB, BOB, "join");
    case "leave (self)":
      return member(room, BOB, BOB, "leave");
    case "leave (other)":
      return member(room, MOD, BOB, "leave");
    case "ban":
      return member(room, MOD, BOB, "ban");
  }
}

describe("knock life cycle (auth-rules.md §4), every cell × room versions 7–12", () => {
  for (const version of KNOCK_VERSIONS) {
    for (const cell of LIFECYCLE) {
      const name = `v${version}: ${cell.from} → ${cell.to}: ${cell.allowed ? "allowed" : "rejected"} (${cell.why})`;
      test(name, () => {
        const room = makeRoom(version, { members: { [BOB]: cell.from === "none" ? null : cell.from } });
        const res = check(room, lifecycleEvent(room, cell.to));
        if (cell.allowed) allowed(res);
        else rejected(res, cell.reason, cell.rule && memberRuleNo(version, cell.rule[0], cell.rule[1]));
      });
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Knocking
// ---------------------------------------------------------------------------------------------

describe("knock: join rule by room version", () => {
  for (const version of KNOCK_VERSIONS) {
    const v = Number(version);
    test(`v${version}: knock on a knock room is allowed`, () => {
      allowed(check(makeRoom(version, { joinRule: "knock" }), member(makeRoom(version), BOB, BOB, "knock")));
    });
    test(`v${version}: knock on a knock_restricted room is ${v >= 10 ? "allowed" : "rejected"}`, () => {
      const room = makeRoom(version, { joinRule: "knock_restricted" });
      const res = check(room, member(room, BOB, BOB, "knock"));
      if (v >= 10) allowed(res);
      else rejected(res, /join rule is "knock_restricted"; knocking needs knock in room v/, memberRuleNo(version, "knock", 1));
    });
    for (const jr of ["public", "invite", "restricted", "private", "bogus"]) {
      test(`v${version}: knock on a ${jr} room is rejected`, () => {
        const room = makeRoom(version, { joinRule: jr });
        rejected(check(room, member(room, BOB, BOB, "knock")), new RegExp(`join rule is "${jr}"`), memberRuleNo(version, "knock", 1));
      });
    }
    test(`v${version}: knock with no join rules event is rejected (effective rule invite)`, () => {
      const room = makeRoom(version, { joinRule: null });
      rejected(check(room, member(room, BOB, BOB, "knock")), /join rule is "invite"/, memberRuleNo(version, "knock", 1));
    });
    test(`v${version}: knocking on behalf of someone else is rejected`, () => {
      const room = makeRoom(version);
      rejected(check(room, member(room, CAROL, BOB, "knock")), /on behalf of/, memberRuleNo(version, "knock", 2));
    });
    test(`v${version}: knocking needs no power level (users_default -10)`, () => {
      const room = makeRoom(version, { powerLevels: { ...standardPowerLevels(rv(version)), users_default: -10 } });
      allowed(check(room, member(room, BOB, BOB, "knock", { reason: "let me in", displayname: "Bob" })));
    });
  }
  for (const version of ["1", "2", "3", "4", "5", "6"]) {
    test(`v${version}: knock is an unknown membership`, () => {
      const room = makeRoom(version);
      rejected(check(room, member(room, BOB, BOB, "knock")), /unknown membership "knock"/, version <= "5" ? "5.6" : "4.6");
    });
  }
});

describe("knock follow-ups: deny, accept, ban, unban", () => {
  for (const version of KNOCK_VERSIONS) {
    const knocking = () => makeRoom(version, { members: { [BOB]: "knock" } });

    test(`v${version}: deny (kick) by a PL-0 member is rejected`, () => {
      const room = knocking();
      rejected(check(room, member(room, ALICE, BOB, "leave")), /below the kick level 50/, memberRuleNo(version, "leave", 5));
    });
    test(`v${version}: deny needs to outrank the knocker (equal PL rejected)`, () => {
      const room = makeRoom(version, { members: { [BOB]: "knock" }, users: { [BOB]: 50 } });
      rejected(check(room, member(room, MOD, BOB, "leave")), /does not outrank/, memberRuleNo(version, "leave", 5));
    });
    test(`v${version}: deny by a non-member is rejected`, () => {
      const room = makeRoom(version, { members: { [BOB]: "knock", [MOD]: "leave" } });
      rejected(check(room, member(room, MOD, BOB, "leave")), /is not joined/, memberRuleNo(version, "leave", 2));
    });
    test(`v${version}: deny with a raised kick level (60) by PL 50 is rejected`, () => {
      const room = makeRoom(version, { members: { [BOB]: "knock" }, powerLevels: { ...standardPowerLevels(rv(version)), kick: 60 } });
      rejected(check(room, member(room, MOD, BOB, "leave")), /kick level 60/);
    });
    test(`v${version}: accept (invite) needs the invite level`, () => {
      const room = makeRoom(version, { members: { [BOB]: "knock" }, powerLevels: { ...standardPowerLevels(rv(version)), invite: 50 } });
      rejected(check(room, member(room, ALICE, BOB, "invite")), /below the invite level 50/, memberRuleNo(version, "invite", 5));
      allowed(check(room, member(room, MOD, BOB, "invite")));
    });
    test(`v${version}: accept with default invite level 0: any joined member may invite`, () => {
      const room = knocking();
      allowed(check(room, member(room, ALICE, BOB, "invite")));
    });
    test(`v${version}: accept by an inviter who is not joined is rejected`, () => {
      for (const m of ["invite", "knock", "leave", "ban", null]) {
        const room = makeRoom(version, { members: { [BOB]: "knock", [CAROL]: m } });
        rejected(check(room, member(room, CAROL, BOB, "invite")), /is not joined/, memberRuleNo(version, "invite", 2));
      }
    });
    test(`v${version}: invited knocker joins (knock → invite → join)`, () => {
      const room = knocking();
      allowed(check(room, member(room, MOD, BOB, "invite")));
      room.setMember(BOB, "invite");
      allowed(check(room, member(room, BOB, BOB, "join")));
    });
    test(`v${version}: ban of a knocker with ban power; then knock is rejected`, () => {
      const room = knocking();
      allowed(check(room, member(room, MOD, BOB, "ban")));
      room.setMember(BOB, "ban");
      rejected(check(room, member(room, BOB, BOB, "knock")), /banned/);
    });
    test(`v${version}: ban by PL 0 / by non-member / of an equal is rejected`, () => {
      const room = makeRoom(version, { members: { [BOB]: "knock", [CAROL]: "knock" }, users: { [BOB]: 50 } });
      rejected(check(room, member(room, ALICE, CAROL, "ban")), /below the ban level 50/, memberRuleNo(version, "ban", 3));
      rejected(check(room, member(room, CAROL, ALICE, "ban")), /is not joined/, memberRuleNo(version, "ban", 1));
      rejected(check(room, member(room, MOD, BOB, "ban")), /does not outrank/, memberRuleNo(version, "ban", 3));
    });
    test(`v${version}: unban needs the ban level (ban 60 > PL 50)`, () => {
      const room = makeRoom(version, { members: { [BOB]: "ban" }, powerLevels: { ...standardPowerLevels(rv(version)), ban: 60 } });
      rejected(check(room, member(room, MOD, BOB, "leave")), /unbanning .* needs the ban level 60/, memberRuleNo(version, "leave", 3));
    });
    test(`v${version}: unban needs the kick level too (kick 60 > PL 50)`, () => {
      const room = makeRoom(version, { members: { [BOB]: "ban" }, powerLevels: { ...standardPowerLevels(rv(version)), kick: 60 } });
      rejected(check(room, member(room, MOD, BOB, "leave")), /kick level 60/, memberRuleNo(version, "leave", 5));
    });
    test(`v${version}: after unban the user may knock again`, () => {
      const room = makeRoom(version, { members: { [BOB]: "ban" } });
      allowed(check(room, member(room, MOD, BOB, "leave")));
      room.setMember(BOB, "leave");
      allowed(check(room, member(room, BOB, BOB, "knock")));
    });
    test(`v${version}: rescind then re-knock`, () => {
      const room = knocking();
      allowed(check(room, member(room, BOB, BOB, "leave")));
      room.setMember(BOB, "leave");
      allowed(check(room, member(room, BOB, BOB, "knock")));
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Joins
// ---------------------------------------------------------------------------------------------

describe("join rules by room version", () => {
  const yes = () => true;
  for (const version of KNOCK_VERSIONS) {
    const v = Number(version);
    test(`v${version}: public room: anyone not banned may join`, () => {
      const room = makeRoom(version, { joinRule: "public", members: { [BOB]: "knock" } });
      allowed(check(room, member(room, BOB, BOB, "join")));
    });
    test(`v${version}: joining on behalf of another user is rejected`, () => {
      const room = makeRoom(version, { joinRule: "public" });
      rejected(check(room, member(room, MOD, BOB, "join")), /on behalf of/, memberRuleNo(version, "join", 2));
    });
    test(`v${version}: invite room: invited user may join, uninvited may not`, () => {
      const room = makeRoom(version, { joinRule: "invite", members: { [BOB]: "invite" } });
      allowed(check(room, member(room, BOB, BOB, "join")));
      rejected(check(room, member(room, CAROL, CAROL, "join")), /join rule is invite and .* not invited/, memberRuleNo(version, "join", 4));
    });
    test(`v${version}: no join rules event behaves as invite (invited user may join)`, () => {
      const room = makeRoom(version, { joinRule: null, members: { [BOB]: "invite" } });
      allowed(check(room, member(room, BOB, BOB, "join")));
    });
    test(`v${version}: private room: joins rejected`, () => {
      const room = makeRoom(version, { joinRule: "private", members: { [BOB]: "invite" } });
      rejected(check(room, member(room, BOB, BOB, "join")), /join rule "private"/, memberRuleNo(version, "join", v >= 8 ? 7 : 6));
    });

    for (const jr of ["restricted", "knock_restricted"] as const) {
      const supported = jr === "restricted" ? v >= 8 : v >= 10;
      const authorised = (room: Room, extra: Record<string, unknown> = {}) =>
        member(room, BOB, BOB, "join", { join_authorised_via_users_server: MOD, ...extra });
      if (!supported) {
        test(`v${version}: ${jr} is not a join rule in this version: authorised join rejected`, () => {
          const room = makeRoom(version, { joinRule: jr, members: { [BOB]: "knock" } });
          rejected(check(room, authorised(room), { verifyJoinAuthorisedVia: yes }), new RegExp(`join rule "${jr}" does not allow`));
        });
        continue;
      }
      test(`v${version}: ${jr}: knocker joins with join_authorised_via_users_server (MOD joined, PL ≥ invite)`, () => {
        const room = makeRoom(version, { joinRule: jr, members: { [BOB]: "knock" } });
        let asked: string | undefined;
        allowed(check(room, authorised(room), { verifyJoinAuthorisedVia: (_e, u) => ((asked = u), true) }));
        assert.equal(asked, MOD, "signature check asked about the authorising user");
      });
      test(`v${version}: ${jr}: invited or joined user joins without authorisation`, () => {
        const room = makeRoom(version, { joinRule: jr, members: { [BOB]: "invite" } });
        allowed(check(room, member(room, BOB, BOB, "join")));
        allowed(check(room, member(room, ALICE, ALICE, "join")));
      });
      test(`v${version}: ${jr}: join without join_authorised_via_users_server is rejected`, () => {
        const room = makeRoom(version, { joinRule: jr, members: { [BOB]: "knock" } });
        rejected(check(room, member(room, BOB, BOB, "join")), /needs join_authorised_via_users_server/, memberRuleNo(version, "join", 5));
      });
      test(`v${version}: ${jr}: no signature verifier supplied ⇒ rejected (fail closed)`, () => {
        const room = makeRoom(version, { joinRule: jr });
        rejected(check(room, authorised(room)), /no verifier supplied/, `${v >= 12 ? 5 : 4}.2`);
      });
      test(`v${version}: ${jr}: bad signature from the authorising server ⇒ rejected`, () => {
        const room = makeRoom(version, { joinRule: jr });
        rejected(check(room, authorised(room), { verifyJoinAuthorisedVia: () => false }), /not signed by the server of @mod:gate\.example/, `${v >= 12 ? 5 : 4}.2`);
      });
      test(`v${version}: ${jr}: authorising user not joined ⇒ rejected`, () => {
        const room = makeRoom(version, { joinRule: jr, members: { [MOD]: "leave" } });
        rejected(check(room, authorised(room), { verifyJoinAuthorisedVia: yes }), /authorising user .* not joined/, memberRuleNo(version, "join", 5));
      });
      test(`v${version}: ${jr}: authorising user below the invite level ⇒ rejected`, () => {
        const room = makeRoom(version, { joinRule: jr, powerLevels: { ...standardPowerLevels(rv(version)), invite: 60 } });
        rejected(check(room, authorised(room), { verifyJoinAuthorisedVia: yes }), /below the invite level 60/, memberRuleNo(version, "join", 5));
      });
      test(`v${version}: ${jr}: banned user cannot join even when authorised`, () => {
        const room = makeRoom(version, { joinRule: jr, members: { [BOB]: "ban" } });
        rejected(check(room, authorised(room), { verifyJoinAuthorisedVia: yes }), /banned/, memberRuleNo(version, "join", 3));
      });
      test(`v${version}: ${jr}: invalid join_authorised_via_users_server ⇒ rejected`, () => {
        const room = makeRoom(version, { joinRule: jr });
        rejected(check(room, authorised(room, { join_authorised_via_users_server: "mod" }), { verifyJoinAuthorisedVia: yes }), /not a valid user ID/);
      });
    }
  }
  test("v7: join_authorised_via_users_server has no meaning (no rule 4.2): ignored without verifier", () => {
    const room = makeRoom("7", { joinRule: "public" });
    allowed(check(room, member(room, BOB, BOB, "join", { join_authorised_via_users_server: MOD })));
  });
  test("v11: rule 4.2 applies to any membership carrying the key", () => {
    const room = makeRoom("11");
    rejected(check(room, member(room, BOB, BOB, "knock", { join_authorised_via_users_server: MOD })), /no verifier/, "4.2");
  });
});

describe("creator's first join (rule 5.3.1 / 4.3.1)", () => {
  for (const version of KNOCK_VERSIONS) {
    test(`v${version}: creator joins with prev_events = [create]`, () => {
      const room = makeRoom(version, { joinRule: null, powerLevels: null, members: { [ADMIN]: null, [MOD]: null, [ALICE]: null } });
      allowed(check(room, { ...member(room, ADMIN, ADMIN, "join"), prev_events: [room.createId] }));
    });
    test(`v${version}: someone else's first join after create is rejected`, () => {
      const room = makeRoom(version, { joinRule: null, powerLevels: null, members: { [ADMIN]: null, [MOD]: null, [ALICE]: null } });
      rejected(check(room, { ...member(room, BOB, BOB, "join"), prev_events: [room.createId] }), /not invited/);
    });
    test(`v${version}: creator join not directly after create goes through the join rule`, () => {
      const room = makeRoom(version, { joinRule: null, powerLevels: null, members: { [ADMIN]: null, [MOD]: null, [ALICE]: null } });
      rejected(check(room, { ...member(room, ADMIN, ADMIN, "join"), prev_events: [room.createId, "$other"] }), /not invited/);
    });
  }
  test("v10: the creator is content.creator, not the sender", () => {
    const room = makeRoom("10", { joinRule: null, powerLevels: null, members: { [ADMIN]: null, [ALICE]: null }, createContent: { creator: ALICE } });
    allowed(check(room, { ...member(room, ALICE, ALICE, "join"), prev_events: [room.createId] }));
    rejected(check(room, { ...member(room, ADMIN, ADMIN, "join"), prev_events: [room.createId] }));
  });
  test("v11: the creator is the create sender (content.creator ignored)", () => {
    const room = makeRoom("11", { joinRule: null, powerLevels: null, members: { [ADMIN]: null, [ALICE]: null }, createContent: { creator: ALICE } });
    allowed(check(room, { ...member(room, ADMIN, ADMIN, "join"), prev_events: [room.createId] }));
    rejected(check(room, { ...member(room, ALICE, ALICE, "join"), prev_events: [room.createId] }));
  });
  test("v12: an additional creator does not get the first-join exemption", () => {
    const room = makeRoom("12", { joinRule: null, powerLevels: null, members: { [ADMIN]: null }, createContent: { additional_creators: [CO] } });
    rejected(check(room, { ...member(room, CO, CO, "join"), prev_events: [room.createId] }), /not invited/);
  });
  test("v1–v2 prev_events pairs are understood", () => {
    const room = makeRoom("1", { joinRule: null, powerLevels: null, members: { [ADMIN]: null } });
    allowed(check(room, { ...member(room, ADMIN, ADMIN, "join"), prev_events: [[room.createId, { sha256: "x" }]] }));
  });
  test("v11: createEventId option stands in for a create event without event_id", () => {
    const room = makeRoom("11", { joinRule: null, powerLevels: null, members: { [ADMIN]: null } });
    const { event_id: _drop, ...bare } = room.create;
    room.set(bare);
    rejected(check(room, { ...member(room, ADMIN, ADMIN, "join"), prev_events: [room.createId] }));
    allowed(check(room, { ...member(room, ADMIN, ADMIN, "join"), prev_events: [room.createId] }, { createEventId: room.createId }));
  });
});

describe("membership: other rules", () => {
  for (const version of KNOCK_VERSIONS) {
    const v = Number(version);
    test(`v${version}: member event without state_key or membership is rejected`, () => {
      const room = makeRoom(version);
      const { state_key: _sk, ...noKey } = member(room, BOB, BOB, "knock");
      rejected(check(room, noKey), /needs a state_key/, `${v >= 12 ? 5 : 4}.1`);
      rejected(check(room, stateEvent(room, "m.room.member", BOB, BOB, {})), /needs a state_key/, `${v >= 12 ? 5 : 4}.1`);
    });
    test(`v${version}: unknown membership is rejected`, () => {
      const room = makeRoom(version);
      rejected(check(room, member(room, BOB, BOB, "lurk")), /unknown membership "lurk"/, `${v >= 12 ? 5 : 4}.${v >= 8 ? 8 : 7}`);
    });
    test(`v${version}: kick of a higher-PL member is rejected; kick of a lower one allowed`, () => {
      const room = makeRoom(version);
      rejected(check(room, member(room, MOD, ADMIN, "leave")), /does not outrank/);
      allowed(check(room, member(room, MOD, ALICE, "leave")));
    });
  }
});

describe("third-party invites (rule 5.4.1)", () => {
  const tpiRoom = (version: string) => {
    const room = makeRoom(version);
    room.set(stateEvent(room, "m.room.third_party_invite", "tok", MOD, { public_key: "k1", public_keys: [{ public_key: "k2" }], display_name: "b…" }));
    return room;
  };
  const invite = (room: Room, signed: Record<string, unknown>, sender = MOD) =>
    member(room, sender, BOB, "invite", { third_party_invite: { display_name: "b…", signed } });
  const signed = { mxid: BOB, token: "tok", signatures: { "id.example": { "ed25519:0": "sig" } } };
  for (const version of ["7", "11", "12"]) {
    const r = (n: number) => `${memberRuleNo(version, "invite", 1)}.${n}`;
    test(`v${version}: without a verifier third-party invites are rejected as unsupported`, () => {
      const room = tpiRoom(version);
      rejected(check(room, invite(room, signed)), /not supported/, r(8));
    });
    test(`v${version}: verifier sees the signed block and both key forms; true ⇒ allowed`, () => {
      const room = tpiRoom(version);
      let keys: readonly string[] = [];
      allowed(check(room, invite(room, signed), { verifyThirdPartyInvite: (_s, k) => ((keys = k), true) }));
      assert.deepEqual(keys, ["k1", "k2"]);
    });
    test(`v${version}: structural failures`, () => {
      const room = tpiRoom(version);
      const opts = { verifyThirdPartyInvite: () => true };
      rejected(check(room, member(room, MOD, BOB, "invite", { third_party_invite: {} }), opts), /no signed/, r(2));
      rejected(check(room, invite(room, { mxid: BOB }), opts), /needs mxid and token/, r(3));
      rejected(check(room, invite(room, { ...signed, mxid: CAROL }), opts), /mxid does not match/, r(4));
      rejected(check(room, invite(room, { ...signed, token: "nope" }), opts), /no m\.room\.third_party_invite/, r(5));
      rejected(check(room, invite(room, signed, ALICE), opts), /did not issue/, r(6));
      rejected(check(room, invite(room, signed), { verifyThirdPartyInvite: () => false }), /no signature/, r(8));
      room.setMember(BOB, "ban");
      rejected(check(room, invite(room, signed), opts), /banned/, r(1));
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Power levels and creators
// ---------------------------------------------------------------------------------------------

describe("v12 privileged creators vs v11 creator-100", () => {
  test("v12: the creator has infinite power; v11: the creator has users[creator] = 100", () => {
    const r12 = makeRoom("12");
    const r11 = makeRoom("11");
    assert.equal(powerLevelOf(ADMIN, standardPowerLevels(r12.rv), r12.create, r12.rv), Infinity);
    assert.equal(powerLevelOf(ADMIN, standardPowerLevels(r11.rv), r11.create, r11.rv), 100);
  });
  test("v12: additional_creators have infinite power; in v11 they are ordinary users", () => {
    const r12 = makeRoom("12", { createContent: { additional_creators: [CO] } });
    const r11 = makeRoom("11", { createContent: { additional_creators: [CO] } });
    assert.equal(powerLevelOf(CO, standardPowerLevels(r12.rv), r12.create, r12.rv), Infinity);
    assert.equal(powerLevelOf(CO, standardPowerLevels(r11.rv), r11.create, r11.rv), 0);
    assert.deepEqual(roomCreators(r12.create, r12.rv), [ADMIN, CO]);
    assert.deepEqual(roomCreators(r11.create, r11.rv), [ADMIN]);
    assert.equal(isPrivilegedCreator(CO, r12.create, r12.rv), true);
    assert.equal(isPrivilegedCreator(ADMIN, r11.create, r11.rv), false);
  });
  test("v12: a creator outranks a users-100 admin (kick allowed); v11 creator at 100 cannot kick another 100", () => {
    const r12 = makeRoom("12", { users: { [ALICE]: 100 } });
    allowed(check(r12, member(r12, ADMIN, ALICE, "leave")));
    const r11 = makeRoom("11", { users: { [ALICE]: 100 } });
    rejected(check(r11, member(r11, ADMIN, ALICE, "leave")), /does not outrank/, "4.5.5");
  });
  test("v12: nobody can kick or ban a creator, not even another creator", () => {
    const room = makeRoom("12", { createContent: { additional_creators: [CO] }, members: { [CO]: "join" }, users: { [ALICE]: 100 } });
    rejected(check(room, member(room, ALICE, ADMIN, "ban")), /does not outrank .* infinite/, "5.6.3");
    rejected(check(room, member(room, CO, ADMIN, "leave")), /does not outrank/, "5.5.5");
  });
  test("v12: an additional creator can send state needing power 1e6 and change power levels freely", () => {
    const room = makeRoom("12", {
      createContent: { additional_creators: [CO] },
      members: { [CO]: "join" },
      powerLevels: { ...standardPowerLevels(rv("12")), events: { "m.room.tombstone": 1_000_000 } },
    });
    allowed(check(room, stateEvent(room, "m.room.tombstone", "", CO, { body: "x", replacement_room: "!n" })));
    allowed(check(room, stateEvent(room, "m.room.power_levels", "", CO, { users: { [ALICE]: 999_999 }, ban: 1_000_000 })));
  });
  test("v12: creators must not appear in users (rule 10.4), including additional creators", () => {
    const room = makeRoom("12", { createContent: { additional_creators: [CO] }, members: { [CO]: "join" } });
    rejected(check(room, stateEvent(room, "m.room.power_levels", "", ADMIN, { users: { [ADMIN]: 100 } })), /room creator @admin/, "10.4");
    rejected(check(room, stateEvent(room, "m.room.power_levels", "", ADMIN, { users: { [CO]: 100 } })), /room creator @co/, "10.4");
  });
  test("v11: the creator may appear in users (no rule 10.4)", () => {
    const room = makeRoom("11", { createContent: { additional_creators: [CO] } });
    allowed(check(room, stateEvent(room, "m.room.power_levels", "", ADMIN, { users: { [ADMIN]: 100, [CO]: 50 } })));
  });
  test("no power-levels event: v11 creator 100 can kick (kick 50), others 0 cannot; v12 creator infinite", () => {
    for (const version of ["10", "11", "12"]) {
      const room = makeRoom(version, { powerLevels: null });
      allowed(check(room, member(room, ADMIN, ALICE, "leave")), `v${version} creator kicks`);
      rejected(check(room, member(room, MOD, ALICE, "leave")), /below the kick level 50/);
      assert.equal(powerLevelOf(ADMIN, undefined, room.create, room.rv), version === "12" ? Infinity : 100);
      assert.equal(powerLevelOf(MOD, undefined, room.create, room.rv), 0);
    }
  });
  test("no power-levels event: state_default is still 50 (only the creator sends state), messages need 0", () => {
    for (const version of ["7", "11", "12"]) {
      const room = makeRoom(version, { powerLevels: null });
      rejected(check(room, stateEvent(room, "m.room.topic", "", ALICE, { topic: "t" })), /needs power 50; @alice:gate\.example has 0/);
      allowed(check(room, stateEvent(room, "m.room.topic", "", ADMIN, { topic: "t" })));
      allowed(check(room, message(room, ALICE)));
      rejected(check(room, stateEvent(room, "m.room.power_levels", "", ALICE, { users: { [ALICE]: 100 } })), /needs power 50/);
      const first = version === "12" ? { users: { [ALICE]: 100 } } : { users: { [ADMIN]: 100, [ALICE]: 100 } };
      allowed(check(room, stateEvent(room, "m.room.power_levels", "", ADMIN, first)), "first PL event (10.5): no change checks");
    }
  });
});

describe("m.room.power_levels changes (rule 10 v12 / 9 ≤v11)", () => {
  const pl = (room: Room, sender: string, content: Record<string, unknown>) => stateEvent(room, "m.room.power_levels", "", sender, content);
  for (const version of KNOCK_VERSIONS) {
    const v = Number(version);
    const P = v >= 12 ? "10" : "9";
    const base = () => standardPowerLevels(rv(version));
    // Sub-rule numbers: v10+ add .1/.2 integer checks; v12 adds .4 creators.
    const sub = (name: "users" | "named" | "mapsRemoved" | "mapsAdded" | "usersRemoved" | "usersAdded") => {
      const offsets = v >= 12 ? { users: 3, named: 6, mapsRemoved: 7, mapsAdded: 8, usersRemoved: 9, usersAdded: 10 }
        : v >= 10 ? { users: 3, named: 5, mapsRemoved: 6, mapsAdded: 7, usersRemoved: 8, usersAdded: 9 }
        : { users: 1, named: 3, mapsRemoved: 4, mapsAdded: 5, usersRemoved: 6, usersAdded: 7 };
      return `${P}.${offsets[name]}`;
    };
    test(`v${version}: MOD (50) needs the state_default 50 to send power levels; ALICE (0) does not have it`, () => {
      const room = makeRoom(version);
      rejected(check(room, pl(room, ALICE, base())), /needs power 50/, v >= 12 ? "8" : "7");
      allowed(check(room, pl(room, MOD, { ...base(), users: { ...(base().users as object), [ALICE]: 10 } })));
    });
    test(`v${version}: promoting someone above yourself is rejected; to your own level allowed`, () => {
      const room = makeRoom(version);
      rejected(check(room, pl(room, MOD, { ...base(), users: { ...(base().users as object), [ALICE]: 51 } })), /cannot give .* power 51/, sub("usersAdded"));
      allowed(check(room, pl(room, MOD, { ...base(), users: { ...(base().users as object), [ALICE]: 50 } })));
    });
    test(`v${version}: demoting a peer (equal PL) is rejected; demoting yourself is allowed`, () => {
      const room = makeRoom(version, { users: { [ALICE]: 50 } });
      const users = { ...(base().users as object), [ALICE]: 0 };
      rejected(check(room, pl(room, MOD, { ...base(), users })), /not below the sender's power/, sub("usersRemoved"));
      allowed(check(room, pl(room, MOD, { ...base(), users: { ...(base().users as object), [ALICE]: 50, [MOD]: 10 } })));
    });
    test(`v${version}: removing a lower user's entry is allowed; a higher user's rejected`, () => {
      const room = makeRoom(version, { users: { [ALICE]: 10 } });
      allowed(check(room, pl(room, MOD, base())));
      if (v < 12) {
        const { [ADMIN]: _a, ...rest } = base().users as Record<string, unknown>;
        rejected(check(room, pl(room, MOD, { ...base(), users: rest })), /cannot change @admin.*power 100/, sub("usersRemoved"));
      }
    });
    test(`v${version}: changing a named level above your power is rejected (old or new value)`, () => {
      const room = makeRoom(version);
      rejected(check(room, pl(room, MOD, { ...base(), kick: 60 })), /cannot set kick to 60/, sub("named"));
      const high = makeRoom(version, { powerLevels: { ...base(), ban: 75 } });
      rejected(check(high, pl(high, MOD, { ...base(), ban: 40 })), /cannot change ban from 75/, sub("named"));
      allowed(check(room, pl(room, MOD, { ...base(), kick: 40, invite: 50 })));
    });
    test(`v${version}: removing a named level counts as a change`, () => {
      const room = makeRoom(version, { powerLevels: { ...base(), redact: 75 } });
      const { redact: _r, ...withoutRedact } = { ...base(), redact: 75 };
      rejected(check(room, pl(room, MOD, withoutRedact)), /cannot change redact from 75/, sub("named"));
    });
    test(`v${version}: events and notifications entries`, () => {
      const room = makeRoom(version, { powerLevels: { ...base(), events: { "m.room.name": 75 }, notifications: { room: 50 } } });
      rejected(check(room, pl(room, MOD, { ...base(), events: {}, notifications: { room: 50 } })), /events\[m\.room\.name\] from 75/, sub("mapsRemoved"));
      rejected(check(room, pl(room, MOD, { ...base(), events: { "m.room.name": 75, "m.room.topic": 60 }, notifications: { room: 50 } })), /events\[m\.room\.topic\] to 60/, sub("mapsAdded"));
      rejected(check(room, pl(room, MOD, { ...base(), events: { "m.room.name": 75 }, notifications: { room: 51 } })), /notifications\[room\] to 51/, sub("mapsAdded"));
      allowed(check(room, pl(room, MOD, { ...base(), events: { "m.room.name": 75, "m.room.topic": 50 }, notifications: { room: 20 } })));
    });
    test(`v${version}: users keys must be valid user IDs`, () => {
      const room = makeRoom(version);
      rejected(check(room, pl(room, MOD, { ...base(), users: { "not-a-user": 0 } })), /not a valid user ID/, sub("users"));
    });
    if (v >= 10) {
      test(`v${version}: string power levels are rejected (integers only, MSC3667)`, () => {
        const room = makeRoom(version);
        rejected(check(room, pl(room, MOD, { ...base(), kick: "50" })), /kick must be an integer/, `${P}.1`);
        rejected(check(room, pl(room, MOD, { ...base(), events: { "m.room.name": "50" } })), /events must be an object of integers/, `${P}.2`);
        rejected(check(room, pl(room, MOD, { ...base(), notifications: 5 })), /notifications must be an object/, `${P}.2`);
        rejected(check(room, pl(room, MOD, { ...base(), users: { [ALICE]: "10" } })), /is not an integer/, `${P}.3`);
        rejected(check(room, pl(room, MOD, { ...base(), users_default: 1.5 })), /users_default must be an integer/, `${P}.1`);
      });
      test(`v${version}: a stored string level reads as the default`, () => {
        assert.equal(parsePowerLevel("50", rv(version)), undefined);
        assert.equal(namedLevel("kick", { kick: "10" }, rv(version)), 50);
      });
    } else {
      test(`v${version}: integer strings are accepted and compared as numbers (stringy power levels)`, () => {
        const room = makeRoom(version, { powerLevels: { ...base(), kick: "50" } });
        allowed(check(room, pl(room, MOD, { ...base(), kick: 50, users: { ...(base().users as object), [ALICE]: "10" } })));
        rejected(check(room, pl(room, MOD, { ...base(), kick: "60" })), /cannot set kick to 60/);
        assert.equal(parsePowerLevel(" 25 ", rv(version)), 25);
        assert.equal(powerLevelOf(ALICE, { users: { [ALICE]: "7" } }, room.create, room.rv), 7);
      });
      test(`v${version}: non-integer strings are rejected`, () => {
        const room = makeRoom(version);
        rejected(check(room, pl(room, MOD, { ...base(), users: { [ALICE]: "ten" } })), /is not an integer/, sub("users"));
        rejected(check(room, pl(room, MOD, { ...base(), ban: "lots" })), /ban must be an integer or an integer string/);
      });
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Other events: sender joined, required power, @ state keys, redactions
// ---------------------------------------------------------------------------------------------

describe("non-membership events", () => {
  for (const version of KNOCK_VERSIONS) {
    const v = Number(version);
    test(`v${version}: a knocking user cannot send messages (sender not joined)`, () => {
      const room = makeRoom(version, { members: { [BOB]: "knock" } });
      rejected(check(room, message(room, BOB)), /not joined to the room \(membership: knock\)/, v >= 12 ? "6" : "5");
      rejected(check(room, message(room, CAROL)), /membership: leave/);
    });
    test(`v${version}: state needs state_default (50), messages events_default (0)`, () => {
      const room = makeRoom(version);
      rejected(check(room, stateEvent(room, "m.room.topic", "", ALICE, { topic: "x" })), /m\.room\.topic needs power 50; @alice:gate\.example has 0/, v >= 12 ? "8" : "7");
      allowed(check(room, stateEvent(room, "m.room.topic", "", MOD, { topic: "x" })));
      allowed(check(room, message(room, ALICE)));
    });
    test(`v${version}: events[type] overrides the defaults`, () => {
      const room = makeRoom(version, { powerLevels: { ...standardPowerLevels(rv(version)), events: { "m.room.message": 10, "m.room.topic": 0 } } });
      rejected(check(room, message(room, ALICE)), /needs power 10/);
      allowed(check(room, stateEvent(room, "m.room.topic", "", ALICE, { topic: "x" })));
    });
    test(`v${version}: a state_key naming another user is rejected`, () => {
      const room = makeRoom(version, { powerLevels: { ...standardPowerLevels(rv(version)), state_default: 0 } });
      rejected(check(room, stateEvent(room, "org.example.status", MOD, ALICE, {})), /state_key @mod.* other than the sender/, v >= 12 ? "9" : "8");
      allowed(check(room, stateEvent(room, "org.example.status", ALICE, ALICE, {})));
    });
    test(`v${version}: m.room.third_party_invite needs the invite level only`, () => {
      const room = makeRoom(version, { powerLevels: { ...standardPowerLevels(rv(version)), invite: 50 } });
      rejected(check(room, stateEvent(room, "m.room.third_party_invite", "tok", ALICE, {})), /below the invite level 50/, v >= 12 ? "7" : "6");
      allowed(check(room, stateEvent(room, "m.room.third_party_invite", "tok", MOD, {})));
    });
    test(`v${version}: m.room.redaction: only events/events_default apply (redact level is checked later)`, () => {
      const room = makeRoom(version, { powerLevels: { ...standardPowerLevels(rv(version)), redact: 100 } });
      const redaction = { ...message(room, ALICE, "m.room.redaction", v >= 11 ? { redacts: "$x" } : {}), ...(v >= 11 ? {} : { redacts: "$x" }) };
      allowed(check(room, redaction));
      const strict = makeRoom(version, { powerLevels: { ...standardPowerLevels(rv(version)), events: { "m.room.redaction": 50 } } });
      rejected(check(strict, { ...redaction, room_id: strict.roomId }), /m\.room\.redaction needs power 50/);
    });
  }
  test("the state_key rule is a prefix check: any non-sender state_key starting with '@' is refused", () => {
    const room = makeRoom("12", { powerLevels: { ...standardPowerLevels(rv("12")), state_default: 0 } });
    rejected(check(room, stateEvent(room, "org.example.status", "@", ALICE, {})), /other than the sender/, "9");
  });
  test("v1: m.room.redaction special rule: redact level or same event-ID domain", () => {
    const room = makeRoom("1");
    const red = (sender: string, redacts: string, eventId: string) => ({ ...message(room, sender, "m.room.redaction", {}), redacts, event_id: eventId });
    allowed(check(room, red(MOD, "$a:elsewhere.example", "$r:gate.example")), "redact level");
    allowed(check(room, red(ALICE, "$a:gate.example", "$r:gate.example")), "same domain");
    rejected(check(room, red(ALICE, "$a:elsewhere.example", "$r:gate.example")), /redact level/, "11.3");
  });
  test("v3: no special redaction rule", () => {
    const room = makeRoom("3");
    allowed(check(room, { ...message(room, ALICE, "m.room.redaction", {}), redacts: "$a" }));
  });
  test("v5: m.room.aliases: state_key must be the sender's server; v6: ordinary state", () => {
    const room = makeRoom("5", { powerLevels: { ...standardPowerLevels(rv("5")), state_default: 0 } });
    allowed(check(room, stateEvent(room, "m.room.aliases", "gate.example", ALICE, { aliases: [] })));
    rejected(check(room, stateEvent(room, "m.room.aliases", "other.example", ALICE, { aliases: [] })), /sender's server/, "4");
    const r6 = makeRoom("6", { powerLevels: { ...standardPowerLevels(rv("6")), state_default: 0 } });
    allowed(check(r6, stateEvent(r6, "m.room.aliases", "other.example", ALICE, { aliases: [] })));
  });
});

// ---------------------------------------------------------------------------------------------
// m.room.create, room_id (v12 rule 2), m.federate
// ---------------------------------------------------------------------------------------------

describe("m.room.create (rule 1)", () => {
  const create = (version: string, over: Partial<EventLike> = {}, content: Record<string, unknown> = {}): EventLike => {
    const v = rv(version);
    const base: EventLike = {
      type: "m.room.create",
      state_key: "",
      sender: ADMIN,
      content: { room_version: version, ...(v.createHasCreator ? { creator: ADMIN } : {}), ...content },
      prev_events: [],
      auth_events: [],
    };
    if (!v.roomIdIsCreateEventHash) base.room_id = "!room:gate.example";
    return { ...base, ...over };
  };
  const noState: StateLookup = () => undefined;
  for (const version of KNOCK_VERSIONS) {
    const v = Number(version);
    test(`v${version}: a well-formed create event is allowed with no state`, () => {
      allowed(checkEventAuth(create(version), rv(version), noState));
    });
    test(`v${version}: create with prev_events is rejected (1.1)`, () => {
      rejected(checkEventAuth(create(version, { prev_events: ["$x"] }), rv(version), noState), /must not have prev_events/, "1.1");
    });
    test(`v${version}: unknown content.room_version is rejected (1.3)`, () => {
      rejected(checkEventAuth(create(version, {}, { room_version: "99" }), rv(version), noState), /unrecognised room_version "99"/, "1.3");
      rejected(checkEventAuth(create(version, {}, { room_version: 12 }), rv(version), noState), /unrecognised room_version 12/, "1.3");
    });
    if (v >= 12) {
      test("v12: create with a room_id is rejected (1.2)", () => {
        rejected(checkEventAuth(create(version, { room_id: "!x" }), rv(version), noState), /must not have a room_id/, "1.2");
      });
      test("v12: additional_creators must be an array of valid user IDs (1.4)", () => {
        for (const bad of ["@a:b", [ADMIN, "nope"], [42], ["@:gate.example"], ["@a:bad_host!"], {}]) {
          rejected(checkEventAuth(create(version, {}, { additional_creators: bad }), rv(version), noState), /additional_creators/, "1.4");
        }
        allowed(checkEventAuth(create(version, {}, { additional_creators: [] }), rv(version), noState));
        allowed(checkEventAuth(create(version, {}, { additional_creators: [CO, "@x:[::1]:8448", "@old=style:gate.example"] }), rv(version), noState));
      });
    } else {
      test(`v${version}: room_id domain must match the sender's (1.2)`, () => {
        rejected(checkEventAuth(create(version, { room_id: "!room:evil.example" }), rv(version), noState), /not on the sender's server/, "1.2");
        rejected(checkEventAuth(create(version, { room_id: undefined }), rv(version), noState), /not on the sender's server/, "1.2");
      });
      test(`v${version}: additional_creators is not validated`, () => {
        allowed(checkEventAuth(create(version, {}, { additional_creators: "garbage" }), rv(version), noState));
      });
    }
    if (v <= 10) {
      test(`v${version}: content.creator is required (1.4)`, () => {
        const ev = create(version);
        delete (ev.content as Record<string, unknown>).creator;
        rejected(checkEventAuth(ev, rv(version), noState), /no creator/, "1.4");
      });
    } else {
      test(`v${version}: content.creator is not required`, () => {
        allowed(checkEventAuth(create(version), rv(version), noState));
      });
    }
  }
  test("missing room_version is fine (means v1 per spec; not an auth rule)", () => {
    allowed(checkEventAuth(create("11", {}, { room_version: undefined }), rv("11"), noState));
  });
});

describe("v12 rule 2: room_id is the create event's ID", () => {
  test("matching room_id is allowed; another room's ID is rejected", () => {
    const room = makeRoom("12");
    allowed(check(room, message(room, ALICE)));
    rejected(check(room, { ...message(room, ALICE), room_id: "!SomethingElse" }), /is not the ID of the room's create event/, "2");
  });
  test("a v11-style room ID is rejected", () => {
    const room = makeRoom("12");
    rejected(check(room, { ...message(room, ALICE), room_id: "!CreateHashV12:gate.example" }), undefined, "2");
  });
  test("missing create event / unknown create ID fail closed; createEventId option works", () => {
    const room = makeRoom("12");
    const { event_id: _e, ...bare } = room.create;
    room.set(bare);
    rejected(check(room, message(room, ALICE)), /create event's ID is unknown/, "2");
    allowed(check(room, message(room, ALICE), { createEventId: room.createId }));
    rejected(checkEventAuth(message(room, ALICE), room.rv, () => undefined), /no m\.room\.create/, "2");
  });
  test("≤v11: missing create event is rejected as rule 2.4", () => {
    const room = makeRoom("11");
    rejected(checkEventAuth(message(room, ALICE), room.rv, () => undefined), /no m\.room\.create/, "2.4");
  });
});

describe("m.federate (rule 4 v12 / 3 ≤v11)", () => {
  for (const version of KNOCK_VERSIONS) {
    const v = Number(version);
    test(`v${version}: m.federate false keeps remote users out (knock rejected), local users fine`, () => {
      const room = makeRoom(version, { createContent: { "m.federate": false } });
      rejected(check(room, member(room, BOB, BOB, "knock")), /not federated/, v >= 12 ? "4" : "3");
      allowed(check(room, member(room, "@dave:gate.example", "@dave:gate.example", "knock")));
    });
    test(`v${version}: m.federate true or absent does not restrict`, () => {
      const room = makeRoom(version, { createContent: { "m.federate": true } });
      allowed(check(room, member(room, BOB, BOB, "knock")));
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Auth events: selection (per version) and rule 3 / 2
// ---------------------------------------------------------------------------------------------

describe("auth events selection", () => {
  const knock = { type: "m.room.member", sender: BOB, state_key: BOB, content: { membership: "knock" } };
  for (const version of KNOCK_VERSIONS) {
    const v = Number(version);
    const withCreate = v <= 11;
    test(`v${version}: knock selects ${withCreate ? "create, " : ""}power_levels, knocker's member, join_rules`, () => {
      const expected = [
        ...(withCreate ? [["m.room.create", ""]] : []),
        ["m.room.power_levels", ""],
        ["m.room.member", BOB],
        ["m.room.join_rules", ""],
      ];
      assert.deepEqual(authEventKeys(knock, rv(version)), expected);
    });
    test(`v${version}: selectAuthEvents keeps only keys present in state (first knock has no member event)`, () => {
      const room = makeRoom(version);
      assert.deepEqual(selectAuthEvents(knock, room.lookup, room.rv), [
        ...(withCreate ? [["m.room.create", ""]] : []),
        ["m.room.power_levels", ""],
        ["m.room.join_rules", ""],
      ]);
      room.setMember(BOB, "leave");
      assert.equal(selectAuthEvents(knock, room.lookup, room.rv).length, withCreate ? 4 : 3);
    });
    test(`v${version}: message selects ${withCreate ? "create, " : ""}power_levels, sender's member`, () => {
      const room = makeRoom(version);
      assert.deepEqual(selectAuthEvents({ type: "m.room.message", sender: ALICE, content: {} }, room.lookup, room.rv), [
        ...(withCreate ? [["m.room.create", ""]] : []),
        ["m.room.power_levels", ""],
        ["m.room.member", ALICE],
      ]);
    });
    test(`v${version}: kick (leave by other) selects both members but not join_rules`, () => {
      const keys = authEventKeys({ type: "m.room.member", sender: MOD, state_key: BOB, content: { membership: "leave" } }, rv(version));
      assert.deepEqual(keys.slice(withCreate ? 1 : 0), [["m.room.power_levels", ""], ["m.room.member", MOD], ["m.room.member", BOB]]);
    });
    test(`v${version}: restricted join ${v >= 8 ? "adds" : "does not add"} the authorising user's member event`, () => {
      const keys = authEventKeys({ type: "m.room.member", sender: BOB, state_key: BOB, content: { membership: "join", join_authorised_via_users_server: MOD } }, rv(version));
      assert.equal(keys.some(([t, s]) => t === "m.room.member" && s === MOD), v >= 8);
    });
  }
  test("v6: knock membership does not select join_rules (knock unknown)", () => {
    const keys = authEventKeys(knock, rv("6"));
    assert.equal(keys.some(([t]) => t === "m.room.join_rules"), false);
  });
  test("third-party invite selects the token event", () => {
    const keys = authEventKeys({ type: "m.room.member", sender: MOD, state_key: BOB, content: { membership: "invite", third_party_invite: { signed: { token: "tok", mxid: BOB } } } }, rv("12"));
    assert.deepEqual(keys, [["m.room.power_levels", ""], ["m.room.member", MOD], ["m.room.member", BOB], ["m.room.join_rules", ""], ["m.room.third_party_invite", "tok"]]);
  });
  test("self-membership does not duplicate the member key", () => {
    assert.equal(authEventKeys(knock, rv("11")).filter(([t]) => t === "m.room.member").length, 1);
  });
  test("m.room.create has no auth events", () => {
    assert.deepEqual(authEventKeys({ type: "m.room.create", sender: ADMIN, state_key: "", content: {} }, rv("11")), []);
  });
});

describe("auth_events list (rule 3 v12 / 2 ≤v11)", () => {
  const authEventsFor = (room: Room, ev: EventLike) => selectAuthEvents(ev, room.lookup, room.rv).map(([t, s]) => room.lookup(t, s)!);
  for (const version of KNOCK_VERSIONS) {
    const v = Number(version);
    const R = v >= 12 ? "3" : "2";
    test(`v${version}: the selected auth events pass, also through checkEventAuth({authEvents})`, () => {
      const room = makeRoom(version, { members: { [BOB]: "leave" } });
      const ev = member(room, BOB, BOB, "knock");
      const aes = authEventsFor(room, ev);
      allowed(checkAuthEventsList(ev, aes, room.rv));
      allowed(check(room, ev, { authEvents: aes }));
      // Authorising against the auth events alone (v12: the caller adds the create event).
      const lookup = stateLookupFromEvents(room.rv.createEventInAuthEvents ? aes : [room.create, ...aes]);
      allowed(checkEventAuth(ev, room.rv, lookup));
    });
    test(`v${version}: duplicate (type, state_key) is rejected (${R}.1)`, () => {
      const room = makeRoom(version);
      const ev = member(room, BOB, BOB, "knock");
      const aes = authEventsFor(room, ev);
      rejected(checkAuthEventsList(ev, [...aes, aes[aes.length - 1]!], room.rv), /more than once/, `${R}.1`);
    });
    test(`v${version}: an entry the selection would not pick is rejected (${R}.2)`, () => {
      const room = makeRoom(version);
      const ev = member(room, BOB, BOB, "knock");
      const aes = authEventsFor(room, ev);
      rejected(checkAuthEventsList(ev, [...aes, room.lookup("m.room.member", ALICE)!], room.rv), /would not pick/, `${R}.2`);
      const topic = stateEvent(room, "m.room.topic", "", ADMIN, { topic: "x" });
      rejected(check(room, ev, { authEvents: [...aes, topic] }), /m\.room\.topic/, `${R}.2`);
    });
    test(`v${version}: a rejected auth event is rejected (${R}.3)`, () => {
      const room = makeRoom(version);
      const ev = member(room, BOB, BOB, "knock");
      const aes = authEventsFor(room, ev);
      const jr = room.lookup("m.room.join_rules", "");
      rejected(checkAuthEventsList(ev, aes, room.rv, { isRejected: (e) => e === jr }), /was itself rejected/, `${R}.3`);
    });
    test(`v${version}: auth event from another room is rejected (${R}.5)`, () => {
      const room = makeRoom(version);
      const ev = member(room, BOB, BOB, "knock");
      const aes = authEventsFor(room, ev).map((e) => (e.type === "m.room.join_rules" ? { ...e, room_id: "!other:gate.example" } : e));
      rejected(checkAuthEventsList(ev, aes, room.rv), /belongs to room !other/, `${R}.5`);
    });
    if (v <= 11) {
      test(`v${version}: missing create event is rejected (2.4)`, () => {
        const room = makeRoom(version);
        const ev = message(room, ALICE);
        const aes = authEventsFor(room, ev).filter((e) => e.type !== "m.room.create");
        rejected(checkAuthEventsList(ev, aes, room.rv), /no m\.room\.create/, "2.4");
      });
    } else {
      test("v12: a create event in auth_events is an unexpected entry (3.2)", () => {
        const room = makeRoom(version);
        const ev = message(room, ALICE);
        const aes = authEventsFor(room, ev);
        rejected(checkAuthEventsList(ev, [room.create, ...aes], room.rv), /must not be in auth_events/, "3.2");
        allowed(checkAuthEventsList(ev, aes, room.rv), "no create needed");
      });
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

describe("helpers", () => {
  test("default levels", () => {
    assert.deepEqual(
      { ...DEFAULT_POWER_LEVELS },
      { ban: 50, kick: 50, redact: 50, invite: 0, state_default: 50, events_default: 0, users_default: 0, notifications_room: 50 },
    );
    assert.deepEqual({ ...NO_POWER_LEVELS_EVENT_DEFAULTS }, { state_default: 50, events_default: 0, users_default: 0, creator: 100 });
    const v = rv("11");
    for (const name of ["ban", "kick", "redact"] as const) {
      assert.equal(namedLevel(name, {}, v), 50);
      assert.equal(namedLevel(name, undefined, v), 50);
    }
    assert.equal(namedLevel("invite", {}, v), 0);
    assert.equal(namedLevel("invite", { invite: 25 }, v), 25);
  });
  test("requiredPowerLevel: with and without a power-levels event", () => {
    const v = rv("12");
    assert.equal(requiredPowerLevel("m.room.topic", true, undefined, v), 50);
    assert.equal(requiredPowerLevel("m.room.message", false, undefined, v), 0);
    assert.equal(requiredPowerLevel("m.room.topic", true, {}, v), 50);
    assert.equal(requiredPowerLevel("m.room.message", false, {}, v), 0);
    assert.equal(requiredPowerLevel("m.room.topic", true, { state_default: 20, events: { "m.room.topic": 5 } }, v), 5);
    assert.equal(requiredPowerLevel("m.room.message", false, { events_default: 7 }, v), 7);
  });
  test("powerLevelOf: users, users_default, no-event defaults", () => {
    const room = makeRoom("11");
    assert.equal(powerLevelOf(MOD, { users: { [MOD]: 50 }, users_default: 5 }, room.create, room.rv), 50);
    assert.equal(powerLevelOf(ALICE, { users: { [MOD]: 50 }, users_default: 5 }, room.create, room.rv), 5);
    assert.equal(powerLevelOf(ALICE, {}, room.create, room.rv), 0);
    assert.equal(powerLevelOf(ADMIN, {}, room.create, room.rv), 0, "with a PL event the creator has no implicit 100 before v12");
    assert.equal(powerLevelOf(ADMIN, undefined, room.create, room.rv), 100);
  });
  test("canSendState", () => {
    for (const version of ["11", "12"]) {
      const room = makeRoom(version);
      const pl = standardPowerLevels(room.rv);
      assert.equal(canSendState(MOD, "m.room.name", pl, room.create, room.rv), true);
      assert.equal(canSendState(ALICE, "m.room.name", pl, room.create, room.rv), false);
      assert.equal(canSendState(ADMIN, "m.room.tombstone", { ...pl, events: { "m.room.tombstone": 150 } }, room.create, room.rv), version === "12");
    }
  });
  test("currentMembership, joinRuleOf, joinRuleAllowsKnock", () => {
    const room = makeRoom("10", { joinRule: null, members: { [BOB]: "knock" } });
    assert.equal(currentMembership(room.lookup, BOB), "knock");
    assert.equal(currentMembership(room.lookup, CAROL), undefined);
    assert.equal(joinRuleOf(room.lookup), "invite");
    room.set(stateEvent(room, "m.room.join_rules", "", ADMIN, { join_rule: "knock_restricted" }));
    assert.equal(joinRuleOf(room.lookup), "knock_restricted");
    assert.equal(joinRuleAllowsKnock("knock_restricted", rv("9")), false);
    assert.equal(joinRuleAllowsKnock("knock_restricted", rv("10")), true);
    assert.equal(joinRuleAllowsKnock("knock", rv("6")), false);
    assert.equal(joinRuleAllowsKnock("knock", rv("7")), true);
  });
  test("stateLookupFromEvents: later entries win, non-state events ignored", () => {
    const room = makeRoom("12");
    const a = member(room, BOB, BOB, "knock");
    const b = member(room, BOB, BOB, "leave");
    const lookup = stateLookupFromEvents([a, message(room, ALICE), b]);
    assert.equal(lookup("m.room.member", BOB), b);
    assert.equal(lookup("m.room.message", ""), undefined);
  });
  test("canApplyRedaction: redact level or same server as the redacted event's sender", () => {
    const room = makeRoom("11");
    const target = message(room, BOB);
    assert.equal(canApplyRedaction(message(room, MOD, "m.room.redaction"), target, room.lookup, room.rv), true);
    assert.equal(canApplyRedaction(message(room, ALICE, "m.room.redaction"), target, room.lookup, room.rv), false);
    assert.equal(canApplyRedaction(message(room, CAROL, "m.room.redaction"), target, room.lookup, room.rv), true);
  });
  test("isValidUserId", () => {
    assert.equal(isValidUserId(`@${"a".repeat(250)}:x.y`), true, "255 bytes is the limit");
    for (const ok of [ADMIN, "@a:1.2.3.4", "@a:[::1]", "@a:example.org:8448", "@Historic=Local+Part:x.y"]) assert.equal(isValidUserId(ok), true, ok);
    for (const bad of ["admin:gate.example", "@:gate.example", "@a", "@a:", "@a:host:99999", "@a b:x", 42, `@${"a".repeat(251)}:x.y`]) {
      assert.equal(isValidUserId(bad), false, String(bad));
    }
  });
});

describe("rule numbering follows each version's spec text", () => {
  // Transcribed from the v1, v3, v6–v7, v8, v10, v11, v12 rule lists.
  const cases: Array<[string, (string | number)[], string]> = [
    ["12", ["roomId"], "2"],
    ["12", ["member", "knock", "joinRule"], "5.7.1"],
    ["11", ["member", "knock", "joinRule"], "4.7.1"],
    ["8", ["member", "knock", "state"], "4.7.3"],
    ["7", ["member", "knock", "state"], "4.6.3"],
    ["7", ["member", "unknown"], "4.7"],
    ["12", ["member", "join", "restricted"], "5.3.5"],
    ["9", ["member", "join", "public"], "4.3.6"],
    ["7", ["member", "join", "public"], "4.2.5"],
    ["12", ["member", "invite", "thirdParty", 7], "5.4.1.7"],
    ["12", ["powerLevels", "creatorsInUsers"], "10.4"],
    ["12", ["powerLevels", "usersAdded"], "10.10"],
    ["11", ["powerLevels", "noPrevious"], "9.4"],
    ["9", ["powerLevels", "users"], "9.1"],
    ["12", ["create", "additionalCreators"], "1.4"],
    ["11", ["create", "roomVersion"], "1.3"],
    ["10", ["create", "creator"], "1.4"],
    ["12", ["authEvents", "otherRoom"], "3.5"],
    ["12", ["otherwise"], "11"],
    ["11", ["otherwise"], "10"],
    ["6", ["member"], "4"],
    ["5", ["aliases"], "4"],
    ["5", ["member"], "5"],
    ["1", ["redaction"], "11"],
    ["1", ["otherwise"], "12"],
  ];
  for (const [version, path, expected] of cases) {
    test(`v${version} ${path.join(".")} = ${expected}`, () => assert.equal(ruleNumber(rv(version), path), expected));
  }
  test("a rule that does not exist in the version throws", () => {
    assert.throws(() => ruleNumber(rv("11"), ["roomId"]));
    assert.throws(() => ruleNumber(rv("7"), ["member", "knock", "nope"]));
  });
  test("every room version 1–12 authorises a plain message in a well-formed room", () => {
    for (const version of ALL_VERSIONS) allowed(check(makeRoom(version), message(makeRoom(version), ALICE)), `v${version}`);
  });
});
