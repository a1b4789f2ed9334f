/**
 * A Gatehouse built for the HTTP tests: real config (loadConfig with env overrides and a temporary
 * data folder), real Redis at REDIS_URL under a key prefix unique to the test file, real keys, and
 * supertest agents for the federation and admin apps. `cleanup()` deletes every key under the
 * prefix and the data folder.
 *
 * The federation app is served on a plain-HTTP loopback listener (TLS is the listener's job,
 * not the app's); outbound requests from Gatehouse to fake remote servers go over HTTPS with
 * certificate checks off and private addresses allowed, as the README documents for loopback tests.
 */
import http from "node:http";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import type { AddressInfo } from "node:net";
import assert from "node:assert/strict";
import type { Redis } from "ioredis";
import { connectRedis } from "../../src/server.js";
import { scanKeys, unlinkKeys } from "./redis-scan.js";
import request from "supertest";
import type { Test } from "supertest";
import { loadConfig, type Config } from "../../src/config.js";
import { createLogger } from "../../src/logger.js";
import { buildGatehouse, type Gatehouse } from "../../src/app.js";
import { loadOrCreateSigningKeys, OwnKeys, parseOldVerifyKeys } from "../../src/keys/own-keys.js";
import { RoomStore, stateField } from "../../src/store/room-store.js";
import { authEventKeys } from "../../src/protocol/auth/index.js";
import { getRoomVersion } from "../../src/protocol/room-versions.js";
import type { Pdu } from "../../src/protocol/pdu.js";
import type { RemoteServer } from "./remote-server.js";
import type { Metrics } from "../../src/metrics.js";
import { expressServerOptions } from "../../src/http/express-server.js";
import type { Express } from "express";

export const ADMIN = "/_gatehouse/admin/v1";
export const FED = "/_matrix/federation";

export const enc = encodeURIComponent;

export function requireRedisUrl(): string {
  const url = process.env.REDIS_URL;
  if (!url) throw new Error("REDIS_URL is not set: run the tests with `node scripts/test.mjs` (it starts a private redis-server)");
  return url;
}

/** Deletes every key under `prefix:` (SCAN, never KEYS). */
export async function deletePrefix(redis: Redis, prefix: string): Promise<number> {
  return unlinkKeys(redis, await scanKeys(redis, `${prefix}:*`));
}

/**
 * Every key under the prefix with its value, as one comparable object. Excludes the remote-key
 * cache and inbound-transaction cache, which a rejected request may legitimately fill, and the
 * rate-limit token buckets (`ratelimit:`, spent by every request, accepted or not), and the
 * outbound sender's BullMQ bookkeeping (`bull:`), which the sender writes asynchronously after
 * earlier, successful requests woke it.
 */
export async function dumpPrefix(redis: Redis, prefix: string, exclude: readonly string[] = ["server-keys:", "txn:", "bull:", "ratelimit:"]): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  const keys = await scanKeys(redis, `${prefix}:*`);
  for (const key of keys.sort()) {
    const rest = key.slice(prefix.length + 1);
    if (exclude.some((e) => rest.startsWith(e))) continue;
    const type = await redis.type(key);
    switch (type) {
      case "string":
        out[key] = await redis.get(key);
        break;
      case "hash":
        out[key] = await redis.hgetall(key);
        break;
      case "set":
        out[key] = (await redis.smembers(key)).sort();
        break;
      case "zset":
        out[key] = await redis.zrange(key, 0, -1, "WITHSCORES");
        break;
      case "list":
        out[key] = await redis.lrange(key, 0, -1);
        break;
      case "stream":
        out[key] = await redis.xrange(key, "-", "+");
        break;
      default:
        out[key] = `<${type}>`;
    }
  }
  return out;
}

export interface StartOptions {
  /** Short name for the key prefix and temp folder (the test file). */
  name: string;
  serverName?: string;
  env?: Record<string, string>;
  /** Metrics holder to build the Gatehouse with (a private one when not given). */
  metrics?: Metrics;
  /** Application service registration files (YAML text), written to the data folder and loaded. */
  registrations?: string[];
  /** The Gatehouse's clock (milliseconds since the epoch); Date.now when not given. */
  clock?: () => number;
  /**
   * Start another replica of that Gatehouse (as a Kubernetes deployment's second pod): the same
   * server name, signing key (data folder) and Redis key prefix, its own listeners, connections
   * and in-process caches. Its cleanup leaves the shared prefix and folder to the first one's.
   */
  replicaOf?: TestGatehouse;
}

