/**
 * Processes the benches run: redis-server, Gatehouse (`gatehouse serve` / `gatehouse worker` as
 * child processes, so they can be pinned to a core with taskset and killed with SIGKILL), and
 * Synapse through ../shared/peers/synapse-peers.sh. Everything listens on 127.0.0.1 only.
 *
 * Core layout on the 2-core bench machine: the server under test (Gatehouse + its Redis, or
 * Synapse's python with its in-process SQLite) on core 0 (`SERVER_CORE`), the bench process
 * (load generator, sink peers, fake remote servers) on core 1 (`LOAD_CORE`, pinSelf()).
 */
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { jsonRequest } from "../../src/dev/http-json.js";
import { waitFor } from "../../src/dev/wait.js";
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, appendFileSync, closeSync } from "node:fs";
import { tmpdir, cpus } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import net from "node:net";
import { Redis } from "ioredis";
import { findRedisServer, freePort } from "../../src/embedded-redis.js";
import { decodeBase64 } from "../../src/protocol/base64.js";
import { peers, peersScript, SynapsePeer } from "../../test/support/synapse.js";

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
export const SERVER_CORE = process.env.BENCH_SERVER_CORE ?? "0";
export const LOAD_CORE = process.env.BENCH_LOAD_CORE ?? (cpus().length > 1 ? "1" : "0");
const haveTaskset = existsSync("/usr/bin/taskset");

/** Pins this process (all its threads) and its future children to the load-generator core. */
export function pinSelf(core = LOAD_CORE): void {
  if (!haveTaskset) return;
  try {
    execFileSync("taskset", ["-a", "-p", "-c", core, String(process.pid)], { stdio: "ignore" });
  } catch {
    /* not fatal */
  }
}

export function pinPid(pid: number, core = SERVER_CORE): void {
  if (!haveTaskset) return;
  execFileSync("taskset", ["-a", "-p", "-c", core, String(pid)], { stdio: "ignore" });
}

function pinned(core: string, cmd: string, args: string[]): [string, string[]] {
  return haveTaskset ? ["taskset", ["-c", core, cmd, ...args]] : [cmd, args];
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** waitFor with the benches' defaults (30 s, polling every 50 ms). */
export const waitUntil = <T>(what: string, fn: () => Promise<T | null | undefined | false> | T | null | undefined | false, timeoutMs = 30_000, intervalMs = 50): Promise<T> =>
  waitFor(what, fn, timeoutMs, intervalMs);

/** RSS of a process in bytes (VmRSS), or null when it is gone. */
export function rssOf(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** CPU time (user+sys, seconds) a process has used so far. */
export function cpuSecondsOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return null;
  }
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", () => resolve());
  });
}

// ---------------------------------------------------------------------------------------------
// redis-server
// ---------------------------------------------------------------------------------------------

