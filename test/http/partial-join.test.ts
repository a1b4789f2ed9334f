// send_join v2 with omit_members=true (a partial-state join, spec v1.6+), as Synapse 1.160 asks
// for it when its server is not in the room yet: membership events are left out of `state`
// except the joiner's own and the heroes' (a room without name or canonical alias), `auth_chain`
// still closes everything served, and `servers_in_room` lists the servers joined before the join.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, ADMIN, FED, enc } from "../support/gatehouse.js";
import { RemoteServer, roomVersion } from "../support/remote-server.js";
import { computeEventId } from "../../src/protocol/event-hashing.js";
import type { Pdu } from "../../src/protocol/pdu.js";

let t: TestGatehouse;
let a: RemoteServer;
let b: RemoteServer;
let joiner: RemoteServer;
let n = 0;
const fresh = (server: RemoteServer) => server.userId(`p${++n}`);

before(async () => {
  t = await TestGatehouse.start({ name: "partialjoin" });
  [a, b, joiner] = await Promise.all([RemoteServer.start(), RemoteServer.start(), RemoteServer.start()]);
});
after(async () => {
  await t.cleanup();
  await Promise.all([a.close(), b.close(), joiner.close()]);
});

type Answer = { origin: string; state: Pdu[]; auth_chain: Pdu[]; event: Pdu; members_omitted: boolean; servers_in_room: string[] };

/** make_join, then send_join with `query`; returns the answer and the join's ID. */
async function sendJoin(server: RemoteServer, roomId: string, userId: string, query: string) {
  const made = await t.makeMembership(server, "join", roomId, userId, ["12", "11", "10"]);
  assert.equal(made.status, 200, JSON.stringify(made.body));
  const { pdu, eventId } = server.signEvent(made.body.event, made.body.room_version);
  const path = `${FED}/v2/send_join/${enc(roomId)}/${enc(eventId)}${query}`;
  return { pdu, eventId, path, versionId: made.body.room_version as string, send: () => t.fed(server, "PUT", path, pdu) };
}

/** Every auth event of what was served (state, the join, the chain) is in state or auth_chain. */
function assertClosed(answer: Answer, join: Pdu, versionId: string) {
  const v = roomVersion(versionId);
  const have = new Set([...answer.state, ...answer.auth_chain].map((e) => computeEventId(e, v)));
  for (const e of [...answer.state, join, ...answer.auth_chain])
    for (const id of e.auth_events as string[]) assert.ok(have.has(id), `${e.type} ${e.state_key ?? ""} names auth event ${id}, served nowhere`);
}

const ids = (pdus: Pdu[], versionId: string) => pdus.map((e) => computeEventId(e, roomVersion(versionId)));

