/**
 * The embedded default: when REDIS_URL is unset, Gatehouse (and the test runner) start a private
 * redis-server child process bound to 127.0.0.1 with its data in the given folder.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import net from "node:net";

export interface EmbeddedRedis {
  url: string;
  port: number;
  child: ChildProcess;
  /**
   * Whether the child is bound to this process's life (Linux, util-linux `setpriv --pdeathsig`):
   * it gets SIGTERM when this process dies, even by SIGKILL. False where setpriv is missing.
   */
  boundToParent: boolean;
  stop(): Promise<void>;
}

export function findRedisServer(): string | null {
  for (const p of ["/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server"]) if (existsSync(p)) return p;
  const found = spawnSync("sh", ["-c", "command -v redis-server"], { encoding: "utf8" });
  const path = found.stdout?.trim();
  return path ? path : null;
}

/**
 * util-linux's `setpriv` (Linux only; util-linux is an Essential package on Debian), used to start
 * the child with PR_SET_PDEATHSIG = SIGTERM: the kernel signals it when this process dies, however
 * it dies (a `kill -9` or an OOM kill included), and setpriv then execs redis-server, which keeps
 * the setting. Node cannot set it itself (no prctl), and the alternatives are heavier: a pipe the
 * child watches needs a watcher process beside redis-server, which cannot watch one itself.
 */
export function findSetpriv(): string | null {
  if (process.platform !== "linux") return null;
  for (const p of ["/usr/bin/setpriv", "/bin/setpriv"]) if (existsSync(p)) return p;
  return null;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(port, "127.0.0.1");
    sock.setTimeout(500);
    sock.on("connect", () => sock.write("PING\r\n"));
    sock.once("data", (d) => {
      sock.destroy();
      resolve(d.toString().startsWith("+PONG"));
    });
    sock.on("error", () => resolve(false));
    sock.on("timeout", () => {
      sock.destroy();
      resolve(false);
    });
  });
}

/** Redis's `appendfsync` policies: when the append-only file is fsynced to disk. */
export const APPENDFSYNC_POLICIES = ["always", "everysec", "no"] as const;
export type AppendFsync = (typeof APPENDFSYNC_POLICIES)[number];

/**
 * Starts redis-server. `persistent` turns on the append-only file (the embedded default for
 * `serve`, so that queued PDUs survive a restart), fsynced per `appendfsync` (default everysec:
 * a power cut or kernel crash can lose the last second of writes; `always`: none, at the cost of
 * an fsync per write); tests run without persistence.
 */
export async function startRedis(opts: { dir: string; persistent?: boolean; port?: number; appendfsync?: AppendFsync; extraArgs?: readonly string[] }): Promise<EmbeddedRedis> {
  const bin = findRedisServer();
  if (!bin) {
    throw new Error(
      "redis-server was not found. Install it (Debian: `sudo apt-get install -y redis-server`) or set REDIS_URL to an existing Redis.",
    );
  }
  mkdirSync(opts.dir, { recursive: true });
  const port = opts.port ?? (await freePort());
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", opts.dir, "--daemonize", "no", "--save", ""];
  args.push("--appendonly", opts.persistent ? "yes" : "no");
  if (opts.persistent) args.push("--appendfsync", opts.appendfsync ?? "everysec");
  args.push(...(opts.extraArgs ?? []));
  // Bound to this process's life where setpriv exists: a kill -9 of Gatehouse then stops Redis too
  // (SIGTERM: it finishes its append-only file and exits) instead of orphaning it on the data folder.
  const setpriv = findSetpriv();
  const child = setpriv
    ? spawn(setpriv, ["--pdeathsig", "SIGTERM", "--", bin, ...args], { stdio: ["ignore", "pipe", "pipe"] })
    : spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (d) => (output = (output + d).slice(-4000)));
  child.stderr!.on("data", (d) => (output = (output + d).slice(-4000)));
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`redis-server exited during start: ${output}`);
    if (await ping(port)) break;
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`redis-server did not answer within 10 s: ${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  // However this process ends (process.exit after a failed start, an uncaught exception), the
  // child gets SIGTERM (redis then finishes its append-only file and exits): no orphaned Redis
  // keeps the data folder. ('exit' handlers run synchronously; kill is a synchronous syscall.)
  // Only SIGKILL of this process escapes it: that is what setpriv's death signal (above) covers.
  const killOnExit = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
  };
  process.once("exit", killOnExit);
  child.once("exit", () => process.off("exit", killOnExit));
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    child,
    boundToParent: setpriv !== null,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}
