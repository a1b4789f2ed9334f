/**
 * The composition root: builds every part of Gatehouse from the config and the connections it
 * is given, and wires them together. Nothing else constructs services.
 */
import { readFileSync } from "node:fs";
import express, { type Express } from "express";
import type { Redis } from "ioredis";
import { jsonBody } from "./http/body.js";
import { errorHandler, unmatchedHandler } from "./http/errors.js";
import { keysRouter } from "./federation/keys-routes.js";
import { versionRouter } from "./federation/version-routes.js";
import { wellKnownRouter } from "./federation/well-known-routes.js";
import { requireXMatrix } from "./federation/auth.js";
import { membershipRouter } from "./federation/membership-routes.js";
import { inviteRouter } from "./federation/invite-routes.js";
import { queryRouter } from "./federation/query-routes.js";
import { remoteAdminRouter } from "./admin/remote-routes.js";
import { openapiRouter } from "./admin/openapi-route.js";
import { RemoteRooms } from "./rooms/remote-rooms.js";
import { roomRouter } from "./federation/room-routes.js";
import { adminRouter } from "./admin/routes.js";
import { requireAdminToken } from "./admin/auth.js";
import { RedisKeys } from "./store/redis-keys.js";
import { RoomStore } from "./store/room-store.js";
import { RemoteKeys, type CachedKey } from "./keys/remote-keys.js";
import type { OwnKeys } from "./keys/own-keys.js";
import { FederationClient } from "./net/federation-client.js";
import { EventVerifier } from "./rooms/event-verifier.js";
import { RoomService } from "./rooms/room-service.js";
import { MembershipService } from "./rooms/membership.js";
import { RoomHistory } from "./rooms/history.js";
import { VisibilityLog } from "./store/visibility-log.js";
import { InboundTransactions } from "./rooms/inbound-transactions.js";
import { hostname } from "node:os";
import { Sender } from "./sender/sender.js";
import { queueAdminRouter } from "./sender/admin-routes.js";
import { ConfigError, type Config } from "./config.js";
import { Metrics } from "./metrics.js";
import { Registry } from "prom-client";
import { observeRequests } from "./http/observe.js";
import { RateLimiter } from "./http/rate-limit.js";
import type { Logger } from "./logger.js";

export interface GatehouseOptions {
  config: Config;
  logger: Logger;
  /** The room store's and request handlers' connection (auto-pipelined in production). */
  redis: Redis;
  /** The sender's connection, shared with BullMQ (never auto-pipelined); `redis` when not given. */
  queueRedis?: Redis;
  ownKeys: OwnKeys;
  adminToken: string;
  clock?: () => number;
  /** Redis key prefix; tests give each suite its own. */
  redisPrefix?: string;
  /** Metrics registry holder; a private one (without process metrics) when not given. */
  metrics?: Metrics;
}

export interface Gatehouse {
  federationApp: Express;
  adminApp: Express;
  rooms: RoomService;
  membership: MembershipService;
  remoteRooms: RemoteRooms;
  /** Reads of hosted rooms' history (federation reads; the client API's visibleEventsForUser). */
  history: RoomHistory;
  remoteKeys: RemoteKeys;
  client: FederationClient;
  keys: RedisKeys;
  /** The outbound transaction sender; its workers run only after sender.startWorkers(). */
  sender: Sender;
  metrics: Metrics;
  close(): Promise<void>;
}