export interface FedOptions {
  /** Override the Authorization header(s); null sends none. */
  auth?: string | string[] | null;
  /** Send this exact text as the JSON body (the signature still covers `body`). */
  rawBody?: string;
}

export interface RoomGraph {
  versionId: string;
  depth: number;
  extremities: string[];
  stateIds: ReadonlyMap<string, string>;
  state: ReadonlyMap<string, Pdu>;
}

export class TestGatehouse {
  private constructor(
    readonly gh: Gatehouse,
    readonly config: Config,
    readonly redis: Redis,
    readonly prefix: string,
    readonly ownKeys: OwnKeys,
    readonly adminToken: string,
    private readonly dataDir: string,
    private readonly federationServer: http.Server,
    private readonly adminServer: http.Server,
    private readonly queueRedis: Redis,
    private readonly clientServer: http.Server,
    private readonly isReplica = false,
  ) {
    this.store = new RoomStore(redis, gh.keys);
    this.admin = request.agent(adminServer).set("Authorization", `Bearer ${adminToken}`);
  }

  readonly store: RoomStore;
  /** supertest agent for the admin app with the bearer token set. */
  readonly admin: request.Agent;

  get serverName(): string {
    return this.config.serverName;
  }

  /** A local user of Gatehouse. */
  local(localpart: string): string {
    return `@${localpart}:${this.serverName}`;
  }

  get creator(): string {
    return this.local("admin");
  }

  static async start(opts: StartOptions): Promise<TestGatehouse> {
    const url = requireRedisUrl();
    const first = opts.replicaOf;
    const dataDir = first ? first.dataDir : mkdtempSync(join(tmpdir(), `gatehouse-${opts.name}-`));
    const adminToken = first ? first.adminToken : randomBytes(24).toString("base64url");
    const registrationFiles = (opts.registrations ?? []).map((text, i) => {
      writeFileSync(join(dataDir, `appservice-${i}.yaml`), text);
      return `appservice-${i}.yaml`;
    });
    const config = loadConfig(
      {
        REDIS_URL: url,
        GATEHOUSE_DATA_DIR: dataDir,
        GATEHOUSE_SERVER_NAME: first ? first.serverName : (opts.serverName ?? "gatehouse.test"),
        ...(first ? { GATEHOUSE_INSTANCE_ID: `${opts.name}-replica-${randomBytes(4).toString("hex")}` } : {}),
        GATEHOUSE_TLS: "off",
        GATEHOUSE_ADMIN_TOKEN: adminToken,
        GATEHOUSE_FEDERATION_INSECURE_SKIP_TLS_VERIFY: "true",
        GATEHOUSE_FEDERATION_ALLOW_PRIVATE_ADDRESSES: "true",
        GATEHOUSE_FEDERATION_TIMEOUT_MS: "5000",
        GATEHOUSE_LOG_LEVEL: process.env.GATEHOUSE_TEST_LOG_LEVEL ?? "silent",
        GATEHOUSE_RUN_WORKERS: "false",
        ...(registrationFiles.length > 0 ? { GATEHOUSE_APPSERVICE_REGISTRATION_FILES: registrationFiles.join(",") } : {}),
        ...(opts.env ?? {}),
      },
      dataDir,
    );
    const logger = createLogger(config.logLevel);
    const { keys: signingKeys } = loadOrCreateSigningKeys(config.signingKeyFile);
    const oldKeys = existsSync(config.oldSigningKeysFile) ? parseOldVerifyKeys(readFileSync(config.oldSigningKeysFile, "utf8")) : [];
    const ownKeys = new OwnKeys(config.serverName, signingKeys, oldKeys, config.keyValidityMs);
    // Connections as in src/server.ts: an auto-pipelined one for the store, a plain one for BullMQ.
    const redis = connectRedis(url, { autoPipelining: true, redisOptions: { maxRetriesPerRequest: 2 } });
    const queueRedis = connectRedis(url);
    const prefix = first ? first.prefix : `ghtest:${opts.name}:${randomBytes(4).toString("hex")}`;
    const gh = buildGatehouse({ config, logger, redis, queueRedis, ownKeys, adminToken, redisPrefix: prefix, ...(opts.metrics ? { metrics: opts.metrics } : {}), ...(opts.clock ? { clock: opts.clock } : {}) });
    const listen = async (app: Express) => {
      // The same server options as src/server.ts, so tests run requests the way production does.
      const server = http.createServer(expressServerOptions(app), app);
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
      return server;
    };
    const federationServer = await listen(gh.federationApp);
    const adminServer = await listen(gh.adminApp);
    const clientServer = await listen(gh.clientApp);
    return new TestGatehouse(gh, config, redis, prefix, ownKeys, adminToken, dataDir, federationServer, adminServer, queueRedis, clientServer, first !== undefined);
  }

