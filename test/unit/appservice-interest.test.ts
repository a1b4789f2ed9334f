// Which application services an event is pushed to (Application Service API, "Pushing events"):
// sender, membership target or a joined member in a user namespace (the service's sender counts),
// the room ID in a room namespace, an alias in an alias namespace. Services without a url get nothing.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { parseRegistration } from "../../src/appservice/registration.js";
import { AppserviceRegistry } from "../../src/appservice/registry.js";
import { interestedServices, type RoomFacts } from "../../src/appservice/interest.js";
import type { Pdu } from "../../src/protocol/pdu.js";

const S = "gh.test";
const reg = (id: string, extra: string, url = "http://127.0.0.1:1") =>
  parseRegistration(`id: ${id}\nurl: ${url}\nas_token: a-${id}\nhs_token: h-${id}\nsender_localpart: ${id}bot\nnamespaces:\n${extra}`, `${id}.yaml`, S);
const registry = new AppserviceRegistry(
  [
    reg("users", '  users: [{ exclusive: true, regex: "@_u_.*" }]\n'),
    reg("rooms", '  rooms: [{ exclusive: false, regex: "!bridged.*" }]\n'),
    reg("aliases", '  aliases: [{ exclusive: true, regex: "#_a_.*" }]\n'),
    reg("silent", '  users: [{ exclusive: false, regex: "@.*" }]\n', "null"),
  ],
  S,
);

const ev = (e: Partial<Pdu>): Pdu => ({ type: "m.room.message", sender: "@someone:remote.test", content: {}, room_id: "!r:gh.test", ...e }) as Pdu;
const room = (r: Partial<RoomFacts> = {}): RoomFacts => ({ roomId: "!r:gh.test", joinedMembers: [], aliases: [], ...r });

const cases: { why: string; pdu: Pdu; room: RoomFacts; want: string[] }[] = [
  { why: "a namespace user sends", pdu: ev({ sender: "@_u_alice:gh.test" }), room: room(), want: ["users"] },
  { why: "the service's own sender sends", pdu: ev({ sender: "@aliasesbot:gh.test" }), room: room(), want: ["aliases"] },
  { why: "a knock by a remote user in a room where a namespace user is joined", pdu: ev({ type: "m.room.member", sender: "@k:remote.test", state_key: "@k:remote.test", content: { membership: "knock" } }), room: room({ joinedMembers: ["@_u_bot:gh.test"] }), want: ["users"] },
  { why: "an invite targeting a namespace user (state_key of a membership)", pdu: ev({ type: "m.room.member", state_key: "@_u_bob:gh.test", content: { membership: "invite" } }), room: room(), want: ["users"] },
  { why: "a state_key that looks like a namespace user on a non-member event is not a target", pdu: ev({ type: "org.example", state_key: "@_u_bob:gh.test" }), room: room(), want: [] },
  { why: "the room ID is in a room namespace", pdu: ev({ room_id: "!bridged1:gh.test" }), room: room({ roomId: "!bridged1:gh.test" }), want: ["rooms"] },
  { why: "an alias of the room is in an alias namespace", pdu: ev({}), room: room({ aliases: ["#_a_lobby:gh.test"] }), want: ["aliases"] },
  { why: "nobody's: a remote user in a room without namespace members", pdu: ev({}), room: room({ joinedMembers: ["@x:remote.test"] }), want: [] },
  { why: "a matching regex anywhere but the start does not count", pdu: ev({ sender: "@x_u_alice:gh.test" }), room: room(), want: [] },
];

describe("interestedServices", () => {
  for (const c of cases) {
    test(c.why, () => {
      assert.deepEqual(interestedServices(registry, c.pdu, c.room).map((r) => r.id).sort(), c.want.sort());
    });
  }
  test("a service whose url is null is never pushed to (its user namespace matches everything)", () => {
    assert.ok(!interestedServices(registry, ev({ sender: "@_u_alice:gh.test" }), room()).some((r) => r.id === "silent"));
  });
  test("registration ids of digits only are refused (as:{id} would read as a server name)", () => {
    assert.throws(() => parseRegistration('id: "1234"\nurl: null\nas_token: a\nhs_token: h\nsender_localpart: b\n', "n.yaml", S), /n\.yaml: id: must not be digits only/);
  });
});