export class RedisProc {
  child!: ChildProcess;
  private constructor(
    readonly port: number,
    readonly dir: string,
    readonly aof: boolean,
    private readonly core: string,
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** `appendfsync` with the AOF on (default everysec, as the embedded Redis). */
  appendfsync = "everysec";

  static async start(opts: { aof?: boolean; appendfsync?: "always" | "everysec" | "no"; core?: string; dir?: string; port?: number } = {}): Promise<RedisProc> {
    const dir = opts.dir ?? mkdtempSync(join(tmpdir(), "gatehouse-bench-redis-"));
    const r = new RedisProc(opts.port ?? (await freePort()), dir, opts.aof ?? false, opts.core ?? SERVER_CORE);
    if (opts.appendfsync) r.appendfsync = opts.appendfsync;
    await r.launch();
    return r;
  }

  async launch(): Promise<void> {
    const bin = findRedisServer();
    if (!bin) throw new Error("redis-server not found (apt-get install redis-server)");
    mkdirSync(this.dir, { recursive: true });
    const args = ["--port", String(this.port), "--bind", "127.0.0.1", "--dir", this.dir, "--save", "", "--appendonly", this.aof ? "yes" : "no"];
    if (this.aof) args.push("--appendfsync", this.appendfsync);
    const [cmd, argv] = pinned(this.core, bin, args);
    const log = openSync(join(this.dir, "redis.log"), "a");
    this.child = spawn(cmd, argv, { stdio: ["ignore", log, log] });
    closeSync(log);
    await waitUntil("redis-server to answer", async () => {
      if (this.child.exitCode !== null) throw new Error(`redis-server exited: ${readFileSync(join(this.dir, "redis.log"), "utf8").slice(-500)}`);
      const c = new Redis(this.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      c.on("error", () => undefined);
      try {
        await c.connect();
        return (await c.ping()) === "PONG";
      } finally {
        c.disconnect();
      }
    }, 10_000);
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Graceful stop (SIGTERM: redis flushes the AOF). */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill("SIGTERM");
    await exited(this.child);
  }

  async restart(downMs = 0): Promise<void> {
    await this.stop();
    if (downMs) await sleep(downMs);
    await this.launch();
  }

  async usedMemory(): Promise<number> {
    const c = new Redis(this.url, { maxRetriesPerRequest: 1 });
    try {
      const info = await c.info("memory");
      return Number(/used_memory:(\d+)/.exec(info)![1]);
    } finally {
      c.disconnect();
    }
  }

  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Gatehouse child processes
// ---------------------------------------------------------------------------------------------

export interface GatehouseProcOptions {
  redisUrl: string;
  /** Extra environment (GATEHOUSE_*). */
  env?: Record<string, string>;
  core?: string;
  runWorkers?: boolean;
  logLevel?: string;
  /** Re-use a data folder (restart of the same server). */
  dataDir?: string;
  federationPort?: number;
  adminPort?: number;
  nodeArgs?: string[];
}

/** Shared env for every Gatehouse process of one deployment (serve + workers). */
function gatehouseEnv(o: { dataDir: string; federationPort: number; adminPort: number; adminToken: string; redisUrl: string; logLevel: string; runWorkers: boolean; env: Record<string, string> }): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    NODE_ENV: "production",
    REDIS_URL: o.redisUrl,
    GATEHOUSE_DATA_DIR: o.dataDir,
    GATEHOUSE_SERVER_NAME: `127.0.0.1:${o.federationPort}`,
    GATEHOUSE_FEDERATION_LISTEN: `127.0.0.1:${o.federationPort}`,
    GATEHOUSE_ADMIN_LISTEN: `127.0.0.1:${o.adminPort}`,
    GATEHOUSE_ADMIN_TOKEN: o.adminToken,
    GATEHOUSE_METRICS_LISTEN: "off",
    GATEHOUSE_TLS: "auto",
    GATEHOUSE_FEDERATION_INSECURE_SKIP_TLS_VERIFY: "true",
    GATEHOUSE_FEDERATION_ALLOW_PRIVATE_ADDRESSES: "true",
    GATEHOUSE_RATELIMIT_ORIGIN_PER_SECOND: "0",
    GATEHOUSE_RATELIMIT_KNOCKS_PER_ROOM_PER_SECOND: "0",
    GATEHOUSE_LOG_LEVEL: o.logLevel,
    GATEHOUSE_RUN_WORKERS: o.runWorkers ? "true" : "false",
    ...o.env,
    // BENCH_ENV_GATEHOUSE_X=v in the bench's environment sets GATEHOUSE_X=v for the children.
    // BENCH_ENV_X=v sets X=v for Gatehouse (GATEHOUSE_* settings, MALLOC_ARENA_MAX, ...).
    ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith("BENCH_ENV_")).map(([k, v]) => [k.slice("BENCH_ENV_".length), v])),
  };
}

export class GatehouseProc {
  child!: ChildProcess;
  readonly serverName: string;
  readonly adminToken: string;
  publicKey!: Uint8Array;
  keyId!: string;
  readonly logFile: string;
  private workers: ChildProcess[] = [];

  private constructor(
    readonly opts: GatehouseProcOptions,
    readonly dataDir: string,
    readonly federationPort: number,
    readonly adminPort: number,
  ) {
    this.serverName = `127.0.0.1:${federationPort}`;
    this.adminToken = `bench-admin-token-${randomBytes(8).toString("hex")}`;
    this.logFile = join(dataDir, "gatehouse.log");
  }