  /** Port of the client listener (127.0.0.1), for SDKs that need a base URL. */
  get clientPort(): number {
    return (this.clientServer.address() as AddressInfo).port;
  }

  /** A request to the client app (no token set). */
  client(method: "GET" | "PUT" | "POST" | "DELETE", uri: string): Test {
    const agent = request(this.clientServer);
    return method === "GET" ? agent.get(uri) : method === "PUT" ? agent.put(uri) : method === "POST" ? agent.post(uri) : agent.delete(uri);
  }

  get federationPort(): number {
    return (this.federationServer.address() as AddressInfo).port;
  }

  /** Port of the admin listener (127.0.0.1), e.g. for the CLI's GATEHOUSE_ADMIN_LISTEN. */
  get adminPort(): number {
    return (this.adminServer.address() as AddressInfo).port;
  }

  /** An unauthenticated request to the federation app. */
  plain(method: "GET" | "PUT" | "POST", uri: string): Test {
    const agent = request(this.federationServer);
    return method === "GET" ? agent.get(uri) : method === "PUT" ? agent.put(uri) : agent.post(uri);
  }

  /** A request to the federation app signed by `remote` (X-Matrix for `uri` exactly as given). */
  fed(remote: RemoteServer, method: "GET" | "PUT" | "POST", uri: string, body?: unknown, opts: FedOptions = {}): Test {
    const t = this.plain(method, uri);
    const auth = opts.auth === undefined ? remote.authHeader(method, uri, this.serverName, body) : opts.auth;
    if (auth !== null) t.set("Authorization", auth as string);
    if (opts.rawBody !== undefined) t.set("Content-Type", "application/json").send(opts.rawBody);
    else if (body !== undefined) t.send(body as object);
    return t;
  }

  /** Every key of this Gatehouse's prefix with its value (see dumpPrefix). */
  dump(): Promise<Record<string, unknown>> {
    return dumpPrefix(this.redis, this.prefix);
  }

  /** Asserts that `fn` (a rejected request) wrote nothing: every room, event, state and queue key is unchanged. */
  async assertNothingWritten<T>(fn: () => Promise<T>): Promise<T> {
    const before = await this.dump();
    const out = await fn();
    const after = await this.dump();
    const changed = [...new Set([...Object.keys(before), ...Object.keys(after)])].filter(
      (k) => JSON.stringify(before[k]) !== JSON.stringify(after[k]),
    );
    if (changed.length > 0) {
      const detail = changed.map((k) => `${k}:\n  before ${JSON.stringify(before[k])?.slice(0, 400)}\n  after  ${JSON.stringify(after[k])?.slice(0, 400)}`);
      assert.fail(`a rejected request changed Redis:\n${detail.join("\n")}`);
    }
    return out;
  }

  /** Creates a room through the admin API; returns its ID. */
  async createRoom(body: Record<string, unknown> = {}): Promise<string> {
    const res = await this.admin.post(`${ADMIN}/rooms`).send({ creator: this.creator, join_rule: "knock", ...body });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.room_id as string;
  }

  async setState(roomId: string, type: string, stateKey: string, content: Record<string, unknown>): Promise<string> {
    const res = await this.admin.put(`${ADMIN}/rooms/${enc(roomId)}/state/${enc(type)}/${enc(stateKey)}`).send({ content });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.event_id as string;
  }

  async members(roomId: string): Promise<Record<string, string>> {
    return this.store.getMembers(roomId);
  }

  /** The room's graph as a resident would see it (for building remote events by hand). */
  async graph(roomId: string): Promise<RoomGraph> {
    const snap = await this.gh.rooms.snapshot(roomId);
    return { versionId: snap.version.id, depth: snap.depth, extremities: [...snap.extremities].sort(), stateIds: snap.stateIds, state: snap.state };
  }

