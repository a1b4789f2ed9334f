// Partial-state send_join (omit_members=true): which state a resident keeps (protocol/partial-join.ts).
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { heroCandidates, HeroPicker, MAX_HEROES, namesItself, partialJoinState, type StateEntry } from "../../src/protocol/partial-join.js";
import { omitMembersOf } from "../../src/federation/membership-routes.js";
import { MatrixError } from "../../src/protocol/errors.js";
import type { Pdu } from "../../src/protocol/pdu.js";

const JOINER = "@joiner:remote.example";

function ev(type: string, stateKey: string, content: Record<string, unknown>, eventId = `$${type}|${stateKey}`): StateEntry {
  const pdu: Pdu = { type, state_key: stateKey, sender: "@creator:gh.example", content, origin_server_ts: 0, depth: 1, prev_events: [], auth_events: [], room_id: "!r:gh.example", hashes: { sha256: "" }, signatures: {} };
  return { eventId, pdu };
}
const member = (user: string, membership: string) => ev("m.room.member", user, { membership }, `$member|${user}|${membership}`);

const CREATE = ev("m.room.create", "", { room_version: "10", creator: "@creator:gh.example" });
const POWER = ev("m.room.power_levels", "", { users: { "@creator:gh.example": 100 } });
const RULES = ev("m.room.join_rules", "", { join_rule: "public" });
const NAME = ev("m.room.name", "", { name: "Lobby" });
const EMPTY_NAME = ev("m.room.name", "", { name: "" });
const ALIAS = ev("m.room.canonical_alias", "", { alias: "#lobby:gh.example" });
const NO_ALIAS = ev("m.room.canonical_alias", "", { alt_aliases: [] });
const TOPIC = ev("m.room.topic", "", { topic: "hi" });
const BASE = [CREATE, POWER, RULES, TOPIC];

describe("namesItself: whether heroes are needed", () => {
  const cases: { why: string; state: StateEntry[]; names: boolean }[] = [
    { why: "a room with an m.room.name names itself: no heroes", state: [...BASE, NAME], names: true },
    { why: "a canonical alias alone names the room (spec: no name *nor* canonical alias → heroes)", state: [...BASE, ALIAS], names: true },
    { why: "neither event: the heroes are needed", state: BASE, names: false },
    { why: "a removed name (empty) is 'unset or empty' in the /sync room summary rules", state: [...BASE, EMPTY_NAME], names: false },
    { why: "a canonical alias event without an alias does not name the room", state: [...BASE, NO_ALIAS], names: false },
    { why: "a name event with a non-empty state_key is not the room's name", state: [...BASE, ev("m.room.name", "x", { name: "Not it" })], names: false },
  ];
  for (const c of cases) test(c.why, () => assert.equal(namesItself(c.state), c.names));
});

