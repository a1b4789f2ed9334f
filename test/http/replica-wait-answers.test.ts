// GATEHOUSE_REDIS_WAIT_REPLICAS through a whole Gatehouse: every answer that promises a write took
// effect waits for the replicas first — createRoom, an admin send, a send_knock handshake and an
// inbound /send — and an answer that wrote nothing (a refused knock) does not wait. Counted by
// gatehouse_redis_replica_wait_seconds (one observation per WAIT). On the test's single Redis
// without replicas each WAIT times out after 50 ms and the write is still acknowledged; on the
// cluster pass the room's primary has a replica and acknowledges.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, ADMIN, FED, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";
import { Metrics } from "../../src/metrics.js";

let t: TestGatehouse;
let remote: RemoteServer;
const metrics = new Metrics(undefined, { defaultMetrics: false });

before(async () => {
  t = await TestGatehouse.start({ name: "wait-answers", metrics, env: { GATEHOUSE_REDIS_WAIT_REPLICAS: "1", GATEHOUSE_REDIS_WAIT_TIMEOUT_MS: "50" } });
  remote = await RemoteServer.start();
});
after(async () => {
  await t.cleanup();
  await remote.close();
});

/** WAITs sent so far (observations of the histogram). */
async function waits(): Promise<number> {
  const m = await metrics.registry.getSingleMetric("gatehouse_redis_replica_wait_seconds")!.get();
  return (m.values as { metricName?: string; value: number }[]).find((v) => v.metricName === "gatehouse_redis_replica_wait_seconds_count")?.value ?? 0;
}

/** How many WAITs `fn` caused. */
async function waitsDuring(fn: () => Promise<unknown>): Promise<number> {
  const before = await waits();
  await fn();
  return (await waits()) - before;
}

describe("answers that promise a write wait for the replicas", () => {
  let roomId: string;

  test("createRoom: one WAIT before the room ID is answered", async () => {
    assert.equal(await waitsDuring(async () => (roomId = await t.createRoom({ room_version: "12", join_rule: "knock" }))), 1);
  });

  test("an admin send: one WAIT", async () => {
    const n = await waitsDuring(async () => {
      const res = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/send/m.room.message`).send({ content: { msgtype: "m.text", body: "hi" } });
      assert.equal(res.status, 200, JSON.stringify(res.body));
    });
    assert.equal(n, 1);
  });

  test("send_knock: one WAIT before the 200 (the handshake promises the knock took effect)", async () => {
    const n = await waitsDuring(async () => {
      const { res } = await t.knock(remote, roomId, remote.userId("knocker"));
      assert.equal(res.status, 200, JSON.stringify(res.body));
    });
    assert.equal(n, 1);
  });

  test("a refused send_knock (its signature does not verify) waits for nothing", async () => {
    const made = await t.makeMembership(remote, "knock", roomId, remote.userId("bad"), ["12"]);
    assert.equal(made.status, 200, JSON.stringify(made.body));
    const signed = remote.signEvent({ ...made.body.event, origin_server_ts: Date.now() }, "12");
    // Signed by the remote's key, then the sender changed: the signature no longer covers the event.
    const tampered = { ...signed.pdu, origin_server_ts: (signed.pdu.origin_server_ts as number) + 1 };
    const n = await waitsDuring(async () => {
      const res = await t.fed(remote, "PUT", `${FED}/v1/send_knock/${enc(roomId)}/${enc(signed.eventId)}`, tampered);
      assert.ok(res.status >= 400 && res.status < 500, `${res.status} ${JSON.stringify(res.body)}`);
    });
    assert.equal(n, 0);
  });

  test("an inbound /send: one WAIT for the transaction", async () => {
    const joined = await t.join(remote, (roomId = await t.createRoom({ room_version: "12", join_rule: "public" })), remote.userId("alice"));
    assert.equal(joined.res.status, 200);
    const { pdu } = await t.remoteEvent(remote, roomId, { type: "m.room.message", sender: remote.userId("alice"), content: { msgtype: "m.text", body: "from afar" } });
    const n = await waitsDuring(async () => {
      const res = await t.fed(remote, "PUT", `${FED}/v1/send/wait-${Date.now()}`, { origin: remote.serverName, origin_server_ts: Date.now(), pdus: [pdu] });
      assert.equal(res.status, 200, JSON.stringify(res.body));
    });
    assert.equal(n, 1);
  });
});