  static async start(opts: GatehouseProcOptions): Promise<GatehouseProc> {
    const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), "gatehouse-bench-"));
    const g = new GatehouseProc(opts, dataDir, opts.federationPort ?? (await freePort()), opts.adminPort ?? (await freePort()));
    await g.launch();
    return g;
  }

  private env(runWorkers: boolean): NodeJS.ProcessEnv {
    return gatehouseEnv({
      dataDir: this.dataDir,
      federationPort: this.federationPort,
      adminPort: this.adminPort,
      adminToken: this.adminToken,
      redisUrl: this.opts.redisUrl,
      logLevel: this.opts.logLevel ?? "info",
      runWorkers,
      env: this.opts.env ?? {},
    });
  }

  private spawnCli(command: "serve" | "worker", runWorkers: boolean, logName: string, extraEnv: Record<string, string> = {}): ChildProcess {
    const nodeArgs = this.opts.nodeArgs ?? (process.env.BENCH_GATEHOUSE_NODE_ARGS ? process.env.BENCH_GATEHOUSE_NODE_ARGS.split(" ") : []);
    // BENCH_GATEHOUSE_ROOT: run another checkout's Gatehouse (before/after comparisons).
    const root = process.env.BENCH_GATEHOUSE_ROOT ?? repoRoot;
    const [cmd, argv] = pinned(this.opts.core ?? SERVER_CORE, process.execPath, [...nodeArgs, join(root, "bin/gatehouse.mjs"), command]);
    const log = openSync(join(this.dataDir, logName), "a");
    const child = spawn(cmd, argv, { stdio: ["ignore", log, log], env: { ...this.env(runWorkers), ...extraEnv }, cwd: root });
    closeSync(log);
    return child;
  }

  /** Starts (or restarts) `gatehouse serve` and waits until its admin API answers. */
  async launch(): Promise<void> {
    this.child = this.spawnCli("serve", this.opts.runWorkers ?? true, "gatehouse.log");
    const server = await waitUntil(
      "gatehouse serve to answer",
      async () => {
        if (this.child.exitCode !== null) throw new Error(`gatehouse exited (${this.child.exitCode}): ${readFileSync(this.logFile, "utf8").slice(-1500)}`);
        const r = await this.admin("GET", "/server");
        return r.status === 200 ? r.body : null;
      },
      60_000,
      100,
    );
    const info = server as { signing_key_id: string; public_key: string };
    this.keyId = info.signing_key_id;
    this.publicKey = decodeBase64(info.public_key)!;
  }

  /**
   * Starts a `gatehouse worker` process on the same Redis; returns it. `env`: extra settings
   * (e.g. GATEHOUSE_INSTANCE_ID, to restart "the same" worker).
   */
  async startWorker(env: Record<string, string> = {}): Promise<ChildProcess> {
    const logFile = join(this.dataDir, `worker-${this.workers.length}.log`);
    const w = this.spawnCli("worker", true, `worker-${this.workers.length}.log`, env);
    this.workers.push(w);
    // Ready when it logs that its workers run (after taking back its dead predecessor's jobs).
    await waitUntil(
      "gatehouse worker to run",
      () => {
        if (w.exitCode !== null) throw new Error(`gatehouse worker exited: ${w.exitCode}`);
        return existsSync(logFile) && readFileSync(logFile, "utf8").includes("gatehouse sender worker running");
      },
      60_000,
      50,
    );
    return w;
  }

  get pid(): number {
    return this.child.pid!;
  }

  async kill9(): Promise<void> {
    this.child.kill("SIGKILL");
    await exited(this.child);
  }

  /** Stops `gatehouse serve` with `signal` (SIGTERM: graceful) and waits for it to exit. */
  async stopServe(signal: NodeJS.Signals): Promise<void> {
    this.child.kill(signal);
    await exited(this.child);
  }

  async stopWorker(w: ChildProcess, signal: NodeJS.Signals): Promise<void> {
    w.kill(signal);
    await exited(w);
  }

  async killWorker9(w: ChildProcess): Promise<void> {
    w.kill("SIGKILL");
    await exited(w);
  }

  async stop(): Promise<void> {
    const all = [this.child, ...this.workers];
    for (const c of all) if (c.exitCode === null && c.signalCode === null) c.kill("SIGTERM");
    await Promise.race([Promise.all(all.map(exited)), sleep(15_000)]);
    for (const c of all) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  }

  cleanup(): void {
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  admin(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
    return jsonRequest(`http://127.0.0.1:${this.adminPort}/_gatehouse/admin/v1${path}`, method, this.adminToken, body);
  }

  /** Log lines (JSON) at `minLevel` or above (pino levels: 40 warn, 50 error, 60 fatal). */
  logLines(minLevel = 40, file = this.logFile): { level: number; msg: string; [k: string]: unknown }[] {
    if (!existsSync(file)) return [];
    const out = [];
    for (const line of readFileSync(file, "utf8").split("\n")) {
      if (!line.startsWith("{")) continue;
      try {
        const j = JSON.parse(line);
        if (j.level >= minLevel) out.push(j);
      } catch {
        /* skip */
      }
    }
    return out;
  }

  allLogFiles(): string[] {
    return [this.logFile, ...this.workers.map((_, i) => join(this.dataDir, `worker-${i}.log`))];
  }
}

