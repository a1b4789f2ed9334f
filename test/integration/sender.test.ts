// The outbound transaction sender against local HTTPS sink peers and a real Redis: ordering,
// batching, retries with the same txnId and body, backoff and catch-up, one transaction in flight
// per destination across Sender instances, per-PDU errors, 4xx splits and dead letters, /queue pagination, the recovery sweep, the
// admin API wiring, and a 1000-PDU backlog.
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import request from "supertest";
import { SinkPeer } from "../support/sink-peer.js";
import {
  GH_SERVER_NAME,
  connect,
  deleteKeys,
  gatehouseKey,
  makeSender,
  numbersOf,
  assertExactlyOncePerTxn,
  persistPdus,
  range,
  uniquePrefix,
  type TestSender,
} from "../support/sender-fixture.js";
import { loadConfig } from "../../src/config.js";
import { createLogger } from "../../src/logger.js";
import { buildGatehouse } from "../../src/app.js";
import { OwnKeys } from "../../src/keys/own-keys.js";
import { createRoom } from "../../src/rooms/create-room.js";
import { freePort } from "../../src/embedded-redis.js";
import express from "express";
import { Writable } from "node:stream";
import { queueAdminRouter } from "../../src/sender/admin-routes.js";
import { errorHandler, unmatchedHandler } from "../../src/http/errors.js";
import { dumpPrefix } from "../support/gatehouse.js";
import { backoffDelay } from "../../src/sender/backoff.js";
import { signRequest } from "../../src/protocol/x-matrix.js";
import { canonicalJson } from "../../src/protocol/canonical-json.js";
import type { SigningKey } from "../../src/protocol/signing-key.js";
import { createHash } from "node:crypto";

const key = gatehouseKey();
const identity = { serverName: GH_SERVER_NAME, keyId: key.keyId, publicKey: key.publicKey };
const redis = connect();
const prefixes: string[] = [];
const cleanups: (() => Promise<void>)[] = [];

async function setup(name: string, opts: { sinks?: number; settings?: Parameters<typeof makeSender>[0]["settings"] } = {}) {
  const prefix = uniquePrefix(name);
  prefixes.push(prefix);
  const sinks = await Promise.all(range(0, opts.sinks ?? 1).map(() => SinkPeer.start(identity)));
  const s = makeSender({ prefix, key, settings: opts.settings });
  cleanups.push(async () => {
    await s.close();
    await Promise.all(sinks.map((k) => k.close()));
  });
  const roomId = `!${name.replace(/[^a-z]/g, "")}${Date.now()}:${GH_SERVER_NAME}`;
  return { prefix, sinks, sink: sinks[0]!, s, roomId };
}

