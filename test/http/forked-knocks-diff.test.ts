// Concurrent knock clients against a real Gatehouse (real Redis, real store and group cache): most
// knocks fork the room, and the planner diffs the current state against each fork's resolution
// (RoomStateService.diffTo). The current state's groups become a chain of deltas on the previous
// current state, away from the event groups the later forks meet at: the diffs must still be made
// over the deltas, never by comparing whole states because the walk did not meet (main did, for
// about a third of them: bench/README.md).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { TestGatehouse, FED, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";
import { Metrics } from "../../src/metrics.js";
import { stateField } from "../../src/store/room-store.js";

let t: TestGatehouse;
let remote: RemoteServer;
const metrics = new Metrics(new Registry(), { defaultMetrics: false });

before(async () => {
  t = await TestGatehouse.start({ name: "forked-knocks-diff", metrics });
  remote = await RemoteServer.start();
});
after(async () => {
  await t.cleanup();
  await remote.close();
});

async function diffs(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await metrics.roomStateDiffs.get()).values) out[String(v.labels.path)] = v.value;
  return out;
}

describe("forked room: the planner's diffs to fork answers", () => {
  test("8 clients knocking in a loop (make_knock, then send_knock), 12 each: every knock in state, every diff over the deltas", async () => {
    const roomId = await t.createRoom({ room_version: "12" });
    const users: string[] = [];
    // As the bench's 10-client row: each client's template is on the extremities it saw, and the
    // others' knocks are accepted before its send_knock, so most knocks fork the room.
    await Promise.all(
      Array.from({ length: 8 }, async (_, c) => {
        for (let i = 0; i < 12; i++) {
          const u = remote.userId(`client${c}-${i}`);
          users.push(u);
          const res = await t.fed(remote, "GET", `${FED}/v1/make_knock/${enc(roomId)}/${enc(u)}?ver=12`);
          assert.equal(res.status, 200, JSON.stringify(res.body));
          const s = remote.signEvent(res.body.event, res.body.room_version);
          const r = await t.fed(remote, "PUT", `${FED}/v1/send_knock/${enc(roomId)}/${enc(s.eventId)}`, s.pdu);
          assert.equal(r.status, 200, JSON.stringify(r.body));
        }
      }),
    );
    const members = await t.members(roomId);
    for (const u of users) assert.equal(members[u], "knock", `${u} is knocking`);
    const graph = await t.graph(roomId);
    for (const u of users) assert.ok(graph.stateIds.has(stateField("m.room.member", u)), `${u} in current state`);

    const d = await diffs();
    assert.ok((d.deltas ?? 0) >= 80, `diffs over the deltas: ${JSON.stringify(d)}`);
    assert.equal(d.whole_far ?? 0, 0, `no whole diff because the walk did not meet: ${JSON.stringify(d)}`);
    assert.equal(d.whole_large ?? 0, 0, `no whole diff because the deltas were large: ${JSON.stringify(d)}`);
  });
});
