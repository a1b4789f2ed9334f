// Starting and stopping `gatehouse serve` as a real process with its embedded redis-server
// (REDIS_URL unset): a failed start (the federation port is taken) stops the redis-server it had
// started, and every signal that ends the process leaves no redis-server behind (#12 deliverable 6);
// a kill -9 of serve takes its redis-server with it (setpriv --pdeathsig) and loses no acknowledged write.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "../../src/embedded-redis.js";

const root = fileURLToPath(new URL("../..", import.meta.url));
const dirs: string[] = [];
const redisPorts: number[] = [];

/** The pid of the redis-server serving 127.0.0.1:port (it names its address in its process title). */
function redisPid(port: number): number | null {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, "utf8").replace(/\0/g, " ");
      if (cmd.startsWith("redis-server") || cmd.includes("/redis-server")) {
        if (cmd.includes(`127.0.0.1:${port}`) || cmd.includes(`--port ${port} `)) return Number(entry);
      }
    } catch {
      // the process ended meanwhile
    }
  }
  return null;
}

after(() => {
  // A test that failed may have left its redis-server running: stop exactly that one.
  for (const port of redisPorts) {
    const pid = redisPid(port);
    if (pid) process.kill(pid, "SIGKILL");
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** Waits until nothing listens on the port any more (true), or gives up after `ms` (false). */
async function closedWithin(port: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!(await portOpen(port)) && redisPid(port) === null) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

interface Serve {
  child: ChildProcess;
  /** Port of the embedded redis-server, from its log line. */
  redisPort: Promise<number>;
  listening: Promise<void>;
  /** The admin API's base URL, from the listening line. */
  adminUrl: Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function newDataDir(): string {
  const dataDir = mkdtempSync(join(tmpdir(), "gatehouse-start-stop-"));
  dirs.push(dataDir);
  return dataDir;
}

function serve(federationListen: string, dataDir: string = newDataDir()): Serve {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("GATEHOUSE_") && k !== "REDIS_URL") env[k] = v;
  Object.assign(env, {
    GATEHOUSE_DATA_DIR: dataDir,
    GATEHOUSE_SERVER_NAME: "gatehouse.test",
    GATEHOUSE_FEDERATION_LISTEN: federationListen,
    GATEHOUSE_ADMIN_LISTEN: "127.0.0.1:0",
    GATEHOUSE_METRICS_LISTEN: "off",
    GATEHOUSE_TLS: "off",
    GATEHOUSE_RUN_WORKERS: "true",
    GATEHOUSE_LOG_LEVEL: "info",
    GATEHOUSE_SHUTDOWN_TIMEOUT_MS: "2000",
  });
  const child = spawn(process.execPath, ["bin/gatehouse.mjs", "serve"], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
  let resolvePort!: (p: number) => void;
  let resolveListening!: () => void;
  let resolveAdmin!: (url: string) => void;
  const adminUrl = new Promise<string>((r) => (resolveAdmin = r));
  const redisPort = new Promise<number>((r) => (resolvePort = r));
  const listening = new Promise<void>((r) => (resolveListening = r));
  let buffered = "";
  child.stdout!.on("data", (d: Buffer) => {
    buffered += d.toString();
    let nl;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      try {
        const rec = JSON.parse(line) as { msg?: string; url?: string; admin?: string };
        if (rec.msg?.startsWith("started embedded redis-server") && rec.url) {
          const port = Number(new URL(rec.url).port);
          redisPorts.push(port);
          resolvePort(port);
        }
        if (rec.msg === "gatehouse is listening") {
          resolveAdmin(rec.admin ?? "");
          resolveListening();
        }
      } catch {
        // not a log line
      }
    }
  });
  child.stderr!.on("data", () => undefined);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  return { child, redisPort, listening, adminUrl, exited };
}

test("a failed start (federation port in use) exits 1 and stops the embedded redis-server it started (it was left running)", async () => {
  const blocker = net.createServer();
  const port = await freePort();
  await new Promise<void>((r) => blocker.listen(port, "127.0.0.1", () => r()));
  try {
    const s = serve(`127.0.0.1:${port}`);
    const redisPort = await s.redisPort;
    const { code } = await s.exited;
    assert.equal(code, 1);
    assert.ok(await closedWithin(redisPort, 5000), `redis-server on ${redisPort} is still running after the failed start`);
  } finally {
    blocker.close();
  }
});

test("SIGTERM during the start (right after the embedded redis-server started): the start finishes, then a clean exit 0, and no redis-server left behind (was: killed mid-start by the default action, its claims left locked)", async () => {
  const s = serve("127.0.0.1:0");
  const redisPort = await s.redisPort;
  s.child.kill("SIGTERM");
  const { code, signal } = await s.exited;
  assert.deepEqual({ code, signal }, { code: 0, signal: null });
  assert.ok(await closedWithin(redisPort, 5000), `redis-server on ${redisPort} is still running after SIGTERM during the start`);
});

const signals: { signal: NodeJS.Signals; why: string }[] = [
  { signal: "SIGTERM", why: "what Kubernetes and systemd send" },
  { signal: "SIGINT", why: "Ctrl-C in a terminal" },
  { signal: "SIGHUP", why: "the terminal closes (was: Node's default, exit without stopping redis-server)" },
  { signal: "SIGQUIT", why: "Ctrl-\\ in a terminal (was: Node's default)" },
];
for (const { signal, why } of signals) {
  test(`${signal} (${why}): a clean exit 0, and no redis-server left behind`, async () => {
    const s = serve("127.0.0.1:0");
    const redisPort = await s.redisPort;
    await s.listening;
    s.child.kill(signal);
    const { code } = await s.exited;
    assert.equal(code, 0, `exit code after ${signal}`);
    assert.ok(await closedWithin(redisPort, 5000), `redis-server on ${redisPort} is still running after ${signal}`);
  });
}

test("kill -9 of serve: its embedded redis-server is gone within 5 s (was: orphaned on the data folder), and the next start there has every acknowledged write", async (t) => {
  const dataDir = newDataDir();
  const s = serve("127.0.0.1:0", dataDir);
  const redisPort = await s.redisPort;
  await s.listening;
  const admin = `${await s.adminUrl}/_gatehouse/admin/v1`;
  const headers = { Authorization: `Bearer ${readFileSync(join(dataDir, "admin.token"), "utf8").trim()}`, "Content-Type": "application/json" };
  // Acknowledged writes right before the kill: a room, then its topic.
  const created = await fetch(`${admin}/rooms`, { method: "POST", headers, body: JSON.stringify({ creator: "@admin:gatehouse.test", name: "survives kill -9" }) });
  assert.equal(created.status, 200);
  const roomId = ((await created.json()) as { room_id: string }).room_id;
  const topic = await fetch(`${admin}/rooms/${encodeURIComponent(roomId)}/state/m.room.topic/`, { method: "PUT", headers, body: JSON.stringify({ content: { topic: "the last write" } }) });
  assert.equal(topic.status, 200);

  s.child.kill("SIGKILL");
  await s.exited;
  const killed = Date.now();
  assert.ok(await closedWithin(redisPort, 5000), `redis-server on ${redisPort} is still running 5 s after kill -9 of serve`);
  t.diagnostic(`redis-server gone ${Date.now() - killed} ms after kill -9 of serve`);

  const again = serve("127.0.0.1:0", dataDir);
  await again.listening;
  try {
    const state = await fetch(`${await again.adminUrl}/_gatehouse/admin/v1/rooms/${encodeURIComponent(roomId)}/state`, { headers });
    assert.equal(state.status, 200);
    const list = ((await state.json()) as { state: { type: string; content: Record<string, unknown> }[] }).state;
    assert.equal(list.find((e) => e.type === "m.room.name")?.content.name, "survives kill -9");
    assert.equal(list.find((e) => e.type === "m.room.topic")?.content.topic, "the last write");
  } finally {
    again.child.kill("SIGTERM");
    await again.exited;
  }
});
