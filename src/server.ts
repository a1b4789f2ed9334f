/**
 * Starting and stopping a Gatehouse process: keys, admin token, Redis (embedded when REDIS_URL
 * is unset), the federation (HTTPS), admin and probe listeners, and a graceful SIGTERM.
 */
import https from "node:https";
import http from "node:http";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import type { AddressInfo } from "node:net";
import { Cluster, Redis, type RedisOptions } from "ioredis";
import type { Config } from "./config.js";
import { createLogger, type Logger } from "./logger.js";
import { loadOrCreateSigningKeys, OwnKeys, parseOldVerifyKeys } from "./keys/own-keys.js";
import { startRedis, type EmbeddedRedis } from "./embedded-redis.js";
import { buildGatehouse, type Gatehouse } from "./app.js";
import { loadTls } from "./tls.js";
import { parseServerName } from "./protocol/ids.js";
import { Registry } from "prom-client";
import { Metrics } from "./metrics.js";
import { opsApp, type OpsState } from "./http/ops.js";
import { expressServerOptions } from "./http/express-server.js";
import { applyConnectionLimits, connectionServerOptions } from "./http/connections.js";
import { coalesceRedisWrites } from "./store/coalesced-writes.js";

export interface RunningGatehouse {
  gatehouse: Gatehouse;
  federationPort: number;
  adminPort: number;
  /** The client listener's port; null when no application service is registered. */
  clientPort: number | null;
  metricsPort: number | null;
  redisUrl: string;
  adminToken: string;
  stop(): Promise<void>;
}

/**
 * A Redis connection. `autoPipelining` sends every command issued in one event-loop turn in one
 * write (store/coalesced-writes.ts; it was ioredis's enableAutoPipelining, which costs more CPU
 * per command than it saves when a turn has one command, as each knock request's has): under
 * concurrent requests that halves the syscalls of Gatehouse and Redis (make_knock at 10
 * connections: 0.26 -> 0.23 ms CPU, Redis's share 0.049 -> 0.024 ms). It is used for the room
 * store and request handling only; BullMQ gets a connection without it (Bull users reported jobs
 * going missing from the active list with ioredis's auto-pipelining on).
 */
export function connectRedis(url: string, opts: { autoPipelining?: boolean; redisOptions?: RedisOptions } = {}): Redis {
  // BullMQ needs maxRetriesPerRequest: null on connections its workers use.
  const options: RedisOptions = { maxRetriesPerRequest: null, ...opts.redisOptions };
  const coalesced = (r: Redis): Redis => {
    if (opts.autoPipelining) coalesceRedisWrites(r);
    return r;
  };
  if (url.startsWith("unix://")) return coalesced(new Redis({ path: url.slice("unix://".length), ...options }));
  const cluster = parseClusterUrl(url);
  if (cluster) {
    // No auto-pipelining on a cluster: ioredis (5.x) picks a script call's slot from its first
    // argument, not its first key, and then refuses the batch ("All keys in the pipeline should
    // belong to the same slots allocation group", redis/ioredis#2109).
    const { enableAutoPipelining: _unused, ...redisOptions } = options;
    // Every Gatehouse script and multi-key command touches one slot (redis-keys.ts), so a Cluster
    // answers each of them; ioredis's Cluster has the command surface of Redis (the cast), and
    // BullMQ accepts it (its queue prefixes carry a hash tag, sender.ts).
    return new Cluster(cluster.nodes, {
      enableAutoPipelining: false,
      redisOptions: { ...redisOptions, ...(cluster.username ? { username: cluster.username } : {}), ...(cluster.password ? { password: cluster.password } : {}) },
      // Failover: retry a command refused while a replica is being promoted (CLUSTERDOWN / TRYAGAIN).
      retryDelayOnClusterDown: 200,
      retryDelayOnTryAgain: 100,
      retryDelayOnFailover: 200,
    }) as unknown as Redis;
  }
  return coalesced(new Redis(url, options));
}

/**
 * `redis-cluster://[user:password@]host:port,host:port,…`: the seed nodes of a Redis Cluster
 * (any of its nodes; ioredis learns the rest with CLUSTER SLOTS). Null for other URLs.
 */