  /**
   * An event template built like a resident would (prev_events = extremities, auth events by the
   * spec's selection algorithm from current state), for a remote user's event.
   */
  async template(roomId: string, ev: { type: string; sender: string; state_key?: string; content: Record<string, unknown> }): Promise<Record<string, unknown>> {
    const g = await this.graph(roomId);
    const version = getRoomVersion(g.versionId)!;
    const authEvents: string[] = [];
    for (const [type, stateKey] of authEventKeys(ev, version)) {
      const id = g.stateIds.get(stateField(type, stateKey));
      if (id) authEvents.push(id);
    }
    return {
      ...ev,
      room_id: roomId,
      origin_server_ts: Date.now(),
      depth: g.depth + 1,
      prev_events: g.extremities,
      auth_events: authEvents,
    };
  }

  // --- federation handshakes as a remote server runs them ------------------------------------

  async makeMembership(remote: RemoteServer, kind: "knock" | "join" | "leave", roomId: string, userId: string, ver: string[]): Promise<request.Response> {
    const q = ver.map((v) => `ver=${enc(v)}`).join("&");
    return this.fed(remote, "GET", `${FED}/v1/make_${kind}/${enc(roomId)}/${enc(userId)}${q ? `?${q}` : ""}`);
  }

  /** make_knock + send_knock; asserts both succeed. */
  async knock(remote: RemoteServer, roomId: string, userId: string, content: Record<string, unknown> = {}): Promise<{ eventId: string; pdu: Pdu; res: request.Response }> {
    const made = await this.makeMembership(remote, "knock", roomId, userId, ["7", "8", "9", "10", "11", "12"]);
    assert.equal(made.status, 200, JSON.stringify(made.body));
    const ev = made.body.event as Record<string, unknown>;
    const { pdu, eventId } = remote.signEvent({ ...ev, content: { ...(ev.content as object), ...content } }, made.body.room_version);
    const res = await this.fed(remote, "PUT", `${FED}/v1/send_knock/${enc(roomId)}/${enc(eventId)}`, pdu);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return { eventId, pdu, res };
  }

  /** make_join + v2 send_join; asserts both succeed. */
  async join(remote: RemoteServer, roomId: string, userId: string): Promise<{ eventId: string; pdu: Pdu; res: request.Response }> {
    const made = await this.makeMembership(remote, "join", roomId, userId, ["10", "11", "12", "7", "8", "9"]);
    assert.equal(made.status, 200, JSON.stringify(made.body));
    const { pdu, eventId } = remote.signEvent(made.body.event, made.body.room_version);
    const res = await this.fed(remote, "PUT", `${FED}/v2/send_join/${enc(roomId)}/${enc(eventId)}`, pdu);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return { eventId, pdu, res };
  }

  /** knock, admin accept (Gatehouse invites via the remote's /v2/invite), then join. */
  async knockAcceptJoin(remote: RemoteServer, roomId: string, userId: string): Promise<{ joinEventId: string }> {
    await this.knock(remote, roomId, userId);
    const acc = await this.admin.post(`${ADMIN}/rooms/${enc(roomId)}/knocks/${enc(userId)}/accept`).send({});
    assert.equal(acc.status, 200, JSON.stringify(acc.body));
    const { eventId } = await this.join(remote, roomId, userId);
    return { joinEventId: eventId };
  }

  /** A remote user's event (message or state), built from current room state and signed by `remote`. */
  async remoteEvent(remote: RemoteServer, roomId: string, ev: { type: string; sender: string; state_key?: string; content: Record<string, unknown> }) {
    const t = await this.template(roomId, ev);
    const g = await this.graph(roomId);
    return remote.signEvent(t, g.versionId);
  }

  async cleanup(): Promise<void> {
    await Promise.all([
      new Promise<void>((r) => {
        this.federationServer.closeAllConnections();
        this.federationServer.close(() => r());
      }),
      new Promise<void>((r) => {
        this.adminServer.closeAllConnections();
        this.adminServer.close(() => r());
      }),
      new Promise<void>((r) => {
        this.clientServer.closeAllConnections();
        this.clientServer.close(() => r());
      }),
    ]);
    await this.gh.close();
    if (!this.isReplica) await deletePrefix(this.redis, this.prefix);
    await this.redis.quit().catch(() => undefined);
    await this.queueRedis.quit().catch(() => undefined);
    if (!this.isReplica) rmSync(this.dataDir, { recursive: true, force: true });
  }
}
