// Metrics and probes: a Gatehouse built with a Metrics instance, the ops app (src/http/ops.ts)
// served with supertest, a scripted knock flow against a fake remote server, then /metrics is
// scraped and its exposition text parsed to check each series and value.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import request from "supertest";
import { Registry } from "prom-client";
import { TestGatehouse, ADMIN, FED, enc } from "../support/gatehouse.js";
import { RemoteServer, randomKey } from "../support/remote-server.js";
import { Metrics } from "../../src/metrics.js";
import { CACHE_SHARES, DEFAULT_CACHE_MAX_BYTES } from "../../src/store/byte-lru.js";
import { opsApp, type OpsState } from "../../src/http/ops.js";
import { serverOfUserId } from "../../src/protocol/ids.js";
import type { Express } from "express";

// --- a small parser for the Prometheus text exposition format (0.0.4) --------------------------

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Exposition {
  samples: Sample[];
  /** Metric family name → type (counter, gauge, histogram…). */
  types: Map<string, string>;
  help: Map<string, string>;
}

function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    const eq = text.indexOf("=", i);
    const name = text.slice(i, eq).trim();
    assert.match(name, /^[a-zA-Z_][a-zA-Z0-9_]*$/, `label name in {${text}}`);
    assert.equal(text[eq + 1], '"', `label value must be quoted in {${text}}`);
    let j = eq + 2;
    let value = "";
    for (; text[j] !== '"'; j++) {
      assert.ok(j < text.length, `unterminated label value in {${text}}`);
      if (text[j] === "\\") {
        const next = text[++j];
        value += next === "n" ? "\n" : next;
      } else value += text[j];
    }
    labels[name] = value;
    i = j + 1;
    if (text[i] === ",") i++;
  }
  return labels;
}

function parseExposition(text: string): Exposition {
  const out: Exposition = { samples: [], types: new Map(), help: new Map() };
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (meta) {
      (meta[1] === "TYPE" ? out.types : out.help).set(meta[2]!, meta[3]!);
      continue;
    }
    if (line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const raw = m[3]!;
    const value = raw === "+Inf" ? Infinity : raw === "-Inf" ? -Infinity : Number(raw);
    assert.ok(!Number.isNaN(value) || raw === "NaN", `bad value in: ${line}`);
    out.samples.push({ name: m[1]!, labels: m[2] ? parseLabels(m[2]) : {}, value });
  }
  return out;
}

/** Samples of `name` whose labels include `match`. */
function find(e: Exposition, name: string, match: Record<string, string> = {}): Sample[] {
  return e.samples.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v));
}

