// Faults on a real Redis Cluster (its own six redis-server processes, src/embedded-redis-cluster.ts):
// kill -9 the primary that holds the room's slot while an event stream fans out to 100
// destinations (local HTTPS sink peers). Its replica takes over; every event the writer saw
// acknowledged is delivered to every destination exactly once, and no PDU goes out under two
// txnIds (a txnId is re-sent only with its identical body).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import type { EmbeddedRedisCluster } from "../../src/embedded-redis-cluster.js";
import { GH_SERVER_NAME, clusterWithSinks, assertExactlyOncePerTxn, gatehouseKey, makeSender, numbersOf, uniquePrefix, type TestSender } from "../support/sender-fixture.js";
import type { Pdu } from "../../src/protocol/pdu.js";
import { Cleanups } from "../support/cleanups.js";

const key = gatehouseKey();
const cleanups = new Cleanups("cluster-failover");
after(() => cleanups.run());

/** The port of the primary serving `slot` (CLUSTER NODES of a live node). */
async function primaryOf(cluster: EmbeddedRedisCluster, slot: number): Promise<number> {
  const live = cluster.nodes.find((n) => n.child.exitCode === null && n.child.signalCode === null)!;
  for (const line of (await cluster.command(live.port, "CLUSTER", "NODES")).trim().split("\n")) {
    const f = line.split(" ");
    if (!f[2]!.includes("master") || f[2]!.includes("fail")) continue;
    for (const range of f.slice(8)) {
      const [a, b = a] = range.split("-").map(Number);
      if (slot >= a! && slot <= b!) return Number(f[1]!.split("@")[0]!.split(":")[1]);
    }
  }
  throw new Error(`no live primary serves slot ${slot}`);
}

test("kill -9 of the room's primary during fan-out to 100 destinations: a replica takes over, 0 PDUs lost, 0 under a second txnId", { timeout: 180_000 }, async () => {
  const { cluster, sinks } = await clusterWithSinks(cleanups, { name: "failover", key, nodeTimeoutMs: 1_000, sinkCount: 100 });
  const prefix = uniquePrefix("failover");
  const s: TestSender = makeSender({ prefix, key, redisUrl: cluster.url, settings: { sweepIntervalMs: 500, lockDurationMs: 2_000, concurrency: 100 } });
  cleanups.add("the sender", () => s.close());
  await s.sender.startWorkers();
  const destinations = sinks.map((k) => k.serverName);
  const roomId = `!failover${Date.now()}:${GH_SERVER_NAME}`;
  const slot = Number(await cluster.command(cluster.nodes[0]!.port, "CLUSTER", "KEYSLOT", s.keys.room(roomId)));
  const victim = await primaryOf(cluster, slot);

  const EVENTS = 40;
  const acknowledged: number[] = [];
  let failedWrites = 0;
  const started = Date.now();
  let killedAt = 0;
  for (let i = 0; i < EVENTS; i++) {
    if (i === 15) {
      cluster.nodes.find((n) => n.port === victim)!.child.kill("SIGKILL");
      killedAt = Date.now();
      console.log(`# failover: killed :${victim} after ${Date.now() - started} ms`);
    }
    const pdu = { room_id: roomId, type: "m.room.message", sender: `@bot:${GH_SERVER_NAME}`, origin_server_ts: 1_700_000_000_000 + i, depth: i + 1, prev_events: [], auth_events: [], content: { msgtype: "m.text", body: `m${i}`, n: i }, hashes: { sha256: "x" } } as unknown as Pdu;
    // A writer retries a write that failed (as a remote server re-sends its transaction).
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await s.store.persistEvent({ roomId, eventId: `$f${i}`, pdu, expectedStream: null, updatesState: false, destinations });
        assert.ok(r === "persisted" || r === "duplicate", r);
        acknowledged.push(i);
        s.sender.wake(destinations);
        break;
      } catch (err) {
        failedWrites++;
        if (attempt > 200) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
  const writesDoneMs = Date.now() - killedAt;
  console.log(`# failover: writes done ${writesDoneMs} ms after the kill (${failedWrites} failed and retried)`);
  await Promise.all(sinks.map((k) => k.waitFor(() => new Set(numbersOf(k.delivered)).size >= EVENTS, 90_000, `${EVENTS} PDUs`).catch(() => undefined)));
  const promoted = await primaryOf(cluster, slot);
  let lost = 0;
  let duplicated = 0;
  for (const k of sinks) {
    const got = numbersOf(k.delivered);
    lost += acknowledged.filter((n) => !got.includes(n)).length;
    duplicated += got.length - new Set(got).size;
    assertExactlyOncePerTxn(k.attempts);
  }
  // Figures for the report (node --test prints diagnostics).
  const txns = sinks.reduce((a, k) => a + new Set(k.attempts.map((t) => t.txnId)).size, 0);
  console.log(`# failover: killed primary :${victim} (slot ${slot}) after 15 of ${EVENTS} events; replica :${promoted} took over; writes failed and retried ${failedWrites}×; writes done ${writesDoneMs} ms after the kill; ${txns} txns to 100 destinations in ${Date.now() - started} ms; lost ${lost}, duplicated ${duplicated}`);
  assert.notEqual(promoted, victim, "a replica was promoted");
  assert.equal(lost, 0, "0 acknowledged PDUs lost");
  assert.equal(duplicated, 0, "0 PDUs delivered twice");
});