export function buildGatehouse(opts: GatehouseOptions): Gatehouse {
  const { config, logger, redis, ownKeys } = opts;
  const clock = opts.clock ?? Date.now;
  const keys = new RedisKeys(opts.redisPrefix ?? "gh");
  const metrics = opts.metrics ?? new Metrics(new Registry(), { defaultMetrics: false });
  const store = new RoomStore(redis, keys, {
    // The entry stays in the room's outbox; the sender's sweep fans it out (store/fanout.ts).
    onFanoutError: (roomId, err) => logger.warn({ roomId, err: err.message }, "fan-out after a write failed; the sender's sweep retries it"),
  });

  const client = new FederationClient({
    serverName: config.serverName,
    signingKey: ownKeys.current,
    insecureSkipTlsVerify: config.outbound.insecureSkipTlsVerify,
    allowPrivateAddresses: config.outbound.allowPrivateAddresses,
    ipRangeAllowlist: config.outbound.ipRangeAllowlist,
    extraCaPem: config.outbound.caFile ? readCaFile(config.outbound.caFile) : undefined,
    timeoutMs: config.outbound.requestTimeoutMs,
    now: clock,
    onRefused: (reason, destination, message) => {
      metrics.outboundRefused.inc({ reason });
      logger.warn({ destination, reason }, `outbound federation refused: ${message}`);
    },
  });

  const ownVerifyKeys = (): Record<string, CachedKey> => {
    const out: Record<string, CachedKey> = {};
    const now = clock();
    for (const k of ownKeys.keys) out[k.keyId] = { key: k.publicKeyBase64, validUntilTs: now + config.keyValidityMs, fetchedTs: now };
    for (const k of ownKeys.oldKeys) out[k.keyId] = { key: k.publicKeyBase64, validUntilTs: k.expiredTs, expiredTs: k.expiredTs, fetchedTs: now };
    return out;
  };
  const remoteKeys = new RemoteKeys({
    redis,
    keys,
    client,
    trustedKeyServers: config.trustedKeyServers,
    ownServerName: config.serverName,
    ownKeys: ownVerifyKeys,
    logger,
    now: clock,
    onFetch: (outcome) => metrics.keyFetches.inc({ outcome }),
  });

  const sender = new Sender({
    redis: opts.queueRedis ?? redis,
    keys,
    store,
    client,
    serverName: config.serverName,
    logger,
    settings: config.sender,
    instanceId: config.instanceId,
    hostname: hostname(),
    clock,
    onTransaction: (outcome, info) => {
      metrics.outboundTransactions.inc({ outcome });
      metrics.outboundTransactionDuration.observe(info.seconds);
      if (outcome === "sent") {
        metrics.outboundPdusPerTransaction.observe(info.pdus);
        if (info.pduErrors > 0) metrics.outboundPduErrors.inc(info.pduErrors);
      }
    },
  });
  metrics.setOutboundCollector(() => sender.view.metricsSnapshot());
  const verifier = new EventVerifier(remoteKeys, (check) => metrics.inboundCheckFailures.inc({ check }));

  const rooms = new RoomService({
    store,
    onQueued: (destinations) => {
      metrics.outboundPdusQueued.inc(destinations.length);
      sender.wake(destinations);
    },
    onPersisted: (event, origin) => {
      const kind = event.pdu.type === "m.room.member" ? "member" : typeof event.pdu.state_key === "string" ? "state" : "message";
      metrics.eventsPersisted.inc({ origin: origin ? "remote" : "local", kind });
    },
    onAclDenied: (roomId) => metrics.aclDenials.inc({ room: roomId, reason: "server_acl" }),
    maxForwardExtremities: config.maxForwardExtremities,
    serverName: config.serverName,
    signingKey: ownKeys.current,
    verifier,
    logger,
    clock,
  });
  const membership = new MembershipService(rooms, client, remoteKeys, {
    onHandshake: (kind, _roomId, previous) => {
      if (kind === "knock") metrics.knocks.inc({ outcome: "received" });
      if (kind === "leave" && previous === "knock") metrics.knocks.inc({ outcome: "rescinded" });
    },
    onKnockRejected: () => metrics.knocks.inc({ outcome: "rejected" }),
    onKnockDecision: (decision) => metrics.knocks.inc({ outcome: decision }),
  });
  const remoteRooms = new RemoteRooms({
    redis,
    keys,
    client,
    serverName: config.serverName,
    signingKey: ownKeys.current,
    verifier,
    logger,
    clock,
    onKnockOut: (outcome) => metrics.remoteKnocks.inc({ outcome }),
  });
  const history = new RoomHistory(rooms, new VisibilityLog(redis, keys));
  const transactions = new InboundTransactions({ rooms, redis, keys, logger, onPdu: (outcome) => metrics.inboundPdus.inc({ outcome }) });
  const limiter = new RateLimiter(redis, keys, clock);
  const rl = config.rateLimits;

  // --- federation listener -------------------------------------------------------------------
  const federationApp = express();
  federationApp.disable("x-powered-by");
  // No ETags: no federation client sends If-None-Match, and hashing every body costs CPU.
  federationApp.set("etag", false);
  federationApp.set("case sensitive routing", true);
  federationApp.set("strict routing", true);
  federationApp.use(
    observeRequests(logger, (r) => {
      metrics.federationRequests.inc({ route: r.endpoint, method: r.method, status: String(r.status), errcode: r.errcode });
      metrics.federationRequestDuration.observe({ route: r.endpoint, method: r.method }, r.seconds);
    }),
  );
  federationApp.use(jsonBody(config.maxRequestBytes));
  federationApp.use(keysRouter(ownKeys, clock));
  federationApp.use(versionRouter());
  federationApp.use(wellKnownRouter(config.wellKnownServer));
  federationApp.use(
    "/_matrix/federation",
    requireXMatrix({
      serverName: config.serverName,
      remoteKeys,
      onFailure: () => metrics.inboundCheckFailures.inc({ check: "x_matrix" }),
      onAuthenticated: (origin) => void sender.noteRemoteActivity(origin),
    }),
  );
  federationApp.use("/_matrix/federation", limiter.perOrigin({ ratePerSecond: rl.originPerSecond, burst: rl.originBurst }));
  federationApp.use(membershipRouter(membership, limiter.perRoom("knock", { ratePerSecond: rl.knocksPerRoomPerSecond, burst: rl.knocksPerRoomBurst })));
  federationApp.use(inviteRouter(remoteRooms));
  federationApp.use(queryRouter(rooms));
  federationApp.use(roomRouter({ transactions, history, serverName: config.serverName, clock }));
  federationApp.use(unmatchedHandler(federationApp as never));
  federationApp.use(errorHandler(logger));

  // --- admin listener ------------------------------------------------------------------------
  const adminApp = express();
  adminApp.disable("x-powered-by");
  adminApp.set("etag", false);
  adminApp.use(
    observeRequests(logger, (r) => metrics.adminRequests.inc({ route: r.endpoint, method: r.method, status: String(r.status) })),
  );
  adminApp.use(jsonBody(config.maxRequestBytes));
  adminApp.use("/_gatehouse/admin", requireAdminToken(opts.adminToken));
  adminApp.use(adminRouter({ rooms, membership, serverName: config.serverName, extra: [queueAdminRouter(sender), remoteAdminRouter(remoteRooms)] }));
  adminApp.use(openapiRouter());
  adminApp.use(unmatchedHandler(adminApp as never));
  adminApp.use(errorHandler(logger));

  return {
    federationApp,
    adminApp,
    rooms,
    membership,
    remoteRooms,
    history,
    remoteKeys,
    client,
    keys,
    sender,
    metrics,
    async close() {
      // A merge of forward extremities in progress finishes first, within the shutdown deadline
      // (with Redis unreachable its commands would wait for a reconnection forever).
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([rooms.settled(), new Promise<void>((resolve) => (timer = setTimeout(resolve, config.shutdownTimeoutMs)))]);
      clearTimeout(timer);
      // Workers first: an in-flight transaction may finish within the shutdown deadline.
      await sender.close(config.shutdownTimeoutMs);
      client.close();
    },
  };
}

/** The PEM bundle of GATEHOUSE_FEDERATION_CA_FILE; a ConfigError naming the setting when unusable. */
function readCaFile(file: string): string {
  let pem: string;
  try {
    pem = readFileSync(file, "utf8");
  } catch (e) {
    throw new ConfigError("GATEHOUSE_FEDERATION_CA_FILE", `cannot read ${file}: ${(e as Error).message}`);
  }
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) throw new ConfigError("GATEHOUSE_FEDERATION_CA_FILE", `${file} holds no PEM certificate`);
  return pem;
}
