/**
 * The one place settings are read. `loadConfig(env)` validates every variable and fails fast
 * with an error naming the bad key; nothing else in the service reads process.env.
 * Every setting is documented in README.md ("Settings").
 */
import { DEFAULT_CACHE_MAX_BYTES } from "./store/byte-lru.js";
import { readFileSync } from "node:fs";
import { resolve, join } from "node:path";
import { hostname } from "node:os";
import { parseServerName } from "./protocol/ids.js";
import { parseCidr } from "./net/ip-ranges.js";
import { DEFAULT_SENDER_SETTINGS as SENDER, DEFAULT_SHUTDOWN_TIMEOUT_MS, type SenderSettings } from "./sender/settings.js";
import { APPENDFSYNC_POLICIES, type AppendFsync } from "./embedded-redis.js";
import { loadRegistrations, RegistrationError, type AppserviceRegistration } from "./appservice/registration.js";

export interface Config {
  serverName: string;
  dataDir: string;
  /** `m.server` of /.well-known/matrix/server on the federation listener; null: not served. */
  wellKnownServer: string | null;
  /** Federation listener (HTTPS unless tls is null). */
  federation: { host: string; port: number };
  /** TLS for the federation listener; null = plain HTTP behind a TLS-terminating proxy. */
  tls: { certFile: string; keyFile: string; generateIfMissing: boolean } | null;
  /** Client-Server API listener for application services (plain HTTP). */
  client: { host: string; port: number };
  /** Application services registered from GATEHOUSE_APPSERVICE_REGISTRATION_FILES. */
  appservices: AppserviceRegistration[];
  /** Also send the hs_token as `access_token` in the query of pushes (older AS API versions; Synapse's use_appservice_legacy_authorization). */
  appserviceLegacyAuthorization: boolean;
  /** Admin API listener (plain HTTP; keep it on loopback or a pod-internal address). */
  admin: { host: string; port: number; token: string | null; tokenFile: string };
  /** Prometheus /metrics and health probes listener; null disables it. */
  metrics: { host: string; port: number } | null;
  signingKeyFile: string;
  /** Retired keys, `ed25519 <version> <public key base64> <expired_ts>` per line; read when it exists. */
  oldSigningKeysFile: string;
  /** null = start an embedded redis-server child process with its data under dataDir/redis. */
  redisUrl: string | null;
  /** WAIT for this many replicas (0: off) up to timeoutMs before acknowledging an event (store/replica-wait.ts). */
  redisWait: { replicas: number; timeoutMs: number };
  /** The embedded Redis's `appendfsync` policy (GATEHOUSE_REDIS_APPENDFSYNC). */
  redisAppendfsync: AppendFsync;
  logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
  /** How long our key document says it is valid (ms). */
  keyValidityMs: number;
  outbound: {
    /** Accept self-signed certificates of peers. Development only. */
    insecureSkipTlsVerify: boolean;
    /** Allow outbound requests to loopback / private address ranges. */
    allowPrivateAddresses: boolean;
    /** CIDRs outbound federation may reach although in a private/reserved range. */
    ipRangeAllowlist: string[];
    /** PEM bundle of extra CAs trusted for peers (added to Node's roots); null: none. */
    caFile: string | null;
    /** Largest answer body read from another server (GATEHOUSE_FEDERATION_MAX_RESPONSE_BYTES); key fetches have their own. */
    maxResponseBytes: number;
    requestTimeoutMs: number;
  };
  /** Trusted notary servers for key lookups when the origin cannot be reached. */
  trustedKeyServers: string[];
  /** Timeouts and caps of the federation listener's connections (src/http/connections.ts). */
  connections: { headersTimeoutMs: number; idleTimeoutMs: number; requestTimeoutMs: number; maxConnections: number; maxConnectionsPerIp: number };
  /** Bounds of one remote key fetch (a server's key document or a notary query). */
  keyFetch: { timeoutMs: number; maxBytes: number };
  /** Which ed25519 implementation verifies remote signatures (src/keys/sodium-ed25519.ts). */
  ed25519Backend: "node" | "sodium-native";
  /** Largest request body accepted (bytes). */
  maxRequestBytes: number;
  /** Bytes the in-process caches may hold together (src/store/byte-lru.ts, CACHE_SHARES); GATEHOUSE_CACHE_MAX_BYTES. */
  cacheMaxBytes: number;
  /** Forward extremities a hosted room may have before a dummy event merges them (0: never). */
  maxForwardExtremities: number;
  /**
   * GATEHOUSE_ROOM_WRITE_LEASE_MS: how long one replica may plan a hosted room's run of events
   * while the others wait for it (0: no lease, replicas plan at once and the loser plans again).
   */
  roomWriteLeaseMs: number;
  /** Events one state fallback at a gap may fetch (/state_ids, then /event or /state; rooms/gap-state.ts); GATEHOUSE_GAP_STATE_MAX_EVENTS. */
  gapStateMaxEvents: number;
  /** Ask for partial state (omit_members) when joining a room hosted elsewhere (rooms/partial-state.ts); GATEHOUSE_PARTIAL_STATE_JOINS. */
  partialStateJoins: boolean;
  /** Run the outbound sender worker inside the serve process. */
  runWorkers: boolean;
  /**
   * This process's identity across restarts (GATEHOUSE_INSTANCE_ID; default host name + data
   * folder, which a pod's restarted container keeps): the sender takes back at once the jobs a
   * dead previous process with the same identity still holds.
   */
  instanceId: string;
  /** The outbound transaction sender (src/sender/): see SenderSettings. */
  sender: SenderSettings;
  shutdownTimeoutMs: number;
  /** Token buckets in Redis (0 disables a limit). */
  rateLimits: {
    originPerSecond: number;
    originBurst: number;
    knocksPerRoomPerSecond: number;
    knocksPerRoomBurst: number;
    /** Client API requests per masqueraded user, for application services with rate_limited: true. */
    clientPerSecond: number;
    clientBurst: number;
  };
}

