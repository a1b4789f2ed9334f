// Moving hash slots between primaries during traffic, on a real Redis Cluster (its own six
// redis-server processes): the room's slot, the slot of a sender shard's BullMQ queue and the slot
// of a destination's queue are resharded one after the other with CLUSTER SETSLOT … IMPORTING /
// MIGRATING, MIGRATE of a few keys at a time (pauses between batches so that writes meet the
// half-moved slot: ASK redirections and TRYAGAIN for scripts whose keys are split), then SETSLOT
// … NODE — while events are persisted and delivered to 20 destinations. Every acknowledged event
// reaches every destination exactly once, each txnId with one body.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import type { EmbeddedRedisCluster } from "../../src/embedded-redis-cluster.js";
import { GH_SERVER_NAME, clusterWithSinks, assertExactlyOncePerTxn, gatehouseKey, makeSender, numbersOf, uniquePrefix } from "../support/sender-fixture.js";
import { shardOf, shardQueueName } from "../../src/sender/shards.js";
import type { Pdu } from "../../src/protocol/pdu.js";
import { Cleanups } from "../support/cleanups.js";

const key = gatehouseKey();
const cleanups = new Cleanups("cluster-slot-move");
after(() => cleanups.run());

interface Primary {
  id: string;
  port: number;
  slots: [number, number][];
}

async function primaries(cluster: EmbeddedRedisCluster): Promise<Primary[]> {
  const out: Primary[] = [];
  for (const line of (await cluster.command(cluster.nodes[0]!.port, "CLUSTER", "NODES")).trim().split("\n")) {
    const f = line.split(" ");
    if (!f[2]!.includes("master")) continue;
    const slots = f.slice(8).filter((r) => !r.startsWith("[")).map((r) => {
      const [a, b = a] = r.split("-").map(Number);
      return [a!, b!] as [number, number];
    });
    out.push({ id: f[0]!, port: Number(f[1]!.split("@")[0]!.split(":")[1]), slots });
  }
  return out;
}

/**
 * Moves `slot` to another primary as `redis-cli --cluster reshard` does, `batch` keys per MIGRATE
 * with `pauseMs` between batches. Returns the keys moved and the source and target ports.
 */
async function moveSlot(cluster: EmbeddedRedisCluster, slot: number, batch = 3, pauseMs = 60): Promise<{ keys: number; from: number; to: number }> {
  const ps = await primaries(cluster);
  const src = ps.find((p) => p.slots.some(([a, b]) => slot >= a && slot <= b))!;
  const dst = ps.find((p) => p !== src)!;
  await cluster.command(dst.port, "CLUSTER", "SETSLOT", String(slot), "IMPORTING", src.id);
  await cluster.command(src.port, "CLUSTER", "SETSLOT", String(slot), "MIGRATING", dst.id);
  let moved = 0;
  for (;;) {
    const keys = (await cluster.command(src.port, "CLUSTER", "GETKEYSINSLOT", String(slot), String(batch))).split("\n").filter(Boolean);
    if (keys.length === 0) break;
    await cluster.command(src.port, "MIGRATE", "127.0.0.1", String(dst.port), "", "0", "5000", "REPLACE", "KEYS", ...keys);
    moved += keys.length;
    await new Promise((r) => setTimeout(r, pauseMs));
  }
  // Target first (as redis-cli does), then the source, then every other primary.
  await cluster.command(dst.port, "CLUSTER", "SETSLOT", String(slot), "NODE", dst.id);
  await cluster.command(src.port, "CLUSTER", "SETSLOT", String(slot), "NODE", dst.id);
  for (const p of ps.filter((x) => x !== src && x !== dst)) await cluster.command(p.port, "CLUSTER", "SETSLOT", String(slot), "NODE", dst.id);
  return { keys: moved, from: src.port, to: dst.port };
}

