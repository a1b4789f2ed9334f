/**
 * Two replicas of one Gatehouse (same server name, key and Redis prefix; each its own listeners,
 * connections and in-process caches, as two pods of a deployment) receiving /send for the SAME
 * room at the same time, on one real Redis: both end on the same room (extremities, current
 * state, timeline), every PDU is stored once, and they took turns through the room's write
 * lease instead of planning runs that lose the stream check (gatehouse_room_write_conflicts_total
 * stays 0, gatehouse_room_write_lease_waits_total moves), each bringing its state cache up to date
 * over the other's writes by the stream delta, never by a full read, and without reading the
 * other's messages (the room's state-event record says they change no state).
 */
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { TestGatehouse, FED, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";
import { Metrics } from "../../src/metrics.js";
import { stateField } from "../../src/store/room-store.js";

/** Origins, transactions per origin, PDUs per transaction. */
const ORIGINS = 4;
const TXNS = 6;
const PER_TXN = 10;

async function counter(c: { get(): Promise<{ values: { value: number; labels: Record<string, unknown> }[] }> }, labels: Record<string, string> = {}): Promise<number> {
  const { values } = await c.get();
  return values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((a, v) => a + v.value, 0);
}

describe("two replicas on one Redis writing one room at once", () => {
  let a: TestGatehouse;
  let b: TestGatehouse;
  const ma = new Metrics(new Registry(), { defaultMetrics: false });
  const mb = new Metrics(new Registry(), { defaultMetrics: false });
  let remotes: RemoteServer[] = [];

  before(async () => {
    // A long lease: on a loaded test machine a plan must never outlive it (then a conflict would
    // be allowed, and expected); the default (1 s) is what deployments run.
    const env = { GATEHOUSE_ROOM_WRITE_LEASE_MS: "30000" };
    a = await TestGatehouse.start({ name: "replicas", metrics: ma, env });
    b = await TestGatehouse.start({ name: "replicas", metrics: mb, env, replicaOf: a });
    remotes = await Promise.all(Array.from({ length: ORIGINS }, () => RemoteServer.start()));
  });
  after(async () => {
    await b?.cleanup();
    await a?.cleanup();
    await Promise.all(remotes.map((r) => r.close()));
  });

  test("both converge on the same room, nothing lost or stored twice, no write conflict (why: the lease serialises planning across replicas; the stream check stays the guard)", async () => {
    assert.equal(a.serverName, b.serverName);
    const roomId = await a.createRoom({ room_version: "12", join_rule: "public" });
    // Each origin joins (alternating replicas), then chains its own messages from its join, as
    // several servers talking at once: one forward extremity per origin.
    const chains: { remote: RemoteServer; user: string; prev: string; depth: number; auth: string[] }[] = [];
    for (const [i, remote] of remotes.entries()) {
      const user = remote.userId("talker");
      const { eventId, pdu } = await (i % 2 === 0 ? a : b).join(remote, roomId, user);
      const g = await a.graph(roomId);
      const pl = g.stateIds.get(stateField("m.room.power_levels", ""))!;
      chains.push({ remote, user, prev: eventId, depth: pdu.depth as number, auth: [pl, eventId] });
    }
    const txns = chains.map((c, i) =>
      Array.from({ length: TXNS }, (_, t) => {
        const pdus = Array.from({ length: PER_TXN }, (_, n) => {
          const { pdu, eventId } = c.remote.signEvent(
            {
              type: "m.room.message",
              room_id: roomId,
              sender: c.user,
              content: { msgtype: "m.text", body: `origin ${i} txn ${t} #${n}` },
              prev_events: [c.prev],
              auth_events: c.auth,
              depth: ++c.depth,
              origin_server_ts: Date.now(),
            },
            "12",
          );
          c.prev = eventId;
          return { pdu, eventId };
        });
        return { txnId: `r${i}-${t}-${Date.now()}`, pdus };
      }),
    );
    const before = {
      full: (await counter(ma.roomStateReads, { path: "full" })) + (await counter(mb.roomStateReads, { path: "full" })),
      remote: (await counter(ma.roomStateDeltaEvents, { source: "remote" })) + (await counter(mb.roomStateDeltaEvents, { source: "remote" })),
    };
    const txnBefore = (await a.store.timeline(roomId, 0, 10_000)).length;

    // Every origin sends its transactions one after another; origins at once; origin i to replica
    // i % 2 for its even transactions and the other replica for its odd ones (a load balancer).
    await Promise.all(
      txns.map(async (list, i) => {
        for (const [t, { txnId, pdus }] of list.entries()) {
          const to = (i + t) % 2 === 0 ? a : b;
          const remote = chains[i]!.remote;
          const body = { origin: remote.serverName, origin_server_ts: Date.now(), pdus: pdus.map((p) => p.pdu) };
          const res = await to.fed(remote, "PUT", `${FED}/v1/send/${enc(txnId)}`, body);
          assert.equal(res.status, 200, JSON.stringify(res.body));
          for (const { eventId } of pdus) assert.deepEqual(res.body.pdus[eventId], {}, `${eventId}: ${JSON.stringify(res.body.pdus[eventId])}`);
        }
      }),
    );

    // Nothing lost, nothing twice: the timeline holds every sent event exactly once, after what was there.
    const sent = txns.flat().flatMap((t) => t.pdus.map((p) => p.eventId));
    const timeline = (await a.store.timeline(roomId, 0, 10_000)).map((e) => e.eventId);
    assert.equal(timeline.length, txnBefore + sent.length);
    assert.equal(new Set(timeline).size, timeline.length, "no event twice in the timeline");
    const inTimeline = new Set(timeline);
    assert.deepEqual(sent.filter((id) => !inTimeline.has(id)), [], "every sent event is in the timeline");
    // Stream positions are dense (one per accepted event): no run was written over another.
    const streams = (await a.store.timeline(roomId, 0, 10_000)).map((e) => e.stream);
    assert.deepEqual(streams, streams.map((_, i) => streams[0]! + i));

    // Both replicas see the same room: the last event of each chain is a forward extremity, and
    // their snapshots (each from its own state cache) agree with each other and with Redis.
    const [ga, gb] = [await a.graph(roomId), await b.graph(roomId)];
    assert.deepEqual(ga.extremities, [...chains.map((c) => c.prev)].sort());
    assert.deepEqual(gb.extremities, ga.extremities);
    assert.deepEqual(Object.fromEntries(gb.stateIds), Object.fromEntries(ga.stateIds));
    assert.deepEqual(Object.fromEntries(ga.stateIds), await a.redis.hgetall(`${a.prefix}:{${roomId}}:state`));
    for (const c of chains) assert.equal(ga.stateIds.get(stateField("m.room.member", c.user)) !== undefined, true);

    // How they got there.
    const conflicts = (await counter(ma.roomWriteConflicts)) + (await counter(mb.roomWriteConflicts));
    const waits = (await counter(ma.roomWriteLeaseWaits)) + (await counter(mb.roomWriteLeaseWaits));
    assert.equal(conflicts, 0, "no run was planned only to lose the stream check");
    assert.ok(waits > 0, "the replicas did plan the room at the same time, and one waited for the other's lease");
    // Each replica advanced its state cache over the other's writes by the delta, never a full read.
    const full = (await counter(ma.roomStateReads, { path: "full" })) + (await counter(mb.roomStateReads, { path: "full" }));
    assert.equal(full - before.full, 0, "no full state read while the replicas wrote");
    assert.ok((await counter(ma.roomStateDeltaEvents, { source: "skipped" })) > 0, "replica A took in B's writes from the stream delta");
    assert.ok((await counter(mb.roomStateDeltaEvents, { source: "skipped" })) > 0, "replica B took in A's writes from the stream delta");
    // ...without reading the other's messages: by the room's state-event record, only state
    // events are read whole, here at most the other replica's joins (each replica's first
    // snapshot of the sends may still be behind them). Before the record, every one of the
    // other's ~120 messages was read (MGET + JSON.parse).
    const remote = (await counter(ma.roomStateDeltaEvents, { source: "remote" })) + (await counter(mb.roomStateDeltaEvents, { source: "remote" }));
    assert.ok(remote - before.remote <= ORIGINS, `events read whole while the replicas wrote messages: ${remote - before.remote}`);
    // The lease is given back after the last write.
    assert.equal(await a.redis.exists(`${a.prefix}:{${roomId}}:lock`), 0);
  });

  test("a lease left by a replica that died is waited out, not obeyed forever (why: it expires; the next run takes it and writes)", async () => {
    const roomId = await a.createRoom({ room_version: "12", join_rule: "public" });
    const remote = remotes[0]!;
    const user = remote.userId("late");
    await b.join(remote, roomId, user);
    const lock = `${a.prefix}:{${roomId}}:lock`;
    await a.redis.set(lock, "a-replica-that-died", "PX", 300);
    const waits = await counter(ma.roomWriteLeaseWaits);
    const { pdu, eventId } = await a.remoteEvent(remote, roomId, { type: "m.room.message", sender: user, content: { msgtype: "m.text", body: "after the lease" } });
    const res = await a.fed(remote, "PUT", `${FED}/v1/send/${enc(`late-${Date.now()}`)}`, { origin: remote.serverName, origin_server_ts: Date.now(), pdus: [pdu] });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body.pdus[eventId], {});
    assert.equal(await counter(ma.roomWriteLeaseWaits), waits + 1);
    assert.deepEqual((await a.graph(roomId)).extremities, [eventId]);
    assert.equal(await a.redis.exists(lock), 0, "given back after the write");
  });
});