const DEFAULT_METRICS_LISTEN = "127.0.0.1:9464";

export class ConfigError extends Error {
  constructor(
    readonly key: string,
    message: string,
  ) {
    super(`${key}: ${message}`);
    this.name = "ConfigError";
  }
}

type Env = Record<string, string | undefined>;

function str(env: Env, key: string, fallback: string): string {
  const v = env[key];
  return v === undefined || v === "" ? fallback : v;
}

function optional(env: Env, key: string): string | null {
  const v = env[key];
  return v === undefined || v === "" ? null : v;
}

/**
 * A secret setting: the value of `key`, or the contents of the file named by `${key}_FILE`
 * (a mounted Kubernetes/Docker secret; one trailing newline removed). Setting both is an error,
 * as is a file that cannot be read or is empty. Any secret setting (e.g. application service
 * tokens) should be read through this, so every one of them has its `_FILE` form.
 */
export function secretSetting(env: Env, key: string, cwd: string = process.cwd()): string | null {
  const direct = optional(env, key);
  const file = optional(env, `${key}_FILE`);
  if (file === null) return direct;
  if (direct !== null) throw new ConfigError(`${key}_FILE`, `set either ${key} or ${key}_FILE, not both`);
  let text: string;
  try {
    text = readFileSync(resolve(cwd, file), "utf8");
  } catch (e) {
    throw new ConfigError(`${key}_FILE`, `cannot read ${JSON.stringify(file)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const value = text.replace(/\r?\n$/, "");
  if (value === "") throw new ConfigError(`${key}_FILE`, `${JSON.stringify(file)} is empty`);
  return value;
}

/** REDIS_URL (or REDIS_URL_FILE), with REDIS_PASSWORD (or REDIS_PASSWORD_FILE) put into it. */
function redisSetting(env: Env, cwd: string): string | null {
  const url = secretSetting(env, "REDIS_URL", cwd);
  if (url && !/^(rediss?|unix|redis-cluster):\/\//.test(url)) throw new ConfigError("REDIS_URL", `expected redis://, rediss://, unix:// or redis-cluster:// URL`);
  if (url?.startsWith("redis-cluster://") && !/^redis-cluster:\/\/(?:[^@/]*@)?(?:(?:\[[0-9a-fA-F:.]+\]|[^:,@/\[\]]+):\d{1,5})(?:,(?:\[[0-9a-fA-F:.]+\]|[^:,@/\[\]]+):\d{1,5})*\/?$/.test(url)) {
    throw new ConfigError("REDIS_URL", "expected redis-cluster://[user:password@]host:port,host:port,… (the cluster's seed nodes)");
  }
  const password = secretSetting(env, "REDIS_PASSWORD", cwd);
  if (password === null) return url;
  if (!url) throw new ConfigError("REDIS_PASSWORD", "needs REDIS_URL (the embedded Redis has no password)");
  if (url.startsWith("redis-cluster://")) {
    const user = /^redis-cluster:\/\/([^@/]*)@/.exec(url)?.[1];
    if (user?.includes(":")) throw new ConfigError("REDIS_PASSWORD", "REDIS_URL already has a password");
    const nodes = user === undefined ? url.slice("redis-cluster://".length) : url.slice("redis-cluster://".length + user.length + 1);
    return `redis-cluster://${user ?? ""}:${encodeURIComponent(password)}@${nodes}`;
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigError("REDIS_URL", "not a valid URL");
  }
  if (parsed.protocol === "unix:") throw new ConfigError("REDIS_PASSWORD", "is for redis:// and rediss:// URLs; put ?password=… in a unix:// URL");
  if (parsed.password) throw new ConfigError("REDIS_PASSWORD", "REDIS_URL already has a password");
  parsed.password = password;
  return parsed.toString();
}

function int(env: Env, key: string, fallback: number, min: number, max: number): number {
  const raw = env[key];
  if (raw === undefined || raw === "") return fallback;
  if (!/^-?\d+$/.test(raw.trim())) throw new ConfigError(key, `expected an integer, got ${JSON.stringify(raw)}`);
  const n = Number(raw);
  if (n < min || n > max) throw new ConfigError(key, `must be between ${min} and ${max}, got ${n}`);
  return n;
}

function bool(env: Env, key: string, fallback: boolean): boolean {
  const raw = env[key];
  if (raw === undefined || raw === "") return fallback;
  const v = raw.trim().toLowerCase();
  if (["1", "true", "yes", "on"].includes(v)) return true;
  if (["0", "false", "no", "off"].includes(v)) return false;
  throw new ConfigError(key, `expected true or false, got ${JSON.stringify(raw)}`);
}

function oneOf<T extends string>(env: Env, key: string, fallback: T, allowed: readonly T[]): T {
  const v = str(env, key, fallback);
  if (!(allowed as readonly string[]).includes(v)) throw new ConfigError(key, `must be one of ${allowed.join(", ")}, got ${JSON.stringify(v)}`);
  return v as T;
}

function hostPort(env: Env, key: string, fallback: string): { host: string; port: number } {
  const raw = str(env, key, fallback);
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:]+):(\d{1,5})$/.exec(raw);
  if (!m) throw new ConfigError(key, `expected host:port, got ${JSON.stringify(raw)}`);
  const port = Number(m[2]);
  if (port > 65535) throw new ConfigError(key, `port out of range in ${JSON.stringify(raw)}`);
  return { host: m[1]!.replace(/^\[|\]$/g, ""), port };
}