/** The one sample of `name` with exactly these labels (undefined when absent). */
function value(e: Exposition, name: string, labels: Record<string, string> = {}): number | undefined {
  const hits = e.samples.filter((s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === JSON.stringify(Object.entries(labels).sort()));
  assert.ok(hits.length <= 1, `${name} ${JSON.stringify(labels)} appears ${hits.length} times`);
  return hits[0]?.value;
}

const sum = (e: Exposition, name: string, match: Record<string, string> = {}) => find(e, name, match).reduce((n, s) => n + s.value, 0);

// --- the scripted flow -------------------------------------------------------------------------

let t: TestGatehouse;
let remote: RemoteServer;
let metrics: Metrics;
let ops: Express;
const state: OpsState = { starting: false, shuttingDown: false };
let scraped: Exposition;
let roomId: string;
let aclRoom: string;
const users = { accepted: "", denied: "", rescinded: "" };

const MAKE_KNOCK = "/_matrix/federation/v1/make_knock/:roomId/:userId";
const SEND_KNOCK = "/_matrix/federation/v1/send_knock/:roomId/:eventId";

before(async () => {
  metrics = new Metrics(new Registry());
  t = await TestGatehouse.start({ name: "metrics", metrics });
  remote = await RemoteServer.start();
  ops = opsApp(metrics.registry, t.redis, state);

  // Admin: a knock room (creation events are local), and a room whose ACL refuses IP literals.
  roomId = await t.createRoom({ room_version: "12", name: "Metrics" });
  aclRoom = await t.createRoom({ room_version: "12" });
  await t.setState(aclRoom, "m.room.server_acl", "", { allow: ["*"], deny: [], allow_ip_literals: false });

  // 1. knock → accept → join: the remote server is now in the room.
  users.accepted = remote.userId("accepted");
  await t.knockAcceptJoin(remote, roomId, users.accepted);
  // 2. knock → deny (a kick, queued for the joined remote server).
  users.denied = remote.userId("denied");
  await t.knock(remote, roomId, users.denied);
  const deny = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/knocks/${enc(users.denied)}/deny`).send({ reason: "no" });
  assert.equal(deny.status, 200, JSON.stringify(deny.body));
  // 3. knock → rescind (make_leave + send_leave by the knocker).
  users.rescinded = remote.userId("rescinded");
  await t.knock(remote, roomId, users.rescinded);
  const made = await t.makeMembership(remote, "leave", roomId, users.rescinded, []);
  assert.equal(made.status, 200, JSON.stringify(made.body));
  const leave = remote.signEvent(made.body.event, made.body.room_version);
  const left = await t.fed(remote, "PUT", `${FED}/v2/send_leave/${enc(roomId)}/${enc(leave.eventId)}`, leave.pdu);
  assert.equal(left.status, 200, JSON.stringify(left.body));
  // 4. a send_knock refused (event ID in the path does not match the event): 400, counted as rejected.
  const tpl = await t.makeMembership(remote, "knock", roomId, remote.userId("sloppy"), ["12"]);
  const sloppy = remote.signEvent(tpl.body.event, "12");
  const refused = await t.fed(remote, "PUT", `${FED}/v1/send_knock/${enc(roomId)}/${enc("$wrong")}`, sloppy.pdu);
  assert.equal(refused.status, 400, JSON.stringify(refused.body));
  // 5. make_knock on the ACL room: 403.
  const denied = await t.makeMembership(remote, "knock", aclRoom, remote.userId("acl"), ["12"]);
  assert.equal(denied.status, 403, JSON.stringify(denied.body));
  // 6. a request signed with the wrong private key under the remote's published key ID: 401.
  const uri = `${FED}/v1/make_knock/${enc(roomId)}/${enc(remote.userId("forger"))}?ver=12`;
  const forged = await t.fed(remote, "GET", uri, undefined, { auth: remote.authHeader("GET", uri, t.serverName, undefined, randomKey(remote.key.keyId)) });
  assert.equal(forged.status, 401, JSON.stringify(forged.body));
  // 7. a message (queued for the remote server) and an admin read.
  const sent = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/send/m.room.message`).send({ content: { msgtype: "m.text", body: "hello" } });
  assert.equal(sent.status, 200);
  assert.equal((await t.admin.get(`${ADMIN}/rooms`)).status, 200);

  const res = await request(ops).get("/metrics");
  assert.equal(res.status, 200);
  assert.match(res.headers["content-type"]!, /^text\/plain; version=0\.0\.4/);
  scraped = parseExposition(res.text);
});
after(async () => {
  await t.cleanup();
  await remote.close();
});

