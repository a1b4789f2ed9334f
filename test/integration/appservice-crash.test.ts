// Pushes to an application service survive a crash: `gatehouse serve` is killed with SIGKILL
// while its transaction to the (failing) service is stored and being retried; a new process on
// the same Redis re-sends that transaction with the same txnId and body, and every event reaches
// the service exactly once.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import { startRedis, freePort, type EmbeddedRedis } from "../../src/embedded-redis.js";
import { jsonRequest } from "../../src/dev/http-json.js";
import { waitFor } from "../../src/dev/wait.js";
import { Cleanups } from "../support/cleanups.js";

const root = fileURLToPath(new URL("../..", import.meta.url));
const cleanups = new Cleanups("appservice-crash");
after(() => cleanups.run());

interface Attempt {
  txnId: string;
  body: string;
  eventIds: string[];
}

test("a transaction to an application service interrupted by SIGKILL is re-sent by the next process, same txnId and body", async () => {
  const dir = mkdtempSync(join(tmpdir(), "gatehouse-as-crash-"));
  cleanups.add("the data folder", () => rmSync(dir, { recursive: true, force: true }));
  const redis: EmbeddedRedis = await startRedis({ dir: join(dir, "redis"), persistent: true });
  cleanups.add("redis-server", () => redis.stop());

  // The service: records every attempt; answers 503 while `failing`.
  const attempts: Attempt[] = [];
  let failing = false;
  const service = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      const m = /^\/_matrix\/app\/v1\/transactions\/([^/?]+)/.exec(req.url ?? "");
      if (m) attempts.push({ txnId: decodeURIComponent(m[1]!), body, eventIds: (JSON.parse(body).events as { event_id: string }[]).map((e) => e.event_id) });
      res.writeHead(m && failing ? 503 : 200, { "Content-Type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((r) => service.listen(0, "127.0.0.1", () => r()));
  cleanups.add("the application service", () => new Promise<void>((r) => service.close(() => r())));
  writeFileSync(
    join(dir, "bridge.yaml"),
    `id: crashbridge\nurl: http://127.0.0.1:${(service.address() as { port: number }).port}\nas_token: crash-as-token-0001\nhs_token: crash-hs-token-0001\nsender_localpart: crashbot\nnamespaces:\n  users: [{ exclusive: true, regex: "@_crash_.*" }]\n`,
  );

  const adminToken = randomBytes(18).toString("base64url");
  const [fedPort, adminPort, clientPort] = [await freePort(), await freePort(), await freePort()];
  const env = {
    PATH: process.env.PATH ?? "",
    REDIS_URL: redis.url,
    GATEHOUSE_DATA_DIR: dir,
    GATEHOUSE_SERVER_NAME: "crash.test",
    GATEHOUSE_TLS: "off",
    GATEHOUSE_FEDERATION_LISTEN: `127.0.0.1:${fedPort}`,
    GATEHOUSE_ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
    GATEHOUSE_CLIENT_LISTEN: `127.0.0.1:${clientPort}`,
    GATEHOUSE_METRICS_LISTEN: "off",
    GATEHOUSE_ADMIN_TOKEN: adminToken,
    GATEHOUSE_APPSERVICE_REGISTRATION_FILES: "bridge.yaml",
    GATEHOUSE_SENDER_BACKOFF_INITIAL_MS: "100",
    GATEHOUSE_SENDER_BACKOFF_MAX_MS: "300",
    GATEHOUSE_SENDER_BACKOFF_OUTAGE_PERCENT: "0",
    GATEHOUSE_SENDER_LOCK_MS: "1000",
    GATEHOUSE_LOG_LEVEL: "silent",
  };
  const admin = (method: string, path: string, body?: unknown) => jsonRequest(`http://127.0.0.1:${adminPort}/_gatehouse/admin/v1${path}`, method, adminToken, body);
  const serve = async (): Promise<ChildProcess> => {
    const child = spawn(process.execPath, ["bin/gatehouse.mjs", "serve"], { cwd: root, env, stdio: ["ignore", "ignore", "inherit"] });
    cleanups.add("the serve process", () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    });
    await waitFor("gatehouse serve to answer", async () => (await admin("GET", "/server").catch(() => null))?.status === 200, 30_000);
    return child;
  };

  let child = await serve();
  const created = await admin("POST", "/rooms", { creator: "@crashbot:crash.test", name: "crash room" });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  const roomId = created.body.room_id as string;
  await waitFor("the room's events pushed", () => attempts.some((a) => a.body.includes("m.room.name")), 10_000);

  failing = true;
  const sent: string[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await admin("POST", `/rooms/${encodeURIComponent(roomId)}/send/m.room.message`, { content: { msgtype: "m.text", body: `m${i}` } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    sent.push(r.body.event_id as string);
  }
  const stored = await waitFor(
    "a stored transaction retried at least twice",
    async () => {
      const q = await admin("GET", `/queue/${encodeURIComponent("as:crashbridge")}`);
      const txnId = q.body.txn_id as string | null;
      return txnId && attempts.filter((a) => a.txnId === txnId).length >= 2 ? txnId : null;
    },
    10_000,
  );
  const failedBody = attempts.find((a) => a.txnId === stored)!.body;
  child.kill("SIGKILL");
  await new Promise((r) => child.once("exit", r));

  failing = false;
  child = await serve();
  await waitFor(
    "the queue to drain after the restart",
    async () => {
      const q = (await admin("GET", `/queue/${encodeURIComponent("as:crashbridge")}`)).body;
      return q.pending_pdus === 0 && q.txn_id === null;
    },
    15_000,
  );
  assert.ok(sent.every((id) => attempts.some((a) => a.eventIds.includes(id))), "every message reached the service");

  // The stored transaction was re-sent byte for byte by the new process and accepted.
  const resent = attempts.filter((a) => a.txnId === stored);
  assert.ok(resent.length >= 3, `${resent.length} attempts of ${stored}`);
  assert.ok(resent.every((a) => a.body === failedBody), "same body on every attempt");
  // Exactly once per accepted transaction: each event is in one txnId only.
  const txnOf = new Map<string, Set<string>>();
  for (const a of attempts) for (const id of a.eventIds) (txnOf.get(id) ?? txnOf.set(id, new Set()).get(id)!).add(a.txnId);
  for (const id of sent) assert.equal(txnOf.get(id)?.size, 1, `${id} in ${[...(txnOf.get(id) ?? [])].join(", ")}`);
  child.kill("SIGTERM");
  await new Promise((r) => child.once("exit", r));
});