export function parseClusterUrl(url: string): { nodes: { host: string; port: number }[]; username?: string; password?: string } | null {
  const m = /^redis-cluster:\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^/?#]+)\/?$/.exec(url);
  if (!m) return null;
  const nodes = m[3]!.split(",").map((hp) => {
    const at = hp.lastIndexOf(":");
    const host = hp.slice(0, at).replace(/^\[|\]$/g, "");
    const port = Number(hp.slice(at + 1));
    if (at <= 0 || !Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`redis-cluster URL: ${JSON.stringify(hp)} is not host:port`);
    return { host, port };
  });
  return {
    nodes,
    ...(m[1] ? { username: decodeURIComponent(m[1]) } : {}),
    ...(m[2] ? { password: decodeURIComponent(m[2]) } : {}),
  };
}

export function loadAdminToken(config: Config, logger: Logger): string {
  if (config.admin.token) return config.admin.token;
  if (existsSync(config.admin.tokenFile)) return readFileSync(config.admin.tokenFile, "utf8").trim();
  const token = randomBytes(24).toString("base64url");
  mkdirSync(config.dataDir, { recursive: true });
  writeFileSync(config.admin.tokenFile, token + "\n", { mode: 0o600 });
  logger.info({ file: config.admin.tokenFile }, "generated an admin token (set GATEHOUSE_ADMIN_TOKEN to choose one)");
  return token;
}

export function loadOwnKeys(config: Config, logger: Logger): OwnKeys {
  const { keys, created } = loadOrCreateSigningKeys(config.signingKeyFile);
  if (created) logger.info({ file: config.signingKeyFile, keyId: keys[0]!.keyId }, "generated a new signing key");
  const old = existsSync(config.oldSigningKeysFile) ? parseOldVerifyKeys(readFileSync(config.oldSigningKeysFile, "utf8")) : [];
  return new OwnKeys(config.serverName, keys, old, config.keyValidityMs);
}

function listen(server: http.Server | https.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function closeServer(server: http.Server | https.Server, deadlineMs: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.closeAllConnections();
      resolve();
    }, deadlineMs);
    server.close(() => {
      clearTimeout(timer);
      resolve();
    });
    server.closeIdleConnections();
  });
}

/** The /metrics and health listener, when GATEHOUSE_METRICS_LISTEN is not `off`. */
async function startOps(config: Config, metrics: Metrics, redis: Redis): Promise<{ server: http.Server; port: number; state: OpsState } | null> {
  if (!config.metrics) return null;
  const state: OpsState = { starting: true, shuttingDown: false };
  const app = opsApp(metrics.registry, redis, state);
  const server = http.createServer(expressServerOptions(app), app);
  const port = await listen(server, config.metrics.host, config.metrics.port);
  return { server, port, state };
}