describe("/metrics after a scripted knock flow", () => {
  test("knocks by outcome", () => {
    assert.equal(scraped.types.get("gatehouse_knocks_total"), "counter");
    assert.equal(value(scraped, "gatehouse_knocks_total", { outcome: "received" }), 3, "the accepted, the denied and the rescinded knock");
    assert.equal(value(scraped, "gatehouse_knocks_total", { outcome: "accepted" }), 1);
    assert.equal(value(scraped, "gatehouse_knocks_total", { outcome: "denied" }), 1);
    assert.equal(value(scraped, "gatehouse_knocks_total", { outcome: "rescinded" }), 1);
    assert.equal(value(scraped, "gatehouse_knocks_total", { outcome: "rejected" }), 1);
  });

  test("build info: the package version and the Node.js version", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
    assert.equal(value(scraped, "gatehouse_build_info", { version: pkg.version, node_version: process.versions.node }), 1);
  });

  test("federation requests by route, method, status and errcode", () => {
    const fed = (route: string, status: string, errcode = "", method = "GET") =>
      value(scraped, "gatehouse_federation_requests_total", { route, method, status, errcode });
    // make_knock: 4 successful (3 knocks + the refused send_knock's template), the ACL 403.
    assert.equal(fed(MAKE_KNOCK, "200"), 4);
    assert.equal(fed(MAKE_KNOCK, "403", "M_FORBIDDEN"), 1);
    assert.equal(fed(SEND_KNOCK, "200", "", "PUT"), 3);
    assert.equal(fed(SEND_KNOCK, "400", "M_INVALID_PARAM", "PUT"), 1);
    assert.equal(fed("/_matrix/federation/v2/send_join/:roomId/:eventId", "200", "", "PUT"), 1);
    assert.equal(fed("/_matrix/federation/v2/send_leave/:roomId/:eventId", "200", "", "PUT"), 1);
    // A failed X-Matrix check is answered by the auth middleware, before any route matched.
    assert.equal(fed("unmatched", "401", "M_UNAUTHORIZED"), 1);
    // Every request counted once: the duration histogram saw as many.
    const requests = sum(scraped, "gatehouse_federation_requests_total");
    assert.equal(sum(scraped, "gatehouse_federation_request_duration_seconds_count"), requests);
    assert.equal(scraped.types.get("gatehouse_federation_request_duration_seconds"), "histogram");
    // No label carries a remote server name or user ID (cardinality).
    for (const s of find(scraped, "gatehouse_federation_requests_total")) assert.ok(!JSON.stringify(s.labels).includes(remote.serverName));
  });

  test("ACL denials, X-Matrix failures, key fetches", () => {
    assert.equal(value(scraped, "gatehouse_acl_denials_total", { room: aclRoom, reason: "server_acl" }), 1);
    assert.equal(sum(scraped, "gatehouse_acl_denials_total"), 1);
    assert.equal(value(scraped, "gatehouse_inbound_check_failures_total", { check: "x_matrix" }), 1);
    // The remote's key was fetched once, then served from the cache.
    assert.equal(value(scraped, "gatehouse_key_fetches_total", { outcome: "miss" }), 1);
    assert.ok(value(scraped, "gatehouse_key_fetches_total", { outcome: "hit" })! > 10);
    assert.equal(value(scraped, "gatehouse_key_fetches_total", { outcome: "error" }), undefined);
  });

  test("events persisted and PDUs queued match what Redis holds", async () => {
    // Every event of the two rooms, split like the counter: remote/local origin, member/state/message.
    const expected: Record<string, number> = {};
    for (const r of [roomId, aclRoom]) {
      const ids = (await t.store.timeline(r)).map((e) => e.eventId);
      for (const ev of (await t.store.getEvents(r, ids)).values()) {
        const origin = serverOfUserId(ev.sender) === t.serverName ? "local" : "remote";
        const kind = ev.type === "m.room.member" ? "member" : typeof ev.state_key === "string" ? "state" : "message";
        expected[`${origin}/${kind}`] = (expected[`${origin}/${kind}`] ?? 0) + 1;
      }
    }
    const got: Record<string, number> = {};
    for (const s of find(scraped, "gatehouse_events_persisted_total")) got[`${s.labels.origin}/${s.labels.kind}`] = s.value;
    assert.deepEqual(got, expected);
    // The remote's five: send_knock ×3, send_join, send_leave.
    assert.equal(got["remote/member"], 5);

    // Queued after the remote joined: the deny (kick) and the message; workers are off, so they wait.
    const queue = await t.redis.lrange(t.gh.keys.outboundPdus(remote.serverName), 0, -1);
    assert.equal(queue.length, 2);
    assert.equal(value(scraped, "gatehouse_outbound_pdus_queued_total"), 2);
    assert.equal(scraped.types.get("gatehouse_outbound_pending"), "gauge");
    assert.equal(value(scraped, "gatehouse_outbound_pending", { kind: "pdu" }), 2);
    assert.equal(value(scraped, "gatehouse_outbound_pending", { kind: "edu" }), 0);
    assert.equal(value(scraped, "gatehouse_outbound_pending_pdus_top", { destination: remote.serverName }), 2);
    assert.equal(value(scraped, "gatehouse_outbound_destinations_in_backoff"), 0);
  });

  test("BullMQ jobs: one waiting job for the destination (no worker runs here)", () => {
    assert.equal(scraped.types.get("gatehouse_bullmq_jobs"), "gauge");
    for (const state of ["waiting", "active", "delayed", "failed"]) assert.notEqual(value(scraped, "gatehouse_bullmq_jobs", { state }), undefined, state);
    assert.equal(value(scraped, "gatehouse_bullmq_jobs", { state: "waiting" }), 1);
    assert.equal(value(scraped, "gatehouse_bullmq_jobs", { state: "active" }), 0);
  });

  test("caches bounded by bytes: bytes, entries and budget for each cache of CACHE_SHARES, within the budget", () => {
    const names = Object.keys(CACHE_SHARES).sort();
    for (const family of ["gatehouse_cache_bytes", "gatehouse_cache_entries", "gatehouse_cache_max_bytes"]) {
      assert.equal(scraped.types.get(family), "gauge", family);
      assert.deepEqual(find(scraped, family).map((s) => s.labels.cache).sort(), names, `${family}: one series per cache, no other label`);
    }
    let budget = 0;
    for (const cache of names) {
      const bytes = value(scraped, "gatehouse_cache_bytes", { cache })!;
      const max = value(scraped, "gatehouse_cache_max_bytes", { cache })!;
      assert.ok(bytes <= max, `${cache}: ${bytes} bytes held, budget ${max}`);
      budget += max;
    }
    assert.ok(budget <= DEFAULT_CACHE_MAX_BYTES && budget > DEFAULT_CACHE_MAX_BYTES * 0.99, `the shares add up to GATEHOUSE_CACHE_MAX_BYTES (${budget})`);
    // Every event written above went through the parsed-event cache; no transaction was built (workers off).
    assert.ok(value(scraped, "gatehouse_cache_entries", { cache: "events" })! >= 10);
    assert.ok(value(scraped, "gatehouse_cache_bytes", { cache: "events" })! > 0);
    assert.equal(value(scraped, "gatehouse_cache_entries", { cache: "canonical_pdus" }), 0);
  });

  test("admin requests; process metrics", () => {
    assert.equal(value(scraped, "gatehouse_admin_requests_total", { route: "/_gatehouse/admin/v1/rooms", method: "GET", status: "200" }), 1);
    assert.equal(value(scraped, "gatehouse_admin_requests_total", { route: "/_gatehouse/admin/v1/rooms/:roomId/knocks/:userId/deny", method: "POST", status: "200" }), 1);
    // new Metrics(registry) collects the default process metrics with the gatehouse_ prefix.
    assert.ok(find(scraped, "gatehouse_process_cpu_user_seconds_total").length === 1);
    // Every sample belongs to a family with HELP and TYPE.
    for (const s of scraped.samples) {
      const family = s.name.replace(/_(bucket|sum|count)$/, "");
      assert.ok(scraped.types.has(s.name) || scraped.types.has(family), `${s.name} has no TYPE`);
    }
  });
});

describe("probes", () => {
  test("/health/ready 503 'starting' until every listener is bound (the ops listener starts first)", async () => {
    const starting = opsApp(metrics.registry, t.redis, { starting: true, shuttingDown: false });
    const res = await request(starting).get("/health/ready");
    assert.equal(res.status, 503);
    assert.deepEqual(res.body, { status: "starting" });
    assert.equal((await request(starting).get("/health/live")).status, 200, "liveness is not readiness");
  });

  test("/health/live 200; /health/ready 200, then 503 while shutting down", async () => {
    const live = await request(ops).get("/health/live");
    assert.equal(live.status, 200);
    assert.deepEqual(live.body, { status: "ok" });
    const ready = await request(ops).get("/health/ready");
    assert.equal(ready.status, 200);
    assert.deepEqual(ready.body, { status: "ok" });
    state.shuttingDown = true;
    try {
      const draining = await request(ops).get("/health/ready");
      assert.equal(draining.status, 503);
      assert.deepEqual(draining.body, { status: "shutting down" });
      assert.equal((await request(ops).get("/health/live")).status, 200, "liveness is not readiness");
    } finally {
      state.shuttingDown = false;
    }
    assert.equal((await request(ops).get("/health/ready")).status, 200);
  });
});
