// Starts a private redis-server child process (no RDB/AOF unless asked), for tests and the
// embedded default. Plain JS so that both scripts/ and src/ can use it without a build.
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import net from "node:net";

export function findRedisServer() {
  const found = spawnSync("sh", ["-c", "command -v redis-server || ls /usr/bin/redis-server /usr/sbin/redis-server 2>/dev/null"], {
    encoding: "utf8",
  });
  const path = found.stdout.trim().split("\n")[0];
  return path ? path : null;
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * @param {{dir: string, persistent?: boolean, port?: number}} opts
 * @returns {Promise<{url: string, port: number, stop: () => Promise<void>, child: import("node:child_process").ChildProcess}>}
 */
export async function startRedis({ dir, persistent = false, port }) {
  const bin = findRedisServer();
  if (!bin) {
    throw new Error(
      "redis-server was not found. Install it (Debian: `sudo apt-get install -y redis-server`) or set REDIS_URL to an existing Redis.",
    );
  }
  mkdirSync(dir, { recursive: true });
  const p = port ?? (await freePort());
  const args = ["--port", String(p), "--bind", "127.0.0.1", "--dir", dir, "--daemonize", "no", "--save", ""];
  if (persistent) args.push("--appendonly", "yes", "--appendfsync", "everysec");
  else args.push("--appendonly", "no");
  const child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  await new Promise((resolve, reject) => {
    const deadline = Date.now() + 10_000;
    const tryConnect = () => {
      if (child.exitCode !== null) return reject(new Error(`redis-server exited: ${output}`));
      const sock = net.connect(p, "127.0.0.1");
      sock.on("connect", () => {
        sock.write("PING\r\n");
        sock.once("data", () => {
          sock.destroy();
          resolve();
        });
      });
      sock.on("error", () => {
        sock.destroy();
        if (Date.now() > deadline) reject(new Error(`redis-server did not start: ${output}`));
        else setTimeout(tryConnect, 50);
      });
    };
    tryConnect();
  });
  return {
    url: `redis://127.0.0.1:${p}`,
    port: p,
    child,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}