export async function startGatehouse(config: Config, logger: Logger = createLogger(config.logLevel)): Promise<RunningGatehouse> {
  mkdirSync(config.dataDir, { recursive: true });
  const ownKeys = loadOwnKeys(config, logger);
  const adminToken = loadAdminToken(config, logger);

  let embedded: EmbeddedRedis | null = null;
  let redisUrl = config.redisUrl;
  if (!redisUrl) {
    embedded = await startRedis({ dir: join(config.dataDir, "redis"), persistent: true, appendfsync: config.redisAppendfsync });
    redisUrl = embedded.url;
    logger.info({ url: redisUrl, dir: join(config.dataDir, "redis"), boundToParent: embedded.boundToParent }, "started embedded redis-server (set REDIS_URL to use your own)");
    if (!embedded.boundToParent) logger.warn("setpriv (util-linux) not found: a kill -9 of this process would leave the embedded redis-server running");
  }
  // Everything started from here on is undone when a later step fails (a port in use, Redis
  // unreachable): a failed start leaves no embedded redis-server, connection or listener behind.
  const started: (() => Promise<void>)[] = [];
  if (embedded) started.push(() => embedded.stop());
  const redis = connectRedis(redisUrl, { autoPipelining: true });
  const queueRedis = connectRedis(redisUrl);
  started.push(async () => {
    redis.disconnect();
    queueRedis.disconnect();
  });
  for (const r of [redis, queueRedis]) r.on("error", (err) => logger.warn({ err: err.message }, "redis connection error"));
  const undoAndThrow = async (e: unknown): Promise<never> => {
    for (const undo of started.reverse()) await undo().catch(() => undefined);
    throw e;
  };

  let gatehouse: Gatehouse;
  let ops: Awaited<ReturnType<typeof startOps>>;
  let federationServer: http.Server | https.Server;
  let adminServer: http.Server;
  let clientServer: http.Server | null;
  let federationPort: number;
  let adminPort: number;
  let clientPort: number | null;
  try {
    await Promise.all([redis.ping(), queueRedis.ping()]);
    if (!embedded) await checkExternalRedisDurability(redis, logger);
    const metrics = new Metrics(new Registry());
    gatehouse = buildGatehouse({ config, logger, redis, queueRedis, ownKeys, adminToken, metrics });
    const built = gatehouse;
    started.push(() => built.close());
    // Users the admin API acted for before the local-users set existed (once per Redis).
    await gatehouse.localUsers.migrate();
    ops = await startOps(config, metrics, redis);
    const opsServer = ops?.server;
    if (opsServer) started.push(() => closeServer(opsServer, 0));

    if (config.tls) {
      const host = parseServerName(config.serverName)?.host.replace(/^\[|\]$/g, "") ?? "localhost";
      const tls = await loadTls(config.tls, host);
      if (tls.generated) logger.warn({ cert: config.tls.certFile }, "generated a self-signed TLS certificate (development only)");
      federationServer = https.createServer(
        { cert: tls.cert, key: tls.key, ...connectionServerOptions(config.connections), ...expressServerOptions(gatehouse.federationApp) },
        gatehouse.federationApp,
      );
    } else {
      federationServer = http.createServer({ ...connectionServerOptions(config.connections), ...expressServerOptions(gatehouse.federationApp) }, gatehouse.federationApp);
    }
    applyConnectionLimits(federationServer, config.connections);
    adminServer = http.createServer(expressServerOptions(gatehouse.adminApp), gatehouse.adminApp);
    // The client API serves application services only: no registration, no listener.
    clientServer = config.appservices.length > 0 ? http.createServer(expressServerOptions(gatehouse.clientApp), gatehouse.clientApp) : null;

    federationPort = await listen(federationServer, config.federation.host, config.federation.port);
    const fed = federationServer;
    started.push(() => closeServer(fed, 0));
    adminPort = await listen(adminServer, config.admin.host, config.admin.port);
    const adm = adminServer;
    started.push(() => closeServer(adm, 0));
    clientPort = clientServer ? await listen(clientServer, config.client.host, config.client.port) : null;
    const cli = clientServer;
    if (cli) started.push(() => closeServer(cli, 0));
    // Without workers here, still look once for queued work that a killed process left without a
    // job (the workers elsewhere only sweep every GATEHOUSE_SENDER_SWEEP_INTERVAL_MS).
    // Resyncs of rooms joined with partial state that a restart interrupted (rooms/partial-state.ts).
    await gatehouse.partialState.resume().catch((err: Error) => logger.warn({ err: err.message }, "could not resume partial-state resyncs"));
    if (config.runWorkers) await gatehouse.sender.startWorkers("serve");
    else await gatehouse.sender.recoverySweep().catch((err: Error) => logger.warn({ err: err.message }, "sender sweep failed"));
  } catch (e) {
    return undoAndThrow(e);
  }
  if (ops) ops.state.starting = false;
  logger.info(
    { serverName: config.serverName, federation: `${config.tls ? "https" : "http"}://${config.federation.host}:${federationPort}`, admin: `http://${config.admin.host}:${adminPort}`, ...(clientPort !== null ? { client: `http://${config.client.host}:${clientPort}`, appservices: config.appservices.map((r) => r.id) } : {}), keyId: ownKeys.current.keyId },
    "gatehouse is listening",
  );

  let stopped = false;
  return {
    gatehouse,
    federationPort,
    adminPort,
    clientPort,
    metricsPort: ops?.port ?? null,
    redisUrl,
    adminToken,
    async stop() {
      if (stopped) return;
      stopped = true;
      // Readiness fails first, so a load balancer stops sending traffic while requests finish.
      if (ops) ops.state.shuttingDown = true;
      // Requests finish within the deadline; meanwhile and then the sender keeps sending, so that
      // what was acknowledged before the signal is delivered before the process exits (when
      // the destinations answer) rather than after the next process starts. Its in-flight
      // transactions then finish within what is left of the same deadline.
      const deadline = Date.now() + config.shutdownTimeoutMs;
      await Promise.all([
        closeServer(federationServer, config.shutdownTimeoutMs),
        closeServer(adminServer, config.shutdownTimeoutMs),
        ...(clientServer ? [closeServer(clientServer, config.shutdownTimeoutMs)] : []),
      ]);
      if (config.runWorkers) await gatehouse.sender.drain(deadline - Date.now());
      await gatehouse.sender.close(Math.max(0, deadline - Date.now()));
      await gatehouse.close();
      if (ops) await closeServer(ops.server, 1000);
      await Promise.all([redis.quit().catch(() => undefined), queueRedis.quit().catch(() => undefined)]);
      if (embedded) await embedded.stop();
      logger.info("gatehouse stopped");
    },
  };
}