// ---------------------------------------------------------------------------------------------
// Synapse (real, from ../shared/peers/synapse-peers.sh)
// ---------------------------------------------------------------------------------------------

export function synapseUnavailable(): string | null {
  if (process.env.BENCH_NO_SYNAPSE === "1") return "BENCH_NO_SYNAPSE=1";
  if (process.getuid?.() !== 0) return "Synapse peers need root (chroot)";
  if (!peersScript()) return "../shared/peers/synapse-peers.sh not found";
  const root = process.env.PEERS_ROOT ?? "/var/tmp/matrix-peers/sid";
  if (!existsSync(join(root, "usr/lib/python3/dist-packages/synapse"))) return `Synapse chroot not installed at ${root} (synapse-peers.sh install)`;
  return null;
}

/** The interop tests' Synapse peer, started the bench's way: fresh database, bench settings, pinned. */
export class SynapseProc extends SynapsePeer {
  pid = 0;
  private readonly root = process.env.PEERS_ROOT ?? "/var/tmp/matrix-peers/sid";
  private readonly work = process.env.PEERS_DIR ?? "/var/tmp/matrix-peers";

  override start(core = SERVER_CORE): void {
    peers(["stop", this.name], 120_000);
    const dir = join(this.root, "srv", this.name);
    for (const f of ["homeserver.db", "homeserver.db-wal", "homeserver.db-shm", "homeserver.log"]) rmSync(join(dir, f), { force: true });
    peers(["config", this.name, String(this.clientPort), String(this.federationPort)], 120_000);
    // Bench additions (keys not set by synapse-peers.sh): no presence EDUs, no per-room join limit.
    appendFileSync(
      join(dir, "homeserver.yaml"),
      [
        "# --- gatehouse bench additions ---",
        "presence: {enabled: false}",
        "rc_joins_per_room: {per_second: 100000, burst_count: 100000}",
        "rc_presence: {per_user: {per_second: 100000, burst_count: 100000}}",
        "rc_delayed_event_mgmt: {per_second: 100000, burst_count: 100000}",
        "",
      ].join("\n"),
    );
    peers(["start", this.name, String(this.clientPort)], 180_000);
    this.pid = Number(readFileSync(join(this.work, `${this.name}.pid`), "utf8").trim());
    pinPid(this.pid, core);
  }

  /** Stops the server, keeping its database (for a cold start with startAgain). */
  stopKeepingData(): void {
    peers(["stop", this.name], 120_000);
  }

  /** Starts the same server again on its database; returns once its client API answers. */
  startAgain(core = SERVER_CORE): void {
    peers(["start", this.name, String(this.clientPort)], 180_000);
    this.pid = Number(readFileSync(join(this.work, `${this.name}.pid`), "utf8").trim());
    pinPid(this.pid, core);
  }

  /**
   * Bytes its SQLite database holds: (page_count − freelist_count) × page_size, read by the host's
   * python3 through the WAL (a reader beside Synapse; no checkpoint), so the write-ahead log's
   * unmerged pages are counted once and free pages not at all.
   */
  databaseBytes(): number {
    const db = join(this.root, "srv", this.name, "homeserver.db");
    const py = "import sqlite3,sys;c=sqlite3.connect('file:'+sys.argv[1]+'?mode=ro',uri=True,timeout=30);q=lambda p:c.execute('PRAGMA '+p).fetchone()[0];print((q('page_count')-q('freelist_count'))*q('page_size'))";
    return Number(execFileSync("/usr/bin/python3", ["-c", py, db], { encoding: "utf8", timeout: 60_000 }).trim());
  }

  override stop(): void {
    try {
      super.stop();
    } catch {
      /* already stopped */
    }
  }

  client(token: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
    return jsonRequest(`${this.clientUrl}${path}`, method, token, body);
  }
}

export { freePort, net };