describe("send_join v2 with omit_members=true", () => {
  test("a named room: every non-member state event, no memberships, nothing twice, the chain closed", async () => {
    const roomId = await t.createRoom({ join_rule: "public", name: "Lobby", topic: "partial joins" });
    const members = [fresh(a), fresh(a), fresh(b)];
    for (const [i, u] of members.entries()) await t.join(i < 2 ? a : b, roomId, u);
    const before = await t.graph(roomId);
    const user = fresh(joiner);
    const j = await sendJoin(joiner, roomId, user, "?omit_members=true");
    const res = await j.send();
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const answer = res.body as Answer;
    assert.equal(answer.members_omitted, true);
    assert.equal(answer.origin, t.serverName);
    assert.deepEqual(answer.event, j.pdu);
    // servers_in_room: the servers with joined members before the join (required when members are omitted).
    assert.deepEqual(answer.servers_in_room, [a.serverName, b.serverName, t.serverName].sort());
    const expected = [...before.state.entries()].filter(([, e]) => e.type !== "m.room.member").map(([field]) => before.stateIds.get(field)!);
    assert.deepEqual(ids(answer.state, j.versionId).sort(), expected.sort());
    assert.ok(answer.state.some((e) => e.type === "m.room.name"));
    assertClosed(answer, j.pdu, j.versionId);
    // The creator's membership (an auth event of the power levels) comes through auth_chain.
    assert.ok(answer.auth_chain.some((e) => e.type === "m.room.member" && e.state_key === t.creator));
    // Events in state are left out of auth_chain (spec: "may be omitted").
    const inState = new Set(ids(answer.state, j.versionId));
    assert.deepEqual(ids(answer.auth_chain, j.versionId).filter((id) => inState.has(id)), []);
    // The joined members other than the creator appear nowhere.
    for (const u of members) assert.ok(![...answer.state, ...answer.auth_chain].some((e) => e.state_key === u), `${u}'s membership was served`);
    assert.equal(await t.store.getMembership(roomId, user), "join");
  });

  test("a room without name or canonical alias keeps its 5 heroes' memberships, in stream order, not the joiner's", async () => {
    const roomId = await t.createRoom({ join_rule: "public" });
    const members = [fresh(a), fresh(b), fresh(a), fresh(b), fresh(a), fresh(b)];
    for (const [i, u] of members.entries()) await t.join(i % 2 === 0 ? a : b, roomId, u);
    const user = fresh(joiner);
    const res = await (await sendJoin(joiner, roomId, user, "?omit_members=true")).send();
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const answer = res.body as Answer;
    const heroes = answer.state.filter((e) => e.type === "m.room.member").map((e) => e.state_key);
    // The creator joined first, then the members in order: the first 5 of them.
    assert.deepEqual(heroes.sort(), [t.creator, ...members.slice(0, 4)].sort());
    assert.ok(!heroes.includes(user));
  });

  test("the joiner's own invite stays in state: the join's auth events name it", async () => {
    const roomId = await t.createRoom({ name: "Knock room" });
    const user = fresh(joiner);
    const { joinEventId } = await knockAcceptAndJoin(roomId, user, "?omit_members=true");
    assert.ok(joinEventId.answer.state.some((e) => e.type === "m.room.member" && e.state_key === user && (e.content as { membership?: string }).membership === "invite"));
    assertClosed(joinEventId.answer, joinEventId.pdu, joinEventId.versionId);
  });

  test("without omit_members (or with false) the answer stays the full one", async () => {
    const roomId = await t.createRoom({ join_rule: "public", name: "Full" });
    await t.join(a, roomId, fresh(a));
    for (const query of ["", "?omit_members=false"]) {
      const before = await t.graph(roomId);
      const j = await sendJoin(joiner, roomId, fresh(joiner), query);
      const res = await j.send();
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const answer = res.body as Answer;
      assert.equal(answer.members_omitted, false, query);
      assert.deepEqual(ids(answer.state, j.versionId).sort(), [...before.stateIds.values()].sort(), query);
      assertClosed(answer, j.pdu, j.versionId);
    }
  });

  test("a retried partial-state send_join answers the same partial state before the join", async () => {
    const roomId = await t.createRoom({ join_rule: "public" });
    await t.join(a, roomId, fresh(a));
    const j = await sendJoin(joiner, roomId, fresh(joiner), "?omit_members=true");
    const first = await j.send();
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const again = await t.assertNothingWritten(() => j.send());
    assert.equal(again.status, 200, JSON.stringify(again.body));
    assert.equal(again.body.members_omitted, true);
    assert.deepEqual(ids(again.body.state, j.versionId).sort(), ids(first.body.state, j.versionId).sort());
    assert.deepEqual(ids(again.body.auth_chain, j.versionId).sort(), ids(first.body.auth_chain, j.versionId).sort());
  });

  test("omit_members that is not a boolean: 400 M_INVALID_PARAM, nothing written", async () => {
    const roomId = await t.createRoom({ join_rule: "public" });
    const j = await sendJoin(joiner, roomId, fresh(joiner), "?omit_members=1");
    const res = await t.assertNothingWritten(() => j.send());
    assert.equal(res.status, 400, JSON.stringify(res.body));
    assert.equal(res.body.errcode, "M_INVALID_PARAM");
  });
});

/** knock, admin accept (an invite through the joiner's /v2/invite), then send_join with `query`. */
async function knockAcceptAndJoin(roomId: string, user: string, query: string) {
  await t.knock(joiner, roomId, user);
  const acc = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/knocks/${enc(user)}/accept`).send({});
  assert.equal(acc.status, 200, JSON.stringify(acc.body));
  const j = await sendJoin(joiner, roomId, user, query);
  const res = await j.send();
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return { joinEventId: { answer: res.body as Answer, pdu: j.pdu, versionId: j.versionId } };
}