/**
 * Warns when an external Redis would lose acknowledged writes on a restart: no append-only file,
 * or one never fsynced (README, "Durability"). Managed Redis services often refuse CONFIG; then
 * nothing is said.
 */
export async function checkExternalRedisDurability(redis: Redis, logger: Logger): Promise<{ appendonly: string; appendfsync: string } | null> {
  let settings: { appendonly: string; appendfsync: string };
  try {
    const flat = (await redis.call("CONFIG", "GET", "append*")) as string[];
    const m = new Map<string, string>();
    for (let i = 0; i + 1 < flat.length; i += 2) m.set(flat[i]!, flat[i + 1]!);
    settings = { appendonly: m.get("appendonly") ?? "", appendfsync: m.get("appendfsync") ?? "" };
  } catch (err) {
    logger.debug({ err: (err as Error).message }, "could not read the Redis persistence settings (CONFIG refused)");
    return null;
  }
  if (settings.appendonly !== "yes") {
    logger.warn(settings, "Redis runs without the append-only file: a Redis restart loses queued events and everything acknowledged since the last snapshot (set appendonly yes)");
  } else if (settings.appendfsync === "no") {
    logger.warn(settings, "Redis's append-only file is never fsynced by Redis (appendfsync no): a power cut can lose ~30 s of acknowledged writes (set appendfsync everysec or always)");
  }
  return settings;
}

export interface RunningWorker {
  gatehouse: Gatehouse;
  stop(): Promise<void>;
}

/**
 * `gatehouse worker`: only the outbound sender workers, on the shared Redis (REDIS_URL is
 * required: an embedded Redis would be a different queue). No listeners.
 */
export async function startWorker(config: Config, logger: Logger = createLogger(config.logLevel)): Promise<RunningWorker> {
  if (!config.redisUrl) throw new Error("gatehouse worker needs REDIS_URL (the Redis that `gatehouse serve` uses)");
  const ownKeys = loadOwnKeys(config, logger);
  const redis = connectRedis(config.redisUrl);
  redis.on("error", (err) => logger.warn({ err: err.message }, "redis connection error"));
  // As serve does: what was started is undone when a later step fails (the metrics port in use,
  // the workers not starting), so a failed start leaves no connection, worker or listener behind.
  const started: (() => Promise<void>)[] = [async () => redis.disconnect()];
  let gatehouse: Gatehouse;
  let ops: Awaited<ReturnType<typeof startOps>>;
  try {
    await redis.ping();
    await checkExternalRedisDurability(redis, logger);
    // The admin token is unused here (no admin listener).
    const metrics = new Metrics(new Registry());
    gatehouse = buildGatehouse({ config, logger, redis, ownKeys, adminToken: randomBytes(24).toString("base64url"), metrics });
    const built = gatehouse;
    started.push(() => built.close());
    ops = await startOps(config, metrics, redis);
    const opsServer = ops?.server;
    if (opsServer) started.push(() => closeServer(opsServer, 0));
    await gatehouse.sender.startWorkers("worker");
  } catch (e) {
    for (const undo of started.reverse()) await undo().catch(() => undefined);
    throw e;
  }
  if (ops) ops.state.starting = false;
  logger.info({ serverName: config.serverName, concurrency: config.sender.concurrency }, "gatehouse sender worker running");
  let stopped = false;
  return {
    gatehouse,
    async stop() {
      if (stopped) return;
      stopped = true;
      if (ops) ops.state.shuttingDown = true;
      await gatehouse.close();
      if (ops) await closeServer(ops.server, 1000);
      await redis.quit().catch(() => undefined);
      logger.info("gatehouse worker stopped");
    },
  };
}
