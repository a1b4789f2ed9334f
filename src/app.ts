/**
 * The composition root: builds every part of Gatehouse from the config and the connections it
 * is given, and wires them together. Nothing else constructs services.
 */
import express, { type Express } from "express";
import type { Redis } from "ioredis";
import { jsonBody } from "./http/body.js";
import { errorHandler, notFoundHandler } from "./http/errors.js";
import { keysRouter } from "./federation/keys-routes.js";
import { versionRouter } from "./federation/version-routes.js";
import { requireXMatrix } from "./federation/auth.js";
import { membershipRouter } from "./federation/membership-routes.js";
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
import { InboundTransactions } from "./rooms/inbound-transactions.js";
import type { Config } from "./config.js";
import type { Logger } from "./logger.js";

export interface GatehouseOptions {
  config: Config;
  logger: Logger;
  redis: Redis;
  ownKeys: OwnKeys;
  adminToken: string;
  clock?: () => number;
  /** Redis key prefix; tests give each suite its own. */
  redisPrefix?: string;
}

export interface Gatehouse {
  federationApp: Express;
  adminApp: Express;
  rooms: RoomService;
  membership: MembershipService;
  remoteKeys: RemoteKeys;
  client: FederationClient;
  keys: RedisKeys;
  close(): Promise<void>;
}

export function buildGatehouse(opts: GatehouseOptions): Gatehouse {
  const { config, logger, redis, ownKeys } = opts;
  const clock = opts.clock ?? Date.now;
  const keys = new RedisKeys(opts.redisPrefix ?? "gh");
  const store = new RoomStore(redis, keys);

  const client = new FederationClient({
    serverName: config.serverName,
    signingKey: ownKeys.current,
    insecureSkipTlsVerify: config.outbound.insecureSkipTlsVerify,
    allowPrivateAddresses: config.outbound.allowPrivateAddresses,
    timeoutMs: config.outbound.requestTimeoutMs,
    now: clock,
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
  });

  const rooms = new RoomService({
    store,
    serverName: config.serverName,
    signingKey: ownKeys.current,
    verifier: new EventVerifier(remoteKeys),
    logger,
    clock,
  });
  const membership = new MembershipService(rooms, client, remoteKeys);
  const history = new RoomHistory(rooms);
  const transactions = new InboundTransactions({ rooms, redis, keys, logger });

  // --- federation listener -------------------------------------------------------------------
  const federationApp = express();
  federationApp.disable("x-powered-by");
  federationApp.set("case sensitive routing", true);
  federationApp.set("strict routing", true);
  federationApp.use(jsonBody(config.maxRequestBytes));
  federationApp.use(keysRouter(ownKeys, clock));
  federationApp.use(versionRouter());
  federationApp.use("/_matrix/federation", requireXMatrix({ serverName: config.serverName, remoteKeys }));
  federationApp.use(membershipRouter(membership));
  federationApp.use(roomRouter({ transactions, history, serverName: config.serverName, clock }));
  federationApp.use(notFoundHandler);
  federationApp.use(errorHandler(logger));

  // --- admin listener ------------------------------------------------------------------------
  const adminApp = express();
  adminApp.disable("x-powered-by");
  adminApp.use(jsonBody(config.maxRequestBytes));
  adminApp.use("/_gatehouse/admin", requireAdminToken(opts.adminToken));
  adminApp.use(adminRouter({ rooms, membership, serverName: config.serverName }));
  adminApp.use(notFoundHandler);
  adminApp.use(errorHandler(logger));

  return {
    federationApp,
    adminApp,
    rooms,
    membership,
    remoteKeys,
    client,
    keys,
    async close() {
      client.close();
    },
  };
}