describe("heroCandidates and HeroPicker: the m.heroes rules of the /sync room summary", () => {
  const a = member("@a:x", "join");
  const b = member("@b:x", "invite");
  const c = member("@c:x", "leave");
  const d = member("@d:x", "ban");
  const k = member("@k:x", "knock");
  const self = member(JOINER, "invite");
  const seven = ["@m1:x", "@m2:x", "@m3:x", "@m4:x", "@m5:x", "@m6:x", "@m7:x"].map((u) => member(u, "join"));
  const order = (...es: StateEntry[]) => es.map((e) => e.eventId);
  // `stream`: the room's events in stream order, as the timeline gives them (pages of `page`).
  const cases: { why: string; state: StateEntry[]; stream: string[]; page?: number; heroes: string[]; pagesRead?: number }[] = [
    { why: "joined and invited members are heroes; left, banned and knocking ones are not", state: [...BASE, a, b, c, d, k], stream: order(CREATE, a, b, c, d, k), heroes: ["@a:x", "@b:x"] },
    { why: "the joining user is never their own hero (spec: never the client's own user ID)", state: [...BASE, a, self], stream: order(self, a), heroes: ["@a:x"] },
    { why: "with no joined or invited members, the left and banned ones stand in", state: [...BASE, c, d, k, self], stream: order(c, d, k, self), heroes: ["@c:x", "@d:x"] },
    { why: "nobody else in the room: no heroes", state: [...BASE, self], stream: order(CREATE, self), heroes: [] },
    { why: "ordered by stream position, not by user ID", state: [...BASE, a, b], stream: order(b, POWER, a), heroes: ["@b:x", "@a:x"] },
    { why: "events no longer in state (an earlier membership, other events) are passed over", state: [...BASE, a], stream: ["$old-membership-of-a", "$message", a.eventId], heroes: ["@a:x"] },
    {
      why: "the first 5 only, and the timeline is read no further than needed (spec: 'the first 5 members')",
      state: [...BASE, ...seven],
      stream: order(...[...seven].reverse(), TOPIC),
      page: 2,
      heroes: ["@m7:x", "@m6:x", "@m5:x", "@m4:x", "@m3:x"],
      pagesRead: 3,
    },
    {
      why: "a gone member seen before the present ones does not count once anyone is present",
      state: [...BASE, c, a],
      stream: order(c, a),
      heroes: ["@a:x"],
    },
  ];
  for (const c of cases)
    test(c.why, () => {
      const candidates = heroCandidates(c.state, JOINER);
      const picker = new HeroPicker((id) => candidates.get(id));
      const page = c.page ?? 100;
      let pages = 0;
      for (let i = 0; i < c.stream.length; i += page) {
        pages++;
        if (picker.take(c.stream.slice(i, i + page))) break;
      }
      const picked = picker.heroes();
      assert.ok(picked.length <= MAX_HEROES);
      const byId = new Map(c.state.map((e) => [e.eventId, e.pdu.state_key]));
      assert.deepEqual(
        picked.map((id) => byId.get(id)),
        c.heroes,
      );
      if (c.pagesRead !== undefined) assert.equal(pages, c.pagesRead);
    });
});

describe("partialJoinState: the state a partial-state send_join keeps", () => {
  const a = member("@a:x", "join");
  const b = member("@b:x", "join");
  const own = member(JOINER, "invite");
  const cases: { why: string; state: StateEntry[]; heroes: string[]; kept: string[] }[] = [
    { why: "every non-member state event is kept and members are omitted", state: [...BASE, NAME, a, b], heroes: [], kept: [...BASE, NAME].map((e) => e.eventId) },
    {
      why: "the joiner's own membership before the join (their invite) is kept: the join's auth events name it",
      state: [...BASE, NAME, a, own],
      heroes: [],
      kept: [...BASE, NAME, own].map((e) => e.eventId),
    },
    { why: "the heroes' memberships are kept (MSC3943), in state order", state: [...BASE, a, b], heroes: [b.eventId], kept: [...BASE, b].map((e) => e.eventId) },
    { why: "a hero ID that is no membership in this state keeps nothing extra", state: [...BASE, a], heroes: ["$elsewhere"], kept: BASE.map((e) => e.eventId) },
  ];
  for (const c of cases)
    test(c.why, () =>
      assert.deepEqual(
        partialJoinState(c.state, JOINER, new Set(c.heroes)).map((e) => e.eventId),
        c.kept,
      ),
    );
});

describe("omit_members query parameter", () => {
  const cases: { why: string; query: Record<string, unknown>; omit?: boolean; refused?: boolean }[] = [
    { why: "absent: the full answer, as before spec v1.6", query: {}, omit: false },
    { why: "'true' asks for a partial-state answer (Synapse sends omit_members=true)", query: { omit_members: "true" }, omit: true },
    { why: "'false' asks for the full answer", query: { omit_members: "false" }, omit: false },
    { why: "a boolean query parameter is 'true' or 'false' only (Synapse's parse_boolean: 400)", query: { omit_members: "yes" }, refused: true },
    { why: "a repeated parameter is no boolean", query: { omit_members: ["true", "true"] }, refused: true },
  ];
  for (const c of cases)
    test(c.why, () => {
      if (c.refused) {
        assert.throws(
          () => omitMembersOf(c.query),
          (e: unknown) => e instanceof MatrixError && e.status === 400 && e.errcode === "M_INVALID_PARAM",
        );
      } else assert.equal(omitMembersOf(c.query), c.omit);
    });
});
