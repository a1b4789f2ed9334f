/**
 * Two real Gatehouse processes' worth of services (each with its own embedded redis-server and
 * HTTPS listener) federating with each other: knock → accept → auto-join, events delivered by the
 * sender, a rescind, and a knock on an upgraded room that follows the tombstone to the
 * replacement room.
 */
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startLoopbackGatehouse, type LoopbackGatehouse } from "../../src/dev/loopback.js";
import { waitFor } from "../../src/dev/wait.js";

const enc = encodeURIComponent;

describe("two Gatehouses federating", () => {
  let a: LoopbackGatehouse;
  let b: LoopbackGatehouse;
  before(async () => {
    // Each gets its own embedded Redis: they are two independent servers.
    a = await startLoopbackGatehouse({ label: "pair-a", env: { REDIS_URL: undefined }, logLevel: "silent" });
    b = await startLoopbackGatehouse({ label: "pair-b", env: { REDIS_URL: undefined }, logLevel: "silent" });
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
  });

  test("knock → accept → auto-join; A's events reach B; B rescinds another knock", async () => {
    const alice = `@alice:${a.serverName}`;
    const room = (await a.admin("POST", "/rooms", { creator: alice, join_rule: "knock", room_version: "11", name: "pair" })).body.room_id;
    const bob = `@bob:${b.serverName}`;
    const knock = await b.admin("POST", "/remote/knock", { user_id: bob, room_id: room, via: [a.serverName], reason: "hi", auto_join: true });
    assert.equal(knock.status, 200, JSON.stringify(knock.body));
    assert.deepEqual(knock.body.room_state.map((s: any) => s.type).sort(), ["m.room.create", "m.room.join_rules", "m.room.name"]);
    assert.equal((await a.admin("POST", `/rooms/${enc(room)}/knocks/${enc(bob)}/accept`, {})).status, 200);
    await waitFor("bob joined on A", async () => (await a.admin("GET", `/rooms/${enc(room)}/members`)).body.members[bob] === "join");
    const rec = await waitFor("B's record says join", async () =>
      (await b.admin("GET", `/remote/memberships?user_id=${enc(bob)}`)).body.memberships.find((m: any) => m.room_id === room && m.membership === "join"),
    );
    assert.equal(rec.room_version, "11");

    assert.equal((await a.admin("PUT", `/rooms/${enc(room)}/state/m.room.topic`, { content: { topic: "to B" } })).status, 200);
    const q = await waitFor("A's queue to B drained", async () => {
      const r = await a.admin("GET", `/queue/${enc(b.serverName)}`);
      return r.status === 200 && r.body.pending_pdus === 0 && r.body.txns_sent > 0 ? r.body : null;
    });
    assert.equal(q.dropped_pdus, 0);

    const carol = `@carol:${b.serverName}`;
    assert.equal((await b.admin("POST", "/remote/knock", { user_id: carol, room_id: room, via: [a.serverName] })).status, 200);
    assert.equal((await a.admin("GET", `/rooms/${enc(room)}/members`)).body.members[carol], "knock");
    const left = await b.admin("POST", "/remote/leave", { user_id: carol, room_id: room });
    assert.equal(left.status, 200, JSON.stringify(left.body));
    assert.equal((await a.admin("GET", `/rooms/${enc(room)}/members`)).body.members[carol], "leave");
  });

  test("a knock on an upgraded room follows the tombstone to the replacement", async () => {
    const alice = `@alice:${a.serverName}`;
    const old = (await a.admin("POST", "/rooms", { creator: alice, join_rule: "knock", room_version: "10" })).body.room_id;
    const up = await a.admin("POST", `/rooms/${enc(old)}/upgrade`, { new_version: "12" });
    assert.equal(up.status, 200, JSON.stringify(up.body));
    const dave = `@dave:${b.serverName}`;
    const knock = await b.admin("POST", "/remote/knock", { user_id: dave, room_id: old, via: [a.serverName] });
    assert.equal(knock.status, 200, JSON.stringify(knock.body));
    assert.equal(knock.body.room_id, up.body.replacement_room, "knocked on the replacement room");
    assert.equal(knock.body.room_version, "12");
    assert.equal((await a.admin("GET", `/rooms/${enc(up.body.replacement_room)}/members`)).body.members[dave], "knock");
    const refused = await b.admin("POST", "/remote/knock", { user_id: dave, room_id: old, via: [a.serverName], follow_tombstones: false });
    assert.equal(refused.status, 403);
    assert.equal(refused.body.replacement_room, up.body.replacement_room, "the refusal names the replacement");
  });
});