/** Polls the destination's admin view until `pred` holds (commits follow the sink's answer). */
async function settled(s: TestSender, destination: string, pred: (d: Awaited<ReturnType<TestSender["sender"]["view"]["describe"]>>) => boolean = (d) => d?.pending_pdus === 0 && d?.pending_edus === 0 && d?.txn_id === null) {
  const deadline = Date.now() + 5000;
  for (;;) {
    const d = await s.sender.view.describe(destination);
    if (pred(d)) return d;
    if (Date.now() > deadline) assert.fail(`destination ${destination} did not settle: ${JSON.stringify(d)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}


after(async () => {
  for (const c of cleanups) await c().catch(() => undefined);
  for (const p of prefixes) await deleteKeys(redis, p);
  await redis.quit();
});

describe("sender: delivery", { timeout: 30_000 }, () => {
  test("delivers queued PDUs in order, ≤ 50 PDUs and ≤ 100 EDUs per signed transaction", async () => {
    const { s, sink, roomId } = await setup("order");
    await persistPdus(s.store, roomId, [sink.serverName], 120);
    for (const i of range(0, 150)) await s.sender.outbound.enqueueEdu(sink.serverName, JSON.stringify({ edu_type: "m.test", content: { i } }));
    await s.sender.startWorkers();
    await sink.waitFor(() => sink.delivered.length === 120 && sink.deliveredEdus.length === 150, 10_000, "120 PDUs and 150 EDUs");

    assert.equal(sink.badSignatures, 0);
    assert.deepEqual(numbersOf(sink.delivered), range(0, 120));
    assert.deepEqual(sink.deliveredEdus.map((e) => (e.content as { i: number }).i), range(0, 150));
    assert.deepEqual(sink.attempts.map((a) => [a.body.pdus.length, a.body.edus?.length ?? 0]), [[50, 100], [50, 50], [20, 0]]);
    const last = sink.attempts[2]!;
    assert.ok(!("edus" in last.body), "edus is omitted when empty");
    for (const a of sink.attempts) {
      assert.equal(a.origin, GH_SERVER_NAME);
      assert.equal(a.body.origin, GH_SERVER_NAME);
      assert.ok(Number.isInteger(a.body.origin_server_ts));
      assert.match(a.txnId, /^\d+_\d+$/);
      assert.deepEqual(Object.keys(a.body).sort(), a.body.edus ? ["edus", "origin", "origin_server_ts", "pdus"] : ["origin", "origin_server_ts", "pdus"]);
      // Built by concatenation as canonical JSON (it is also the signed content): must be exactly that.
      assert.equal(a.rawBody, canonicalJson(JSON.parse(a.rawBody)), "the body is canonical JSON");
    }
    assert.equal(new Set(sink.attempts.map((a) => a.txnId)).size, 3);
    const d = await settled(s, sink.serverName);
    assert.equal(d?.pending_pdus, 0);
    assert.equal(d?.pending_edus, 0);
    assert.equal(d?.txn_id, null);
    assert.equal(d?.txns_sent, 3);
    assert.equal(d?.pdus_sent, 120);
    assert.ok(d?.last_success_ts);
  });

  test("enqueueEdu wakes the destination", async () => {
    const { s, sink } = await setup("edu");
    await s.sender.startWorkers();
    await s.sender.enqueueEdu(sink.serverName, { edu_type: "m.typing", content: { room_id: "!r:x", user_id: "@u:x", typing: true } });
    await sink.waitFor(() => sink.deliveredEdus.length === 1, 5000, "the EDU");
    assert.deepEqual(sink.attempts[0]!.body.pdus, []);
    assert.equal(sink.attempts[0]!.body.edus?.[0]?.edu_type, "m.typing");
  });

  test("a wake while the destination's job runs in this process is served by that job: no BullMQ add", async () => {
    const { s, sink, roomId } = await setup("rewake", { settings: { shards: 1 } });
    sink.script = [{ delayMs: 300 }];
    await persistPdus(s.store, roomId, [sink.serverName], 5);
    await s.sender.startWorkers(); // its sweep adds the destination's job
    await sink.waitFor(() => sink.attempts.length === 1, 5000, "first transaction in flight");
    // BullMQ counts every add (de-duplicated or not) in the queue's id key.
    const adds = async () => Number(await s.redis.get(s.sender.queueOf(sink.serverName).keys.id!));
    const jobDone = async () => {
      for (let i = 0; (await s.sender.view.jobState(sink.serverName)) !== "none"; i++) {
        assert.ok(i < 200, "the job completes");
        await new Promise((r) => setTimeout(r, 25));
      }
    };
    const before = await adds();
    await persistPdus(s.store, roomId, [sink.serverName], 5, 5);
    s.sender.wake([sink.serverName]);
    await sink.waitFor(() => sink.delivered.length === 10, 5000, "10 PDUs");
    await settled(s, sink.serverName);
    await jobDone();
    assert.deepEqual(sink.attempts.map((a) => a.body.pdus.length), [5, 5]);
    assert.deepEqual(numbersOf(sink.delivered), range(0, 10));
    assert.equal(await adds(), before, "the running job sent the new entries; nothing was added");
    // With no job running, a wake adds one.
    await persistPdus(s.store, roomId, [sink.serverName], 1, 10);
    s.sender.wake([sink.serverName]);
    await sink.waitFor(() => sink.delivered.length === 11, 5000, "the 11th PDU");
    assert.equal(await adds(), before + 1);
  });

  test("lingerMs: a drained job waits for a wake from this process and sends it itself (no BullMQ add); with 0 a wake adds a job", async () => {
    for (const lingerMs of [10_000, 0]) {
      const { s, sink, roomId } = await setup(`linger${lingerMs}`, { settings: { shards: 1, lingerMs } });
      await persistPdus(s.store, roomId, [sink.serverName], 5);
      await s.sender.startWorkers(); // its sweep adds the destination's job
      await sink.waitFor(() => sink.delivered.length === 5, 5000, "5 PDUs");
      await settled(s, sink.serverName);
      const adds = async () => Number(await s.redis.get(s.sender.queueOf(sink.serverName).keys.id!));
      const before = await adds();
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(await s.sender.view.jobState(sink.serverName), lingerMs ? "active" : "none", lingerMs ? "the drained job waits" : "the drained job completed");
      await persistPdus(s.store, roomId, [sink.serverName], 5, 5);
      s.sender.wake([sink.serverName]);
      await sink.waitFor(() => sink.delivered.length === 10, 5000, "10 PDUs");
      assert.deepEqual(numbersOf(sink.delivered), range(0, 10));
      assert.deepEqual(sink.attempts.map((a) => a.body.pdus.length), [5, 5]);
      assert.equal(await adds(), lingerMs ? before : before + 1, lingerMs ? "the waiting job sent them" : "the wake added a job");
    }
  });

  test("lingerMs: a job taking its shard's last free slot ends the other jobs' waits (their slots go back to queued destinations)", async () => {
    // Two slots, waits of 10 s: without giving the slot back, C would wait for A's or B's wait to end.
    const { s, sinks, roomId } = await setup("lingerslots", { sinks: 3, settings: { shards: 1, concurrency: 2, lingerMs: 10_000 } });
    const [a, b, c] = sinks as [SinkPeer, SinkPeer, SinkPeer];
    await persistPdus(s.store, roomId, [a.serverName], 3);
    await s.sender.startWorkers();
    await a.waitFor(() => a.delivered.length === 3, 5000, "A's PDUs");
    await settled(s, a.serverName);
    assert.equal(await s.sender.view.jobState(a.serverName), "active", "A's drained job waits for a wake");
    await persistPdus(s.store, roomId, [b.serverName, c.serverName], 3, 3);
    s.sender.wake([b.serverName, c.serverName]);
    await b.waitFor(() => b.delivered.length === 3, 5000, "B's PDUs");
    await c.waitFor(() => c.delivered.length === 3, 5000, "C's PDUs (a slot given back)");
    assert.equal(await s.sender.view.jobState(a.serverName), "none", "A's wait ended when B took the last slot");
  });

  test("per-PDU errors in a 200 answer are counted, not retried", async () => {
    const { s, sink, roomId } = await setup("pduerr");
    sink.rejectPdu = (pdu) => ((pdu.content as { n: number }).n % 10 === 0 ? "You are not allowed to send a message to this room." : null);
    await persistPdus(s.store, roomId, [sink.serverName], 30);
    await s.sender.startWorkers();
    await sink.waitFor(() => sink.delivered.length === 30, 5000, "30 PDUs");
    const d = await settled(s, sink.serverName);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(sink.attempts.length, 1);
    assert.equal(d?.pdu_errors, 3);
    assert.equal(d?.pending_pdus, 0);
    assert.equal(d?.failures, 0);
  });
});

describe("sender: failures", { timeout: 30_000 }, () => {
  test("retries re-send the same txnId and body with growing backoff, then catch up in order", async () => {
    const { s, sink, roomId } = await setup("retry", { settings: { backoffInitialMs: 150, backoffMaxMs: 2000 } });
    sink.script = [{ status: 500 }, { status: 502 }, { status: 429, body: { errcode: "M_LIMIT_EXCEEDED", error: "slow down", retry_after_ms: 100 } }];
    await persistPdus(s.store, roomId, [sink.serverName], 10);
    await s.sender.startWorkers();
    s.sender.wake([sink.serverName]);
    await sink.waitFor(() => sink.attempts.length >= 1, 5000, "first attempt");
    // Events persisted during the backoff queue up behind the transaction in flight.
    await persistPdus(s.store, roomId, [sink.serverName], 70, 10);
    s.sender.wake([sink.serverName]);
    await sink.waitFor(() => sink.attempts.length >= 2, 5000, "second attempt");
    const during = await s.sender.view.describe(sink.serverName);
    assert.equal(during?.txn_id, sink.attempts[0]!.txnId);
    assert.equal(during?.pending_pdus, 80);
    assert.ok((during?.failures ?? 0) >= 1);
    assert.match(during?.last_error ?? "", /HTTP 5\d\d/);
    assert.ok(during?.last_error_ts);

    await sink.waitFor(() => sink.delivered.length === 80, 15_000, "80 PDUs");
    const [a0, a1, a2, a3] = sink.attempts;
    for (const a of [a1, a2, a3]) {
      assert.equal(a!.txnId, a0!.txnId, "retries keep the txnId");
      assert.equal(a!.rawBody, a0!.rawBody, "retries keep the body");
    }
    assert.deepEqual(sink.attempts.map((a) => a.answered), [500, 502, 429, 200, 200, 200]);
    assert.deepEqual(sink.attempts.slice(3).map((a) => a.body.pdus.length), [10, 50, 20]);
    assert.deepEqual(numbersOf(sink.delivered), range(0, 80));
    assertExactlyOncePerTxn(sink.attempts);
    // Backoff: 150 ms × 2^(n-1) × [0.8, 1.4].
    const gaps = sink.attempts.slice(0, 4).map((a, i, all) => (i === 0 ? 0 : a.receivedAt - all[i - 1]!.receivedAt)).slice(1);
    assert.ok(gaps[0]! >= 110, `first gap ${gaps[0]}`);
    assert.ok(gaps[1]! >= 230, `second gap ${gaps[1]}`);
    assert.ok(gaps[2]! >= 470, `third gap ${gaps[2]}`);
    const after = await settled(s, sink.serverName);
    assert.equal(after?.failures, 0);
    assert.equal(after?.backoff_until, null);
    assert.ok((after?.last_success_ts ?? 0) >= (after?.last_error_ts ?? Infinity));
  });

  test("a timed-out request is re-sent with the same txnId (the receiver de-duplicates)", async () => {
    const prefix = uniquePrefix("timeout");
    prefixes.push(prefix);
    const sink = await SinkPeer.start(identity);
    const s = makeSender({ prefix, key, timeoutMs: 400 });
    cleanups.push(async () => {
      await s.close();
      await sink.close();
    });
    sink.script = [{ hang: true }];
    await persistPdus(s.store, `!timeout:${GH_SERVER_NAME}`, [sink.serverName], 5);
    await s.sender.startWorkers();
    await sink.waitFor(() => sink.attempts.some((a) => a.answered === 200), 8000, "a 200");
    assert.equal(sink.attempts.length, 2);
    assert.equal(sink.attempts[1]!.txnId, sink.attempts[0]!.txnId);
    assert.equal(sink.attempts[1]!.rawBody, sink.attempts[0]!.rawBody);
    assert.deepEqual(numbersOf(sink.delivered), range(0, 5), "processed once");
    const d = await settled(s, sink.serverName);
    assert.match(d?.last_error ?? "", /timed out/);
    assert.equal(d?.pending_pdus, 0);
  });

  test("an unreachable destination keeps its PDUs and its transaction, backing off", async () => {
    const { s, roomId } = await setup("unreachable", { sinks: 0 });
    const dest = `127.0.0.1:${await freePort()}`;
    await persistPdus(s.store, roomId, [dest], 3);
    await s.sender.startWorkers();
    const deadline = Date.now() + 5000;
    let d = await s.sender.view.describe(dest);
    while ((d?.failures ?? 0) < 3 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      d = await s.sender.view.describe(dest);
    }
    assert.ok((d?.failures ?? 0) >= 3, `failures ${d?.failures}`);
    assert.equal(d?.pending_pdus, 3);
    assert.ok(d?.txn_id);
    assert.ok((d?.txn_attempts ?? 0) >= 3);
    assert.match(d?.last_error ?? "", /ECONNREFUSED/);
    assert.equal(d?.job, "delayed");
  });

  test("a 4xx is retried with the same txnId a bounded number of times, then the transaction is split and every PDU delivered", async () => {
    const { s, sink, roomId } = await setup("reject", { settings: { maxRejectedAttempts: 3 } });
    sink.script = [{ status: 400, body: {} }, { status: 400, body: {} }, { status: 403, body: { errcode: "M_FORBIDDEN", error: "no" } }];
    await persistPdus(s.store, roomId, [sink.serverName], 60);
    await s.sender.startWorkers();
    await sink.waitFor(() => sink.delivered.length === 60, 10_000, "all 60 PDUs");
    assert.deepEqual(sink.attempts.slice(0, 4).map((a) => a.answered), [400, 400, 403, 200]);
    assert.equal(new Set(sink.attempts.slice(0, 3).map((a) => a.txnId)).size, 1, "retried with its txnId");
    assert.equal(sink.attempts[3]!.body.pdus.length, 1, "then its PDUs are sent one per transaction");
    assert.deepEqual(numbersOf(sink.delivered), range(0, 60), "in order, none lost");
    assertExactlyOncePerTxn(sink.attempts.filter((a) => a.answered === 200));
    const d = await settled(s, sink.serverName);
    assert.equal(d?.dropped_pdus, 0);
    assert.equal(d?.dead_letters, 0);
    assert.equal(d?.isolating_pdus, 0, "back to full transactions");
    assert.ok(sink.attempts.at(-1)!.body.pdus.length > 1, "the PDUs after the split batch go in full transactions again");
  });
});

/** The queue admin routes on their own Express app, around a test Sender. */
function queueApp(s: TestSender) {
  const app = express();
  app.use(queueAdminRouter(s.sender));
  app.use(unmatchedHandler(app as never));
  app.use(errorHandler(createLogger("silent")));
  return app;
}

describe("sender: dead letters (a destination rejects a PDU)", { timeout: 30_000 }, () => {
  const poisonous = (body: { pdus: Record<string, unknown>[] }) =>
    body.pdus.some((p) => (p.content as { n?: number }).n === 7) ? { status: 400, body: { errcode: "M_NOT_JSON", error: "nesting too deep" } } : null;

  test("only the offending PDU is dead-lettered, with the reason; innocent PDUs and EDUs of its batch are delivered", async () => {
    const { s, sink, roomId, prefix } = await setup("dead", { settings: { maxRejectedAttempts: 2 } });
    sink.rejectTransaction = poisonous;
    await persistPdus(s.store, roomId, [sink.serverName], 20);
    await s.sender.enqueueEdu(sink.serverName, { edu_type: "m.typing", content: { room_id: roomId, user_id: `@u:${GH_SERVER_NAME}`, typing: true } });
    await persistPdus(s.store, roomId, [sink.serverName], 10, 20);
    await s.sender.startWorkers();
    await sink.waitFor(() => sink.delivered.length === 29, 10_000, "the 29 innocent PDUs");
    assert.deepEqual(numbersOf(sink.delivered), range(0, 30).filter((n) => n !== 7), "every innocent PDU, in order");
    assert.equal(sink.deliveredEdus.length, 1, "the EDU of the rejected batch too");
    assertExactlyOncePerTxn(sink.attempts.filter((a) => a.answered === 200));
    const d = await settled(s, sink.serverName);
    assert.equal(d?.dead_letters, 1);
    assert.equal(d?.dead_lettered_total, 1);
    assert.equal(d?.dropped_pdus, 0);
    assert.equal(d?.failures, 0, "the destination answered: it is not backing off");

    const app = queueApp(s);
    const list = await (request(app).get(`/_gatehouse/admin/v1/queue/${sink.serverName}/dead-letters`)).expect(200);
    assert.equal(list.body.total, 1);
    assert.equal(list.body.dead_letters[0].event_id, `$e7-${roomId.slice(1, 9)}`);
    assert.equal(list.body.dead_letters[0].room_id, roomId);
    assert.equal(list.body.dead_letters[0].status, 400);
    assert.equal(list.body.dead_letters[0].reason, "HTTP 400 M_NOT_JSON: nesting too deep");
    const overview = await request(app).get("/_gatehouse/admin/v1/queue").expect(200);
    assert.equal(overview.body.destinations[0].dead_letters, 1);
    assert.equal((await s.sender.view.metricsSnapshot()).deadLetters, 1, "the metric");

    // The peer was fixed: replay sends it (after what is queued), and the list is empty.
    sink.rejectTransaction = () => null;
    const replay = await request(app).post(`/_gatehouse/admin/v1/queue/${sink.serverName}/dead-letters/replay`).expect(200);
    assert.deepEqual(replay.body, { destination: sink.serverName, replayed: 1 });
    await sink.waitFor(() => sink.delivered.length === 30, 10_000, "the replayed PDU");
    assert.equal((sink.delivered.at(-1)!.content as { n: number }).n, 7);
    assert.equal((await settled(s, sink.serverName))?.dead_letters, 0);
    assert.equal(await redis.llen(`${prefix}:out:{${sink.serverName}}:dead`), 0);
  });

  test("drop forgets the dead letters (counted as dropped PDUs); a PDU still rejected when replayed goes back to the list", async () => {
    const { s, sink, roomId } = await setup("deaddrop", { settings: { maxRejectedAttempts: 1 } });
    sink.rejectTransaction = poisonous;
    await persistPdus(s.store, roomId, [sink.serverName], 10);
    await s.sender.startWorkers();
    await sink.waitFor(() => sink.delivered.length === 9, 10_000, "the 9 innocent PDUs");
    let d = await settled(s, sink.serverName);
    assert.equal(d?.dead_letters, 1);
    const app = queueApp(s);
    await request(app).post(`/_gatehouse/admin/v1/queue/${sink.serverName}/dead-letters/replay`).expect(200);
    for (let i = 0; i < 100 && (d = await settled(s, sink.serverName))?.dead_lettered_total !== 2; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(d?.dead_letters, 1, "rejected again: back in the list");
    assert.equal(d?.dead_lettered_total, 2);
    const drop = await request(app).post(`/_gatehouse/admin/v1/queue/${sink.serverName}/dead-letters/drop`).expect(200);
    assert.deepEqual(drop.body, { destination: sink.serverName, dropped: 1 });
    d = await settled(s, sink.serverName);
    assert.equal(d?.dead_letters, 0);
    assert.equal(d?.dropped_pdus, 1);
    assert.equal(sink.delivered.length, 9, "the offender was never delivered");
  });

  test("dead-letter routes refuse bad input without writing", async () => {
    const { s, sink, roomId, prefix } = await setup("deadbad");
    await persistPdus(s.store, roomId, [sink.serverName], 2);
    const app = queueApp(s);
    const before = await dumpPrefix(redis, prefix, ["bull:"]);
    const cases = [
      { why: "not a server name", method: "post", path: "/queue/not%20a%20name/dead-letters/drop", status: 400, errcode: "M_INVALID_PARAM" },
      { why: "a destination never seen", method: "post", path: "/queue/unknown.example/dead-letters/replay", status: 404, errcode: "M_NOT_FOUND" },
      { why: "a listing of a destination never seen", method: "get", path: "/queue/unknown.example/dead-letters", status: 404, errcode: "M_NOT_FOUND" },
      { why: "an action that does not exist", method: "post", path: `/queue/${sink.serverName}/dead-letters/burn`, status: 404, errcode: "M_UNRECOGNIZED" },
      { why: "a negative offset", method: "get", path: `/queue/${sink.serverName}/dead-letters?from=-1`, status: 400, errcode: "M_INVALID_PARAM" },
      { why: "a limit of 0", method: "get", path: `/queue/${sink.serverName}/dead-letters?limit=0`, status: 400, errcode: "M_INVALID_PARAM" },
    ] as const;
    for (const c of cases) {
      const r = await request(app)[c.method](`/_gatehouse/admin/v1${c.path}`);
      assert.equal(r.status, c.status, c.why);
      assert.equal(r.body.errcode, c.errcode, c.why);
    }
    assert.deepEqual(await dumpPrefix(redis, prefix, ["bull:"]), before, "Redis unchanged");
  });
});

describe("sender: /queue pagination and sorting", { timeout: 30_000 }, () => {
  test("from, limit, order_by and dir as Synapse's destinations admin API; next_token; totals over all pages", async () => {
    const { s, roomId, prefix } = await setup("page");
    // Four destinations with 4, 1, 3, 2 queued PDUs (no workers: they stay queued).
    const counts: [string, number][] = [["a.example", 4], ["b.example", 1], ["c.example", 3], ["d.example", 2]];
    let n = 0;
    for (const [dest, count] of counts) {
      await persistPdus(s.store, roomId, [dest], count, n);
      n += count;
    }
    const app = queueApp(s);
    const get = async (q: string) => (await request(app).get(`/_gatehouse/admin/v1/queue${q}`).expect(200)).body;
    const names = (b: { destinations: { destination: string }[] }) => b.destinations.map((d) => d.destination);
    const cases = [
      { why: "default: by destination, ascending, one page", q: "", want: ["a.example", "b.example", "c.example", "d.example"], next: undefined },
      { why: "most pending first", q: "?order_by=pending_pdus&dir=b", want: ["a.example", "c.example", "d.example", "b.example"], next: undefined },
      { why: "least pending first, first page", q: "?order_by=pending_pdus&limit=3", want: ["b.example", "d.example", "c.example"], next: "3" },
      { why: "the page next_token points at", q: "?order_by=pending_pdus&limit=3&from=3", want: ["a.example"], next: undefined },
      { why: "past the end", q: "?from=10", want: [], next: undefined },
    ];
    for (const c of cases) {
      const b = await get(c.q);
      assert.deepEqual(names(b), c.want, c.why);
      assert.equal(b.next_token, c.next, c.why);
      assert.equal(b.total, 4, c.why);
      assert.equal(b.total_pending_pdus, 10, `${c.why}: totals cover every page`);
    }
    const before = await dumpPrefix(redis, prefix, ["bull:"]);
    const bad = [
      { why: "unknown sort key", q: "?order_by=name" },
      { why: "dir other than f/b", q: "?dir=up" },
      { why: "limit above the maximum", q: "?limit=1001" },
      { why: "limit not a number", q: "?limit=ten" },
      { why: "from negative", q: "?from=-5" },
      { why: "from repeated", q: "?from=1&from=2" },
    ];
    for (const c of bad) {
      const r = await request(app).get(`/_gatehouse/admin/v1/queue${c.q}`);
      assert.equal(r.status, 400, c.why);
      assert.equal(r.body.errcode, "M_INVALID_PARAM", c.why);
    }
    assert.deepEqual(await dumpPrefix(redis, prefix, ["bull:"]), before, "Redis unchanged");
  });
});

describe("sender: shutdown", { timeout: 30_000 }, () => {
  test("drain() (at shutdown, after the listeners closed) returns once what was queued is delivered; a destination backing off does not hold it", async () => {
    // A long first backoff: the failing destination's job stays delayed while the test looks
    // (with 100 ms it cycles delayed → active, and a loaded machine could catch it active).
    const { s, sinks, roomId } = await setup("drainq", { sinks: 2, settings: { backoffInitialMs: 5_000, backoffMaxMs: 10_000 } });
    const [up, down] = sinks as [SinkPeer, SinkPeer];
    down.defaultAnswer = { status: 503 };
    await persistPdus(s.store, roomId, [up.serverName, down.serverName], 120);
    await s.sender.startWorkers();
    assert.equal(await s.sender.drain(10_000), true);
    assert.equal(up.delivered.length, 120, "everything queued for the destination that answers was delivered");
    assert.equal(down.delivered.length, 0);
    assert.equal(await s.sender.view.jobState(down.serverName), "delayed", "the failing one waits for its next try");
  });

  test("drain() at shutdown ends the jobs waiting for a wake (lingerMs): it does not wait for them", async () => {
    const { s, sink, roomId } = await setup("drainlinger", { settings: { shards: 1, lingerMs: 10_000 } });
    await persistPdus(s.store, roomId, [sink.serverName], 5);
    await s.sender.startWorkers();
    await sink.waitFor(() => sink.delivered.length === 5, 5000, "5 PDUs");
    await settled(s, sink.serverName);
    assert.equal(await s.sender.view.jobState(sink.serverName), "active", "the drained job waits for a wake");
    assert.equal(await s.sender.drain(5_000), true, "drained well before the 10 s wait would have ended");
    assert.equal(await s.sender.view.jobState(sink.serverName), "none");
  });

  test("close() lets the in-flight transaction finish within the deadline", async () => {
    const { s, sink, roomId } = await setup("drain");
    sink.defaultAnswer = { delayMs: 400 };
    await persistPdus(s.store, roomId, [sink.serverName], 10);
    await s.sender.startWorkers();
    await sink.waitFor(() => sink.attempts.length === 1, 5000, "the transaction");
    await s.sender.close(5000);
    assert.equal(sink.attempts[0]!.answered, 200);
    assert.equal(await s.redis.llen(s.keys.outboundPdus(sink.serverName)), 0, "committed before close returned");
    assert.equal(await s.redis.exists(s.keys.outboundTxn(sink.serverName)), 0);
  });

  test("past the deadline close() returns and the transaction stays stored for the next worker", async () => {
    const { s, sink, roomId, prefix } = await setup("deadline");
    sink.script = [{ hang: true }];
    await persistPdus(s.store, roomId, [sink.serverName], 10);
    await s.sender.startWorkers();
    await sink.waitFor(() => sink.attempts.length === 1, 5000, "the transaction");
    const t0 = Date.now();
    await s.sender.close(300);
    assert.ok(Date.now() - t0 < 2500, `close took ${Date.now() - t0} ms`);
    assert.equal(await s.redis.hget(s.keys.outboundTxn(sink.serverName), "txn_id"), sink.attempts[0]!.txnId);
    const next = makeSender({ prefix, key });
    cleanups.push(() => next.close());
    await next.sender.startWorkers();
    await sink.waitFor(() => sink.attempts.some((a) => a.answered === 200), 5000, "the re-sent transaction");
    assert.equal(sink.attempts.at(-1)!.txnId, sink.attempts[0]!.txnId);
    assert.deepEqual(numbersOf(sink.delivered), range(0, 10));
  });
});

describe("sender: concurrency and recovery", { timeout: 30_000 }, () => {
  test("two Sender instances on one Redis: never more than one transaction in flight per destination", async () => {
    // One destination at a time per instance, so that while one is busy the other must work
    // (one shard: the concurrency is split over the shards' workers, at least 1 each).
    const { s, sinks, roomId, prefix } = await setup("inflight", { sinks: 3, settings: { concurrency: 1, shards: 1 } });
    const second = makeSender({ prefix, key, settings: { concurrency: 1, shards: 1 } });
    cleanups.push(() => second.close());
    for (const k of sinks) k.defaultAnswer = { delayMs: 15 };
    sinks[0]!.script = [{ status: 500 }, { delayMs: 15 }, { status: 503 }];
    const dests = sinks.map((k) => k.serverName);
    await Promise.all([s.sender.startWorkers(), second.sender.startWorkers()]);
    // Wakes from both instances while events are being persisted.
    for (let batch = 0; batch < 6; batch++) {
      await persistPdus(s.store, roomId, dests, 50, batch * 50);
      (batch % 2 ? second : s).sender.wake(dests);
    }
    await Promise.all(sinks.map((k) => k.waitFor(() => k.delivered.length >= 300, 20_000, "300 PDUs")));
    for (const k of sinks) {
      assert.equal(k.maxConcurrent, 1, `${k.serverName} had ${k.maxConcurrent} transactions in flight`);
      assert.deepEqual(numbersOf(k.delivered), range(0, 300));
      assert.ok(k.attempts.every((a) => a.body.pdus.length <= 50));
      assertExactlyOncePerTxn(k.attempts);
      assert.equal(k.badSignatures, 0);
    }
    assert.ok(s.sender.stats.transactionsSent > 0 && second.sender.stats.transactionsSent > 0, "both instances sent");
  });

  test("a job handed back by BullMQ while its run continues here (a lock renewal missed): the run goes on alone, no error, the new lock finishes the job", async () => {
    // The soak under load: a renewal missed, BullMQ's stalled-job check put the running job back
    // to wait and this process's other worker slot took it; the sender logged an error, delayed
    // the job by a second, and did so again every second until the run ended.
    const lines: { level: number; msg: string; sameJob?: boolean }[] = [];
    const logStream = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString("utf8").split("\n")) if (line.trim()) lines.push(JSON.parse(line));
        done();
      },
    });
    const prefix = uniquePrefix("handback");
    prefixes.push(prefix);
    const sink = await SinkPeer.start(identity);
    // One shard, several slots: the handed-back job is taken by this process's own worker.
    let handBacks = 0;
    const s = makeSender({ prefix, key, logLevel: "warn", logStream, timeoutMs: 30_000, settings: { shards: 1, concurrency: 4, lockDurationMs: 1000 }, onJobHandedBack: () => handBacks++ });
    cleanups.push(async () => {
      await s.close();
      await sink.close();
    });
    const roomId = `!handback${Date.now()}:${GH_SERVER_NAME}`;
    const dest = sink.serverName;
    sink.script = [{ hang: true }];
    await persistPdus(s.store, roomId, [dest], 5);
    await s.sender.startWorkers();
    await sink.waitFor(() => sink.attempts.length === 1, 5000, "the first transaction in flight");
    const queue = s.sender.queueOf(dest);
    const jobId = await queue.getDeduplicationJobId(dest);
    assert.ok(jobId, "the destination has a job");
    // The injected stall: the lock is gone as a missed renewal leaves it (expired), so the next
    // renewal fails and the stalled-job check hands the job back while the request still hangs.
    await s.redis.del(`${queue.toKey(jobId)}:lock`);
    const handedBack = () => lines.some((l) => l.level >= 50 || /handed back/.test(l.msg));
    for (let i = 0; !handedBack(); i++) {
      assert.ok(i < 400, "BullMQ hands the job back within 10 s");
      await new Promise((r) => setTimeout(r, 25));
    }
    // The new lock holder waits for the run (a second request would be a second transaction in flight).
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(sink.attempts.length, 1, "nothing else was sent while the run continues");
    await persistPdus(s.store, roomId, [dest], 5, 5);
    s.sender.wake([dest]);
    sink.releaseHung();
    await sink.waitFor(() => sink.delivered.length === 10, 10_000, "10 PDUs");
    await settled(s, dest);
    for (let i = 0; (await s.sender.view.jobState(dest)) !== "none"; i++) {
      assert.ok(i < 400, "the job is finished");
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.deepEqual(
      lines.filter((l) => l.level >= 50).map((l) => l.msg),
      [],
      "no error logged",
    );
    assert.ok(lines.some((l) => /handed back/.test(l.msg) && l.sameJob === true), "the hand-back is logged as a warning");
    assert.ok(handBacks >= 1, "the hand-back is counted (gatehouse_sender_jobs_handed_back_total)");
    assert.equal(sink.maxConcurrent, 1);
    assert.deepEqual(numbersOf(sink.delivered), range(0, 10));
    assertExactlyOncePerTxn(sink.attempts);
    assert.equal(await s.redis.exists(s.keys.outboundTxn(dest)), 0);
  });

  test("startup sweep: queued PDUs and a stored transaction without a job are sent", async () => {
    const { s, sinks, roomId } = await setup("sweep", { sinks: 2 });
    const [a, b] = sinks as [SinkPeer, SinkPeer];
    await persistPdus(s.store, roomId, [a.serverName, b.serverName], 5);
    // b: a transaction stored, with its body in its own key, by a worker of the previous
    // version that died before sending it.
    const head = await s.sender.outbound.head(b.serverName, 3, 0);
    const body = JSON.stringify({ origin: GH_SERVER_NAME, origin_server_ts: 1, pdus: await Promise.all(head.pdus.map(async (r) => JSON.parse((await s.store.getEventJson(r.split(" ")[0]!, r.split(" ")[1]!))!))) });
    const stored = { txnId: "1_1" };
    await s.redis.hset(s.keys.outboundTxn(b.serverName), "txn_id", stored.txnId, "pdu_count", "3", "edu_count", "0", "created_ts", "1", "attempts", "0", "rejections", "0", "canonical", "0");
    await s.redis.set(s.keys.outboundTxnBody(b.serverName), body);
    assert.equal(await s.sender.view.jobState(a.serverName), "none");
    await s.sender.startWorkers();
    await Promise.all([a, b].map((k) => k.waitFor(() => k.delivered.length === 5, 5000, "5 PDUs")));
    assert.equal(b.attempts[0]!.txnId, stored.txnId);
    assert.equal(b.attempts[0]!.rawBody, body);
    assert.deepEqual(b.attempts.map((x) => x.body.pdus.length), [3, 2]);
    assert.deepEqual(numbersOf(b.delivered), range(0, 5));
  });

  // The body is not stored (only its digest): a re-send rebuilds it from the entries the
  // transaction covers. Here by a second Sender, whose event cache is empty, as after a crash.
  async function failOnceThenHandOver(name: string, tamper?: (keys: TestSender["keys"], destination: string) => Promise<void>) {
    const { s, sink, roomId, prefix } = await setup(name, { settings: { backoffInitialMs: 60_000, backoffMaxMs: 60_000 } });
    sink.script = [{ status: 500 }];
    await persistPdus(s.store, roomId, [sink.serverName], 7);
    await s.sender.outbound.enqueueEdu(sink.serverName, JSON.stringify({ edu_type: "m.typing", content: { room_id: roomId, user_id: `@u:${GH_SERVER_NAME}`, typing: true } }));
    await s.sender.startWorkers();
    s.sender.wake([sink.serverName]);
    await sink.waitFor(() => sink.attempts.length === 1, 5000, "first attempt");
    await settled(s, sink.serverName, (d) => (d?.failures ?? 0) >= 1);
    const stored = await s.redis.hgetall(s.keys.outboundTxn(sink.serverName));
    assert.equal(stored.txn_id, sink.attempts[0]!.txnId);
    assert.equal(await s.redis.exists(s.keys.outboundTxnBody(sink.serverName)), 0, "no body stored");
    assert.equal(stored.digest, createHash("sha256").update(sink.attempts[0]!.rawBody).digest("base64url"), "the digest of the bytes sent");
    const keys = s.keys;
    await s.close();
    await tamper?.(keys, sink.serverName);
    const second = makeSender({ prefix, key, settings: { backoffInitialMs: 60_000, backoffMaxMs: 60_000 } });
    cleanups.push(() => second.close());
    await second.sender.startWorkers();
    await second.sender.retryNow(sink.serverName);
    await sink.waitFor(() => sink.delivered.length === 7, 5000, "7 PDUs");
    await settled(second, sink.serverName);
    assert.equal(sink.badSignatures, 0);
    assert.deepEqual(numbersOf(sink.delivered), range(0, 7));
    assert.deepEqual(sink.attempts.map((a) => a.answered), [500, 200]);
    assert.deepEqual(sink.attempts.map((a) => a.body.edus?.length), [1, 1]);
    if (!tamper) assertExactlyOncePerTxn(sink.attempts);
    return sink.attempts;
  }

  test("a stored transaction re-sent by another process: its body is rebuilt byte for byte (same txnId, same bytes)", async () => {
    const [first, retry] = await failOnceThenHandOver("rebuild");
    assert.equal(retry!.txnId, first!.txnId);
    assert.equal(retry!.rawBody, first!.rawBody);
  });

  test("a stored transaction whose body cannot be rebuilt identically is replaced by a new txnId over the same entries, never re-sent with other bytes", async () => {
    // As if the bytes the entries encode to had changed since (another encoding, an event gone).
    const [first, retry] = await failOnceThenHandOver("rebuild-changed", async (keys, d) => {
      await redis.hset(keys.outboundTxn(d), "digest", "not-the-digest-of-this-body");
    });
    assert.notEqual(retry!.txnId, first!.txnId);
    assert.notEqual(retry!.rawBody, first!.rawBody, "a new origin_server_ts");
    assert.deepEqual(numbersOf(retry!.body.pdus), numbersOf(first!.body.pdus));
    assert.deepEqual(retry!.body.edus, first!.body.edus);
  });

  test("a transaction stored by an older version (body in the hash, not canonical) is re-sent byte for byte", async () => {
    const { s, sink, roomId } = await setup("legacy", { sinks: 1 });
    await persistPdus(s.store, roomId, [sink.serverName], 4);
    const head = await s.sender.outbound.head(sink.serverName, 3, 0);
    // Key order of JSON.stringify (not canonical): must still be sent exactly and signed correctly.
    const pdus = await Promise.all(head.pdus.map(async (r) => JSON.parse((await s.store.getEventJson(r.split(" ")[0]!, r.split(" ")[1]!))!)));
    const body = JSON.stringify({ origin: GH_SERVER_NAME, origin_server_ts: 1, pdus });
    assert.notEqual(body, canonicalJson(JSON.parse(body)));
    const key = s.keys.outboundTxn(sink.serverName);
    await s.redis.hset(key, "txn_id", "1_legacy", "body", body, "pdu_count", "3", "edu_count", "0", "created_ts", "1", "attempts", "0", "rejections", "0");
    await s.sender.startWorkers();
    await sink.waitFor(() => sink.delivered.length === 4, 5000, "4 PDUs");
    assert.equal(sink.attempts[0]!.txnId, "1_legacy");
    assert.equal(sink.attempts[0]!.rawBody, body);
    assert.equal(sink.badSignatures, 0);
    assert.deepEqual(numbersOf(sink.delivered), range(0, 4));
    await settled(s, sink.serverName);
    assert.equal(await s.redis.exists(key, s.keys.outboundTxnBody(sink.serverName)), 0);
  });

  test("backlog of 1000 PDUs to one destination", async (t) => {
    const { s, sink, roomId } = await setup("backlog");
    await persistPdus(s.store, roomId, [sink.serverName], 1000);
    const started = Date.now();
    await s.sender.startWorkers();
    await sink.waitFor(() => sink.delivered.length === 1000, 20_000, "1000 PDUs");
    const ms = Date.now() - started;
    t.diagnostic(`1000 PDUs in ${sink.attempts.length} transactions took ${ms} ms (${Math.round(1000 / (ms / 1000))} PDUs/s)`);
    assert.equal(sink.attempts.length, 20);
    assert.deepEqual(numbersOf(sink.delivered), range(0, 1000));
  });
});

describe("sender: recovering destinations", { timeout: 30_000 }, () => {
  test("noteRemoteActivity: a destination in backoff is retried at once (same txnId); others are left alone", async () => {
    const { s, sink, roomId } = await setup("activity", { settings: { backoffInitialMs: 60_000, backoffMaxMs: 120_000 } });
    sink.script = [{ status: 500 }];
    await persistPdus(s.store, roomId, [sink.serverName], 3);
    await s.sender.startWorkers();
    await sink.waitFor(() => sink.attempts.length === 1, 5000, "the failing attempt");
    await settled(s, sink.serverName, (d) => (d?.backoff_until ?? 0) > Date.now() + 30_000);
    assert.equal(await s.sender.noteRemoteActivity("unknown.example"), false, "not a destination in backoff");
    assert.equal(await s.sender.noteRemoteActivity(GH_SERVER_NAME), false, "ourselves");
    const started = Date.now();
    assert.equal(await s.sender.noteRemoteActivity(sink.serverName), true);
    await sink.waitFor(() => sink.delivered.length === 3, 5000, "the queue, sent at once");
    assert.ok(Date.now() - started < 5000);
    assert.equal(sink.attempts[1]!.txnId, sink.attempts[0]!.txnId, "the stored transaction is re-sent");
    assertExactlyOncePerTxn(sink.attempts);
    const d = await settled(s, sink.serverName);
    assert.equal(d?.failures, 0);
    // Checked at most once per origin every few seconds.
    assert.equal(await s.sender.noteRemoteActivity(sink.serverName), false);
  });

  test("short outages: each retry waits at most backoffOutagePercent of the outage so far, so recovery is noticed soon", async () => {
    // The delays the sender chose, from its log (not the sink's clock: a loaded machine delays
    // when retries arrive, not what was decided).
    const decisions: { failures: number; failingForMs: number; retryInMs: number }[] = [];
    const logStream = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString("utf8").split("\n")) {
          if (line.includes("transaction failed; backing off")) decisions.push(JSON.parse(line));
        }
        done();
      },
    });
    const prefix = uniquePrefix("outage");
    prefixes.push(prefix);
    const sink = await SinkPeer.start(identity);
    const s = makeSender({ prefix, key, logLevel: "warn", logStream, settings: { backoffInitialMs: 100, backoffMaxMs: 60_000, backoffOutagePercent: 25 } });
    cleanups.push(async () => {
      await s.close();
      await sink.close();
    });
    const roomId = `!outage${Date.now()}:${GH_SERVER_NAME}`;
    sink.defaultAnswer = { status: 503 };
    await persistPdus(s.store, roomId, [sink.serverName], 2);
    await s.sender.startWorkers();
    await sink.waitFor(() => decisions.length >= 8, 20_000, "8 failed attempts");
    for (const d of decisions) {
      const cap = Math.max(100, Math.round(0.25 * d.failingForMs));
      assert.ok(d.retryInMs <= cap, `failure ${d.failures}: retry in ${d.retryInMs} ms > 25 % of ${d.failingForMs} ms`);
    }
    // Pure exponential backoff would wait 100 × 2^7 × [0.8, 1.4] ≥ 10 s before the 9th attempt.
    const eighth = decisions.find((d) => d.failures === 8)!;
    assert.ok(eighth.retryInMs < 0.8 * 100 * 2 ** 7, `the 8th retry waits ${eighth.retryInMs} ms`);
    const lastRetryMs = decisions.at(-1)!.retryInMs;
    sink.defaultAnswer = { status: 200 };
    await sink.waitFor(() => sink.delivered.length === 2, lastRetryMs + 5000, "delivery after recovery");
    assertExactlyOncePerTxn(sink.attempts);
    const d = await settled(s, sink.serverName);
    assert.equal(d?.failures, 0);
  });
});

describe("sender: wiring and admin API", { timeout: 30_000 }, () => {
  test("RoomService events reach the destination; /queue lists, shows and retries it", async () => {
    const prefix = uniquePrefix("wiring");
    prefixes.push(prefix);
    const dataDir = mkdtempSync(join(tmpdir(), "gatehouse-sender-"));
    const sink = await SinkPeer.start(identity);
    const config = loadConfig({
      GATEHOUSE_DATA_DIR: dataDir,
      GATEHOUSE_SERVER_NAME: GH_SERVER_NAME,
      REDIS_URL: process.env.REDIS_URL,
      GATEHOUSE_FEDERATION_INSECURE_SKIP_TLS_VERIFY: "true",
      GATEHOUSE_FEDERATION_ALLOW_PRIVATE_ADDRESSES: "true",
      GATEHOUSE_FEDERATION_TIMEOUT_MS: "3000",
      GATEHOUSE_SENDER_BACKOFF_INITIAL_MS: "60000",
      GATEHOUSE_SENDER_BACKOFF_MAX_MS: "120000",
      GATEHOUSE_SENDER_SWEEP_INTERVAL_MS: "0",
    });
    const r = connect();
    const token = "test-admin-token-0123456789";
    const gh = buildGatehouse({ config, logger: createLogger("silent"), redis: r, ownKeys: new OwnKeys(GH_SERVER_NAME, [key], [], 86_400_000), adminToken: token, redisPrefix: prefix });
    cleanups.push(async () => {
      await gh.close();
      await r.quit();
      await sink.close();
      rmSync(dataDir, { recursive: true, force: true });
    });
    await gh.sender.startWorkers();
    const admin = (method: "get" | "post", path: string) => request(gh.adminApp)[method](`/_gatehouse/admin/v1${path}`).set("Authorization", `Bearer ${token}`);

    const creator = `@admin:${GH_SERVER_NAME}`;
    const { room_id } = await createRoom(gh, { creator });
    const ev = await gh.rooms.sendLocalEvent(room_id, { type: "m.room.message", sender: creator, content: { body: "hello" } }, [sink.serverName]);
    await sink.waitFor(() => sink.delivered.length === 1, 5000, "the event");
    assert.deepEqual(sink.delivered[0], JSON.parse((await gh.store.getEventJson(room_id, ev.eventId))!), "sent as stored");

    // A failure: 60 s backoff, visible in /queue; retry now sends at once.
    sink.script = [{ status: 500 }];
    await gh.rooms.sendLocalEvent(room_id, { type: "m.room.message", sender: creator, content: { body: "second" } }, [sink.serverName]);
    await sink.waitFor(() => sink.attempts.length === 2, 5000, "the failing attempt");
    let list: { destinations: { destination: string; pending_pdus: number; txn_id: string | null; backoff_until: number | null; last_error: string | null; last_success_ts: number | null }[] } = { destinations: [] };
    for (let i = 0; i < 20; i++) {
      list = (await admin("get", "/queue").expect(200)).body;
      if (list.destinations[0]?.backoff_until) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    const row = list.destinations.find((d) => d.destination === sink.serverName);
    assert.ok(row, "destination listed");
    assert.equal(row.pending_pdus, 1);
    assert.equal(row.txn_id, sink.attempts[1]!.txnId);
    assert.ok(row.backoff_until && row.backoff_until > Date.now() + 30_000);
    assert.match(row.last_error ?? "", /HTTP 500/);
    assert.ok(row.last_success_ts);

    const detail = (await admin("get", `/queue/${encodeURIComponent(sink.serverName)}`).expect(200)).body as { job: string; txn_attempts: number };
    assert.equal(detail.job, "delayed");
    assert.equal(detail.txn_attempts, 1);
    await admin("get", `/queue/${encodeURIComponent("unknown.example")}`).expect(404);

    const retried = (await admin("post", `/queue/${encodeURIComponent(sink.serverName)}/retry`).send({}).expect(200)).body as { job: string };
    assert.ok(["waiting", "active", "completed", "none", "prioritized"].includes(retried.job), retried.job);
    await sink.waitFor(() => sink.delivered.length === 2, 3000, "the retried transaction");
    assert.equal(sink.attempts[2]!.txnId, sink.attempts[1]!.txnId);
    await admin("post", `/queue/${encodeURIComponent("unknown.example")}/retry`).send({}).expect(404);
    await admin("get", "/queue").set("Authorization", "Bearer wrong").expect(401);

    // Another failure (60 s backoff); then an X-Matrix-authenticated request from that server
    // arrives: it is up, so its queue is sent now (Synapse does the same).
    sink.script = [{ status: 500 }];
    const attemptsBefore = sink.attempts.length;
    await gh.rooms.sendLocalEvent(room_id, { type: "m.room.message", sender: creator, content: { body: "third" } }, [sink.serverName]);
    await sink.waitFor(() => sink.attempts.length === attemptsBefore + 1, 5000, "the second failing attempt");
    for (let i = 0; i < 40 && !(await gh.sender.view.describe(sink.serverName))?.backoff_until; i++) await new Promise((res) => setTimeout(res, 50));
    assert.ok(((await gh.sender.view.describe(sink.serverName))?.backoff_until ?? 0) > Date.now() + 30_000);
    const sinkKey = (sink as unknown as { key: SigningKey }).key;
    const uri = `/_matrix/federation/v1/query/profile?user_id=${encodeURIComponent(creator)}`;
    const auth = signRequest({ method: "GET", uri, origin: sink.serverName, destination: GH_SERVER_NAME, key: sinkKey });
    await request(gh.federationApp).get(uri).set("Authorization", auth).expect(200);
    await sink.waitFor(() => sink.delivered.length === 3, 5000, "the queue, sent when the destination made a request");
  });
});

test("backoffDelay: exponential, jittered within [0.8, 1.4], capped", () => {
  const s = { initialMs: 1000, maxMs: 300_000 };
  assert.equal(backoffDelay(1, s, () => 0), 800);
  assert.equal(backoffDelay(1, s, () => 1), 1400);
  assert.equal(backoffDelay(3, s, () => 0.5), 4400);
  assert.equal(backoffDelay(20, s, () => 0), 240_000);
  assert.equal(backoffDelay(20, s, () => 1), 300_000);
  assert.equal(backoffDelay(1e9, s, () => 1), 300_000);
});
