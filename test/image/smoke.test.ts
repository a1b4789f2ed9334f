/**
 * Smoke run of the container image (deploy/Dockerfile) as a pod runs it: uid 10001, read-only
 * root file system, all capabilities dropped, no privilege escalation, the data folder and /tmp
 * on tmpfs (the pod's emptyDirs), an external Redis. Run by .ci/run after scripts/image-build.sh:
 *
 *   GATEHOUSE_IMAGE=localhost/gatehouse:ci node --import tsx --test test/image/smoke.test.ts
 *
 * Without GATEHOUSE_IMAGE (no image was built) every test is skipped with that reason.
 * Podman is run with the settings scripts/image-build.sh explains (vfs, runc, lowered rlimits),
 * on the host network so that the container reaches the test's Redis on loopback.
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, readFileSync, chmodSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { get as httpsGet } from "node:https";
import type { TLSSocket } from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startRedis } from "../../src/embedded-redis.js";

const image = process.env.GATEHOUSE_IMAGE;
const skip = image ? false : "GATEHOUSE_IMAGE is not set: no image was built (scripts/image-build.sh prints why)";
const PODMAN = ["--storage-driver=vfs", "--runtime", "runc"];
const LIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"];
/**
 * What the Deployment's securityContext and volumes impose. The data folder is a 0777 host folder,
 * as an emptyDir is (podman 4.3 gives a --tmpfs the image folder's root:root 0700).
 */
const dataDir = mkdtempSync(join(tmpdir(), "gatehouse-image-data-"));
chmodSync(dataDir, 0o777);
const POD = ["--network=host", "--user", "10001:10001", "--read-only", "--cap-drop=ALL", "--security-opt", "no-new-privileges", "-v", `${dataDir}:/var/lib/gatehouse`, "--tmpfs", "/tmp:rw,size=64m,mode=1777"];
const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };

