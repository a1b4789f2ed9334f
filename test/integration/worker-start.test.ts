// `gatehouse worker` undoes a failed start as `serve` does (#12): whatever it had started (the
// Redis connection, the BullMQ worker, the metrics listener) is stopped before the error is
// thrown. Proof with a real process that calls startWorker and, when it rejects, does NOT call
// process.exit: it must end by itself, because nothing is left holding its event loop. Before,
// the Redis connection (and the BullMQ worker, the metrics listener) kept it running forever.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Redis } from "ioredis";
import { freePort, startRedis, type EmbeddedRedis } from "../../src/embedded-redis.js";

const root = fileURLToPath(new URL("../..", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "gatehouse-worker-start-"));
// A Redis of its own: one case corrupts a key of the default prefix ("gh") that a worker reads.
let redis: EmbeddedRedis;
let conn: Redis;

before(async () => {
  redis = await startRedis({ dir: join(dir, "redis") });
  conn = new Redis(redis.url);
});
after(async () => {
  conn.disconnect();
  await redis.stop();
  rmSync(dir, { recursive: true, force: true });
});

const CHILD = `
import { loadConfig } from "./src/config.ts";
import { startWorker } from "./src/server.ts";
const config = loadConfig(process.env);
startWorker(config).then(
  () => { console.log("STARTED"); process.exit(3); },
  (e) => { console.log("FAILED " + e.message); /* no process.exit: the process must end by itself */ },
);
`;

/** Runs startWorker in a child process; answers its output and whether it ended by itself within `ms`. */
function runWorker(env: Record<string, string>, ms: number): Promise<{ out: string; ended: boolean; code: number | null }> {
  const base: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("GATEHOUSE_") && k !== "REDIS_URL") base[k] = v;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", CHILD], {
    cwd: root,
    env: { ...base, REDIS_URL: redis.url, GATEHOUSE_DATA_DIR: dir, GATEHOUSE_SERVER_NAME: "gatehouse.test", GATEHOUSE_LOG_LEVEL: "silent", GATEHOUSE_SENDER_SWEEP_INTERVAL_MS: "0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      resolve({ out, ended: false, code: null });
    }, ms);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ out, ended: true, code });
    });
  });
}

const cases: { why: string; setup: () => Promise<{ env: Record<string, string>; cleanup: () => Promise<void> }>; failure: RegExp }[] = [
  {
    why: "the metrics port is in use (after Redis was connected and the core built)",
    setup: async () => {
      const blocker = net.createServer();
      const port = await freePort();
      await new Promise<void>((r) => blocker.listen(port, "127.0.0.1", () => r()));
      return { env: { GATEHOUSE_METRICS_LISTEN: `127.0.0.1:${port}` }, cleanup: () => new Promise((r) => blocker.close(() => r())) };
    },
    failure: /FAILED .*EADDRINUSE/,
  },
  {
    why: "the workers fail to start (a corrupt queue key: WRONGTYPE in the recovery sweep), after the BullMQ worker and the metrics listener started",
    setup: async () => {
      await conn.set("gh:out:destinations", "not a set");
      return { env: { GATEHOUSE_METRICS_LISTEN: `127.0.0.1:${await freePort()}` }, cleanup: async () => void (await conn.del("gh:out:destinations")) };
    },
    failure: /FAILED .*WRONGTYPE/,
  },
];

for (const c of cases) {
  test(`a failed worker start undoes what it started: ${c.why}`, async () => {
    const { env, cleanup } = await c.setup();
    try {
      const run = await runWorker(env, 15_000);
      assert.match(run.out, c.failure, run.out);
      assert.ok(run.ended, `the process was still running 15 s after its failed start (something it started was left open):\n${run.out}`);
      assert.equal(run.code, 0, run.out);
    } finally {
      await cleanup();
    }
  });
}

test("the same worker starts when nothing is in the way (the cases above fail for their reason only)", async () => {
  const run = await runWorker({ GATEHOUSE_METRICS_LISTEN: "off" }, 30_000);
  assert.match(run.out, /STARTED/, run.out);
  assert.equal(run.code, 3);
});