test("moving the room's slot, a sender shard's slot and a destination's slot during traffic: 0 lost, 0 duplicated", { timeout: 240_000 }, async () => {
  const { cluster, sinks } = await clusterWithSinks(cleanups, { name: "slotmove", key, nodeTimeoutMs: 2_000, sinkCount: 20 });
  // Slow answers keep transactions in flight (and jobs active) while their slots move.
  for (const s of sinks) s.defaultAnswer = { delayMs: 30 };
  const prefix = uniquePrefix("slotmove");
  const shards = 4;
  const t = makeSender({ prefix, key, redisUrl: cluster.url, settings: { sweepIntervalMs: 1_000, lockDurationMs: 2_000, concurrency: 40, shards } });
  cleanups.add("the sender", () => t.close());
  await t.sender.startWorkers();
  const destinations = sinks.map((k) => k.serverName);
  const roomId = `!slotmove${Date.now()}:${GH_SERVER_NAME}`;
  const slotOf = async (k: string) => Number(await cluster.command(cluster.nodes[0]!.port, "CLUSTER", "KEYSLOT", k));
  const roomSlot = await slotOf(t.keys.room(roomId));
  const shardSlot = await slotOf(`${prefix}:bull:${shardQueueName(shardOf(destinations[1]!, shards), shards)}:wait`);
  const destSlot = await slotOf(t.keys.outboundPdus(destinations[2]!));
  assert.equal(new Set([roomSlot, shardSlot, destSlot]).size, 3, "three different slots");

  const EVENTS = 150;
  const acknowledged: number[] = [];
  let failedWrites = 0;
  let writing = true;
  // Writes acknowledged while a slot was half moved (between IMPORTING/MIGRATING and NODE).
  let moving = false;
  let writesWhileMoving = 0;
  const writer = (async () => {
    for (let i = 0; i < EVENTS; i++) {
      const pdu = { room_id: roomId, type: "m.room.message", sender: `@bot:${GH_SERVER_NAME}`, origin_server_ts: 1_700_000_000_000 + i, depth: i + 1, prev_events: [], auth_events: [], content: { msgtype: "m.text", body: `m${i}`, n: i }, hashes: { sha256: "x" } } as unknown as Pdu;
      for (let attempt = 0; ; attempt++) {
        try {
          const r = await t.store.persistEvent({ roomId, eventId: `$s${i}`, pdu, expectedStream: null, updatesState: false, destinations });
          assert.ok(r === "persisted" || r === "duplicate", r);
          acknowledged.push(i);
          if (moving) writesWhileMoving++;
          t.sender.wake(destinations);
          break;
        } catch (err) {
          // ioredis retries ASK, MOVED and TRYAGAIN itself; an error here is one it gave up on.
          failedWrites++;
          if (attempt > 100) throw err;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      await new Promise((r) => setTimeout(r, 15));
    }
    writing = false;
  })();
  const moves: string[] = [];
  for (const [what, slot] of [["room", roomSlot], ["sender shard", shardSlot], ["destination queue", destSlot]] as const) {
    await new Promise((r) => setTimeout(r, 300));
    moving = true;
    const m = await moveSlot(cluster, slot);
    moving = false;
    moves.push(`${what} slot ${slot}: ${m.keys} keys :${m.from} → :${m.to}`);
  }
  await writer;
  assert.equal(writing, false);
  await Promise.all(sinks.map((k) => k.waitFor(() => new Set(numbersOf(k.delivered)).size >= EVENTS, 60_000, `${EVENTS} PDUs`).catch(() => undefined)));
  let lost = 0;
  let duplicated = 0;
  for (const k of sinks) {
    const got = numbersOf(k.delivered);
    lost += acknowledged.filter((n) => !got.includes(n)).length;
    duplicated += got.length - new Set(got).size;
    assertExactlyOncePerTxn(k.attempts);
    assert.deepEqual(got, [...got].sort((a, b) => a - b), `${k.serverName}: in order`);
  }
  console.log(`# slot move: ${moves.join("; ")}; ${acknowledged.length} events acknowledged (${writesWhileMoving} while a slot was half moved), ${failedWrites} writes failed and retried; lost ${lost}, duplicated ${duplicated}`);
  for (const [slot, what] of [[roomSlot, "room"], [shardSlot, "shard"], [destSlot, "destination"]] as const) {
    const owner = (await primaries(cluster)).find((p) => p.slots.some(([a, b]) => slot >= a && slot <= b));
    assert.ok(owner, `${what} slot ${slot} has an owner after the move`);
  }
  assert.equal(acknowledged.length, EVENTS);
  assert.ok(writesWhileMoving > 0, "traffic met the half-moved slots");
  assert.equal(lost, 0, "0 acknowledged PDUs lost");
  assert.equal(duplicated, 0, "0 PDUs delivered twice");
});