function podman(args: string[], timeoutMs = 120_000) {
  const r = spawnSync("podman", [...PODMAN, ...args], { encoding: "utf8", timeout: timeoutMs });
  return { code: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}
const run = (env: Record<string, string>, args: string[], extra: string[] = []) =>
  podman(["run", "--rm", ...LIMITS, ...POD, ...extra, ...Object.entries(env).flatMap(([k, v]) => ["-e", `${k}=${v}`]), image!, ...args]);

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

describe("container image smoke run", { skip }, () => {
  let redis: Awaited<ReturnType<typeof startRedis>>;
  let redisDir: string;
  const env: Record<string, string> = {};

  before(async () => {
    redisDir = mkdtempSync(join(tmpdir(), "gatehouse-image-redis-"));
    redis = await startRedis({ dir: redisDir });
    Object.assign(env, {
      GATEHOUSE_SERVER_NAME: "gatehouse.example.org",
      REDIS_URL: redis.url,
      GATEHOUSE_ADMIN_TOKEN: "image-smoke-admin-token-0123456789",
      GATEHOUSE_FEDERATION_LISTEN: `127.0.0.1:${await freePort()}`,
      GATEHOUSE_ADMIN_LISTEN: `127.0.0.1:${await freePort()}`,
      GATEHOUSE_METRICS_LISTEN: `127.0.0.1:${await freePort()}`,
    });
  });
  after(async () => {
    await redis?.stop();
    if (redisDir) rmSync(redisDir, { recursive: true, force: true });
    rmSync(dataDir, { recursive: true, force: true });
  });

  test("--help, and `gatehouse` is on PATH", (t) => {
    const help = run({}, ["--help"]);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /gatehouse — Matrix federation gateway/);
    const onPath = run({}, ["--help"], ["--entrypoint", "gatehouse"]);
    assert.equal(onPath.code, 0, onPath.stderr);
    assert.match(onPath.stdout, /gatehouse config check/);
    const node = run({}, ["--version"], ["--entrypoint", "node"]);
    t.diagnostic(`image runs Node.js ${node.stdout.trim()}`);
    assert.match(node.stdout, /^v24\./);
  });

  test("config check accepts the pod's settings (secrets hidden) and names a bad one", () => {
    const ok = run(env, ["config", "check"]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /configuration is valid/);
    assert.ok(!ok.stdout.includes(env.GATEHOUSE_ADMIN_TOKEN!), "the admin token is not printed");
    const bad = run({ ...env, GATEHOUSE_KEY_VALIDITY_HOURS: "500" }, ["config", "check"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /invalid setting GATEHOUSE_KEY_VALIDITY_HOURS/);
  });

  test("keygen into the read-only root file system: one line, exit 1, no stack trace", () => {
    const r = run({ GATEHOUSE_DATA_DIR: "/app/data", GATEHOUSE_TLS: "off" }, ["keygen"]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    // Node's recursive mkdir reports a read-only parent as ENOENT.
    assert.match(r.stderr, /^gatehouse: cannot create the signing key \/app\/data\/signing\.key: (read-only file system \(EROFS|no such file or directory \(ENOENT)/);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  });

  test("serve against an external Redis: ready (200), metrics with build info, clean exit on SIGTERM", async (t) => {
    const name = `gatehouse-smoke-${process.pid}`;
    const args = ["run", "--name", name, ...LIMITS, ...POD, ...Object.entries({ ...env, GATEHOUSE_SHUTDOWN_TIMEOUT_MS: "5000" }).flatMap(([k, v]) => ["-e", `${k}=${v}`]), image!, "serve"];
    const child = spawn("podman", [...PODMAN, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let logs = "";
    child.stdout.on("data", (c: Buffer) => (logs += c.toString("utf8")));
    child.stderr.on("data", (c: Buffer) => (logs += c.toString("utf8")));
    let gone = false;
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => ((gone = true), r(code))));
    try {
      const ops = `http://${env.GATEHOUSE_METRICS_LISTEN}`;
      const deadline = Date.now() + 90_000;
      let ready = 0;
      while (Date.now() < deadline && !gone) {
        ready = await fetch(`${ops}/health/ready`).then((r) => r.status, () => 0);
        if (ready === 200) break;
        await new Promise((r) => setTimeout(r, 500));
      }
      assert.equal(ready, 200, `not ready within 90 s (${gone ? "the container exited" : "still running"}):\n${logs}`);
      const metrics = await (await fetch(`${ops}/metrics`)).text();
      assert.match(metrics, new RegExp(`gatehouse_build_info\\{version="${pkg.version.replace(/\./g, "\\.")}",node_version="24\\.[0-9.]+"\\} 1`));
      // Federation over TLS (GATEHOUSE_TLS=auto: a self-signed certificate made at start).
      const [host, port] = env.GATEHOUSE_FEDERATION_LISTEN!.split(":");
      let version: { status: number; body: string; cert: string } | Error = new Error("not tried");
      for (let i = 0; i < 20; i++) {
        version = await new Promise<{ status: number; body: string; cert: string } | Error>((resolve) => {
          const req = httpsGet({ host, port: Number(port), path: "/_matrix/federation/v1/version", rejectUnauthorized: false, servername: "gatehouse.example.org" }, (res) => {
            const cert = String((res.socket as TLSSocket).getPeerCertificate().subject?.CN ?? "");
            let body = "";
            res.on("data", (c: Buffer) => (body += c.toString("utf8")));
            res.on("end", () => resolve({ status: res.statusCode ?? 0, body, cert }));
          });
          req.on("error", (e) => resolve(e));
        });
        if (!(version instanceof Error)) break;
        await new Promise((r) => setTimeout(r, 500));
      }
      assert.ok(!(version instanceof Error), `federation listener: ${String(version)}\n${logs}`);
      assert.equal(version.status, 200);
      assert.deepEqual(JSON.parse(version.body), { server: { name: "Gatehouse", version: pkg.version } });
      t.diagnostic(`federation over TLS answers 200 (certificate CN=${version.cert})`);
      const kill = podman(["kill", "--signal", "TERM", name]);
      assert.equal(kill.code, 0, kill.stderr);
      const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r("timeout"), 30_000))]);
      assert.equal(code, 0, `exit after SIGTERM: ${code}\n${logs}`);
      assert.match(logs, /"msg":"shutting down"/);
      assert.doesNotMatch(logs, /"level":(50|60)/, "no error or fatal log line");
    } finally {
      podman(["rm", "-f", name]);
    }
  });
});
