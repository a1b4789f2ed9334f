/**
 * A real Redis Cluster on loopback for the tests, the benchmarks and local trials: six
 * redis-server processes (three primaries, three replicas) on ephemeral ports, joined by
 * `redis-cli --cluster create … --cluster-replicas 1 --cluster-yes`. Its URL is a
 * `redis-cluster://127.0.0.1:p1,127.0.0.1:p2,…` seed list, which connectRedis (server.ts) turns
 * into an ioredis Cluster. Not for production: run a managed cluster or an operator's (see the
 * README, "Redis Cluster").
 */
import { spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import net from "node:net";
import { Redis } from "ioredis";
import { freePort, startRedis, type EmbeddedRedis } from "./embedded-redis.js";

export interface EmbeddedRedisCluster {
  /** `redis-cluster://127.0.0.1:p1,…`: every node as a seed. */
  url: string;
  nodes: EmbeddedRedis[];
  /** INFO/CLUSTER commands against one node (by port), answered as text. */
  command(port: number, ...args: string[]): Promise<string>;
  /** Waits until every live node reports cluster_state:ok, each slot has a live primary, and every live replica's link to its primary is up. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** Whether 127.0.0.1:port can be listened on now. */
function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

/** One command on a fresh connection to 127.0.0.1:port, its reply as text (arrays joined by newlines). */
export async function rawCommand(port: number, args: readonly string[], timeoutMs = 2_000): Promise<string> {
  const conn = new Redis({ host: "127.0.0.1", port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: timeoutMs, commandTimeout: timeoutMs });
  conn.on("error", () => {});
  try {
    await conn.connect();
    const reply = await conn.call(args[0]!, ...args.slice(1));
    return Array.isArray(reply) ? reply.map(String).join("\n") : String(reply);
  } finally {
    conn.disconnect();
  }
}

/**
 * Starts the six nodes under `dir` (no persistence: tests; node timeout 1 s so that a killed
 * primary's replica is promoted within a few seconds) and creates the cluster.
 */
export async function startRedisCluster(opts: { dir: string; nodeTimeoutMs?: number }): Promise<EmbeddedRedisCluster> {
  let bindRetries = 0;
  const ports: number[] = [];
  const nodes: EmbeddedRedis[] = [];
  const stop = async () => {
    await Promise.all(nodes.map((n) => n.stop()));
  };
  try {
    while (nodes.length < 6) {
      const port = await freePort();
      // The cluster bus listens on port + 10000: both must be free and below 65536. Another
      // process may take either between this check and the start: then try other ports.
      if (port + 10_000 >= 65_536 || ports.includes(port) || !(await canListen(port + 10_000))) continue;
      const dir = join(opts.dir, String(port));
      mkdirSync(dir, { recursive: true });
      try {
        nodes.push(
          await startRedis({
            dir,
            port,
            extraArgs: ["--cluster-enabled", "yes", "--cluster-config-file", join(dir, "nodes.conf"), "--cluster-node-timeout", String(opts.nodeTimeoutMs ?? 1_000)],
          }),
        );
        ports.push(port);
      } catch (err) {
        if (!/Address already in use/.test((err as Error).message) || ++bindRetries > 10) throw err;
      }
    }
    const created = spawnSync("redis-cli", ["--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-replicas", "1", "--cluster-yes"], {
      encoding: "utf8",
      timeout: 60_000,
    });
    if (created.status !== 0) throw new Error(`redis-cli --cluster create failed: ${created.stdout}\n${created.stderr}`);
  } catch (err) {
    await stop();
    throw err;
  }
  const command = (port: number, ...args: string[]) => rawCommand(port, args);
  const waitHealthy = async (timeoutMs = 30_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const live = nodes.filter((n) => n.child.exitCode === null && n.child.signalCode === null);
      const states = await Promise.all(live.map((n) => command(n.port, "CLUSTER", "INFO").catch(() => "")));
      // Replicas must have synced too: one whose link never came up cannot take over (it has no data).
      const repl = await Promise.all(live.map((n) => command(n.port, "INFO", "replication").catch(() => "")));
      const synced = repl.every((r) => !/role:slave/.test(r) || /master_link_status:up/.test(r));
      if (synced && states.every((s) => /cluster_state:ok/.test(s) && /cluster_slots_ok:16384/.test(s))) return;
      if (Date.now() > deadline) throw new Error(`cluster not healthy within ${timeoutMs} ms: ${states.map((s) => s.split("\n")[0]).join(" | ")}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  try {
    await waitHealthy();
  } catch (err) {
    await stop();
    throw err;
  }
  return { url: `redis-cluster://${ports.map((p) => `127.0.0.1:${p}`).join(",")}`, nodes, command, waitHealthy, stop };
}