function cidrList(env: Env, key: string): string[] {
  const raw = env[key]?.trim() ?? "";
  if (!raw) return [];
  return raw.split(",").map((c) => {
    if (!parseCidr(c)) throw new ConfigError(key, `not an IP range (CIDR) or address: ${JSON.stringify(c.trim())}`);
    return c.trim();
  });
}

export function loadConfig(env: Env = process.env, cwd: string = process.cwd()): Config {
  const dataDir = resolve(cwd, str(env, "GATEHOUSE_DATA_DIR", "data"));
  const federation = hostPort(env, "GATEHOUSE_FEDERATION_LISTEN", "127.0.0.1:8448");
  const serverName = str(env, "GATEHOUSE_SERVER_NAME", `${federation.host === "0.0.0.0" ? "127.0.0.1" : federation.host}:${federation.port}`);
  if (!parseServerName(serverName)) throw new ConfigError("GATEHOUSE_SERVER_NAME", `not a valid Matrix server name: ${JSON.stringify(serverName)}`);

  const wellKnownServer = optional(env, "GATEHOUSE_WELL_KNOWN_SERVER");
  if (wellKnownServer !== null && !parseServerName(wellKnownServer))
    throw new ConfigError("GATEHOUSE_WELL_KNOWN_SERVER", `expected host or host:port (a server name), got ${JSON.stringify(wellKnownServer)}`);

  const tlsMode = oneOf(env, "GATEHOUSE_TLS", "auto", ["auto", "files", "off"] as const);
  const certFile = resolve(dataDir, str(env, "GATEHOUSE_TLS_CERT", "tls.crt"));
  const keyFile = resolve(dataDir, str(env, "GATEHOUSE_TLS_KEY", "tls.key"));
  const tls = tlsMode === "off" ? null : { certFile, keyFile, generateIfMissing: tlsMode === "auto" };

  const metricsListen = str(env, "GATEHOUSE_METRICS_LISTEN", DEFAULT_METRICS_LISTEN);
  const redisUrl = redisSetting(env, cwd);

  const adminToken = secretSetting(env, "GATEHOUSE_ADMIN_TOKEN", cwd);
  if (adminToken !== null && adminToken.length < 16) throw new ConfigError("GATEHOUSE_ADMIN_TOKEN", "must be at least 16 characters");

  const trusted = str(env, "GATEHOUSE_TRUSTED_KEY_SERVERS", "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  for (const t of trusted) {
    if (!parseServerName(t)) throw new ConfigError("GATEHOUSE_TRUSTED_KEY_SERVERS", `not a server name: ${JSON.stringify(t)}`);
  }

  const backoffInitialMs = int(env, "GATEHOUSE_SENDER_BACKOFF_INITIAL_MS", SENDER.backoffInitialMs, 10, 3_600_000);
  const backoffMaxMs = int(env, "GATEHOUSE_SENDER_BACKOFF_MAX_MS", SENDER.backoffMaxMs, 10, 7 * 86_400_000);
  if (backoffMaxMs < backoffInitialMs)
    throw new ConfigError("GATEHOUSE_SENDER_BACKOFF_MAX_MS", `must be at least GATEHOUSE_SENDER_BACKOFF_INITIAL_MS (${backoffInitialMs})`);
  const sweepIntervalMs = int(env, "GATEHOUSE_SENDER_SWEEP_INTERVAL_MS", SENDER.sweepIntervalMs, 0, 86_400_000);
  if (sweepIntervalMs > 0 && sweepIntervalMs < 1000) throw new ConfigError("GATEHOUSE_SENDER_SWEEP_INTERVAL_MS", "must be 0 (off) or at least 1000");

  const registrationFiles = str(env, "GATEHOUSE_APPSERVICE_REGISTRATION_FILES", "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((f) => resolve(dataDir, f));
  let appservices: AppserviceRegistration[];
  try {
    appservices = loadRegistrations(registrationFiles, serverName, adminToken);
  } catch (err) {
    if (err instanceof RegistrationError) throw new ConfigError("GATEHOUSE_APPSERVICE_REGISTRATION_FILES", err.message);
    throw err;
  }
  const headersTimeoutMs = int(env, "GATEHOUSE_HEADERS_TIMEOUT_MS", 30_000, 1000, 600_000);
  const requestTimeoutMs = int(env, "GATEHOUSE_REQUEST_TIMEOUT_MS", 60_000, 1000, 3_600_000);
  if (requestTimeoutMs < headersTimeoutMs)
    throw new ConfigError("GATEHOUSE_REQUEST_TIMEOUT_MS", `must be at least GATEHOUSE_HEADERS_TIMEOUT_MS (${headersTimeoutMs})`);

  return {
    serverName,
    dataDir,
    wellKnownServer,
    federation,
    tls,
    client: hostPort(env, "GATEHOUSE_CLIENT_LISTEN", "127.0.0.1:8008"),
    appservices,
    appserviceLegacyAuthorization: bool(env, "GATEHOUSE_APPSERVICE_LEGACY_AUTHORIZATION", false),
    admin: {
      ...hostPort(env, "GATEHOUSE_ADMIN_LISTEN", "127.0.0.1:8009"),
      token: adminToken,
      tokenFile: join(dataDir, "admin.token"),
    },
    metrics: metricsListen === "off" ? null : hostPort(env, "GATEHOUSE_METRICS_LISTEN", DEFAULT_METRICS_LISTEN),
    signingKeyFile: resolve(dataDir, str(env, "GATEHOUSE_SIGNING_KEY_FILE", "signing.key")),
    oldSigningKeysFile: resolve(dataDir, str(env, "GATEHOUSE_OLD_SIGNING_KEYS_FILE", "old_signing.keys")),
    redisUrl,
    redisAppendfsync: oneOf(env, "GATEHOUSE_REDIS_APPENDFSYNC", "everysec", APPENDFSYNC_POLICIES),
    redisWait: {
      replicas: int(env, "GATEHOUSE_REDIS_WAIT_REPLICAS", 0, 0, 16),
      timeoutMs: int(env, "GATEHOUSE_REDIS_WAIT_TIMEOUT_MS", 1000, 1, 60_000),
    },
    logLevel: oneOf(env, "GATEHOUSE_LOG_LEVEL", "info", ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const),
    keyValidityMs: int(env, "GATEHOUSE_KEY_VALIDITY_HOURS", 24, 1, 24 * 7) * 3600_000,
    outbound: {
      insecureSkipTlsVerify: bool(env, "GATEHOUSE_FEDERATION_INSECURE_SKIP_TLS_VERIFY", false),
      allowPrivateAddresses: bool(env, "GATEHOUSE_FEDERATION_ALLOW_PRIVATE_ADDRESSES", false),
      ipRangeAllowlist: cidrList(env, "GATEHOUSE_FEDERATION_IP_RANGE_ALLOWLIST"),
      caFile: env.GATEHOUSE_FEDERATION_CA_FILE?.trim() ? resolve(dataDir, env.GATEHOUSE_FEDERATION_CA_FILE.trim()) : null,
      requestTimeoutMs: int(env, "GATEHOUSE_FEDERATION_TIMEOUT_MS", 30_000, 100, 600_000),
      maxResponseBytes: int(env, "GATEHOUSE_FEDERATION_MAX_RESPONSE_BYTES", 64 * 1_048_576, 65_536, 512 * 1_048_576),
    },
    trustedKeyServers: trusted,
    connections: {
      headersTimeoutMs,
      idleTimeoutMs: int(env, "GATEHOUSE_IDLE_TIMEOUT_MS", 60_000, 1000, 3_600_000),
      requestTimeoutMs,
      maxConnections: int(env, "GATEHOUSE_MAX_CONNECTIONS", 4096, 0, 1_000_000),
      maxConnectionsPerIp: int(env, "GATEHOUSE_MAX_CONNECTIONS_PER_IP", 128, 0, 1_000_000),
    },
    keyFetch: {
      timeoutMs: int(env, "GATEHOUSE_KEY_FETCH_TIMEOUT_MS", 10_000, 100, 120_000),
      maxBytes: int(env, "GATEHOUSE_KEY_FETCH_MAX_BYTES", 1_048_576, 4096, 64 * 1_048_576),
    },
    ed25519Backend: oneOf(env, "GATEHOUSE_ED25519_BACKEND", "node", ["node", "sodium-native"] as const),
    maxRequestBytes: int(env, "GATEHOUSE_MAX_REQUEST_BYTES", 1_048_576, 65_536, 100 * 1_048_576),
    cacheMaxBytes: int(env, "GATEHOUSE_CACHE_MAX_BYTES", DEFAULT_CACHE_MAX_BYTES, 1_048_576, 16 * 1_073_741_824),
    maxForwardExtremities: int(env, "GATEHOUSE_MAX_FORWARD_EXTREMITIES", 10, 0, 1000),
    roomWriteLeaseMs: int(env, "GATEHOUSE_ROOM_WRITE_LEASE_MS", 1000, 0, 60_000),
    gapStateMaxEvents: int(env, "GATEHOUSE_GAP_STATE_MAX_EVENTS", 5000, 0, 1_000_000),
    partialStateJoins: bool(env, "GATEHOUSE_PARTIAL_STATE_JOINS", true),
    runWorkers: bool(env, "GATEHOUSE_RUN_WORKERS", true),
    instanceId: instanceIdOf(env, dataDir),
    sender: {
      concurrency: int(env, "GATEHOUSE_SENDER_CONCURRENCY", SENDER.concurrency, 1, 1000),
      backoffInitialMs,
      backoffMaxMs,
      maxRejectedAttempts: int(env, "GATEHOUSE_SENDER_MAX_REJECTED_ATTEMPTS", SENDER.maxRejectedAttempts, 1, 1000),
      backoffOutagePercent: int(env, "GATEHOUSE_SENDER_BACKOFF_OUTAGE_PERCENT", SENDER.backoffOutagePercent, 0, 100),
      lockDurationMs: int(env, "GATEHOUSE_SENDER_LOCK_MS", SENDER.lockDurationMs, 1000, 600_000),
      sweepIntervalMs,
      shards: int(env, "GATEHOUSE_SENDER_SHARDS", SENDER.shards, 1, 256),
      lingerMs: int(env, "GATEHOUSE_SENDER_LINGER_MS", SENDER.lingerMs, 0, 1000),
    },
    shutdownTimeoutMs: int(env, "GATEHOUSE_SHUTDOWN_TIMEOUT_MS", DEFAULT_SHUTDOWN_TIMEOUT_MS, 0, 600_000),
    rateLimits: {
      originPerSecond: int(env, "GATEHOUSE_RATELIMIT_ORIGIN_PER_SECOND", 100, 0, 1_000_000),
      originBurst: int(env, "GATEHOUSE_RATELIMIT_ORIGIN_BURST", 500, 1, 10_000_000),
      knocksPerRoomPerSecond: int(env, "GATEHOUSE_RATELIMIT_KNOCKS_PER_ROOM_PER_SECOND", 20, 0, 1_000_000),
      knocksPerRoomBurst: int(env, "GATEHOUSE_RATELIMIT_KNOCKS_PER_ROOM_BURST", 200, 1, 10_000_000),
      clientPerSecond: int(env, "GATEHOUSE_RATELIMIT_CLIENT_PER_SECOND", 10, 0, 1_000_000),
      clientBurst: int(env, "GATEHOUSE_RATELIMIT_CLIENT_BURST", 50, 1, 10_000_000),
    },
  };
}

function instanceIdOf(env: Env, dataDir: string): string {
  const v = env.GATEHOUSE_INSTANCE_ID;
  if (v === undefined || v === "") return `${hostname()}:${dataDir}`;
  if (v.length > 200 || !/^[\x21-\x7e]+$/.test(v)) throw new ConfigError("GATEHOUSE_INSTANCE_ID", "must be 1-200 printable ASCII characters without spaces");
  return v;
}
