/**
 * buildCore: the parts every Gatehouse role shares (store, keys, outbound client, sender and the
 * room use cases), built from the config and the connections it is given. Listeners are built
 * from a Core by their own modules (src/federation/app.ts, src/admin/app.ts, src/client/app.ts);
 * src/app.ts puts them together.
 */
import { CacheBudget } from "./store/byte-lru.js";
import { ReplicaWait } from "./store/replica-wait.js";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import type { Redis } from "ioredis";
import { Registry } from "prom-client";
import { RedisKeys } from "./store/redis-keys.js";
import { RoomStore } from "./store/room-store.js";
import { chooseEd25519 } from "./keys/sodium-ed25519.js";
import { RemoteKeys, type CachedKey } from "./keys/remote-keys.js";
import type { OwnKeys } from "./keys/own-keys.js";
import { FederationClient } from "./net/federation-client.js";
import { MissingEvents } from "./rooms/missing-events.js";
import { EventVerifier } from "./rooms/event-verifier.js";
import { RoomService, type RoomContext } from "./rooms/room-service.js";
import { MembershipService } from "./rooms/membership.js";
import { RoomHistory } from "./rooms/history.js";
import { RoomQueries } from "./rooms/room-queries.js";
import { RemoteRooms } from "./rooms/remote-rooms.js";
import { LocalUsers } from "./rooms/local-users.js";
import { Participation } from "./rooms/participation.js";
import type { Pdu } from "./protocol/pdu.js";
import { InboundTransactions } from "./rooms/inbound-transactions.js";
import { Sender } from "./sender/sender.js";
import { RateLimiter } from "./http/rate-limit.js";
import { Metrics } from "./metrics.js";
import { membershipHooks, outboundHooks, roomServiceHooks, senderHooks } from "./metrics-hooks.js";
import { AppserviceRegistry } from "./appservice/registry.js";
import { AppserviceAccounts } from "./appservice/accounts.js";
import { AppserviceClient } from "./appservice/as-client.js";
import { AppservicePing } from "./appservice/ping.js";
import { ClientActions } from "./appservice/client-actions.js";
import { AppserviceTransport } from "./appservice/transport.js";
import { AppservicePush } from "./appservice/push.js";
import { ConfigError, type Config } from "./config.js";
import { PartialStateResync } from "./rooms/partial-state.js";
import { GapState } from "./rooms/gap-state.js";
import type { Logger } from "./logger.js";

export interface CoreOptions {
  config: Config;
  logger: Logger;
  /** The room store's and request handlers' connection (auto-pipelined in production). */
  redis: Redis;
  /** The sender's connection, shared with BullMQ (never auto-pipelined); `redis` when not given. */
  queueRedis?: Redis;
  ownKeys: OwnKeys;
  clock?: () => number;
  /** Redis key prefix; tests give each suite its own. */
  redisPrefix?: string;
  /** Metrics registry holder; a private one (without process metrics) when not given. */
  metrics?: Metrics;
}

export interface Core extends RoomContext {
  config: Config;
  logger: Logger;
  clock: () => number;
  redis: Redis;
  ownKeys: OwnKeys;
  keys: RedisKeys;
  metrics: Metrics;
  client: FederationClient;
  remoteKeys: RemoteKeys;
  /** The outbound transaction sender; its workers run only after sender.startWorkers(). */
  sender: Sender;
  membership: MembershipService;
  remoteRooms: RemoteRooms;
  /** Which local users exist (invites from other servers are taken only for them). */
  localUsers: LocalUsers;
  participation: Participation;
  /** Resyncs of rooms joined with partial state (started by joins; resume() after a restart). */
  partialState: PartialStateResync;
  history: RoomHistory;
  queries: RoomQueries;
  transactions: InboundTransactions;
  limiter: RateLimiter;
  /** Registered application services and the client API's use cases. */
  appservices: {
    registry: AppserviceRegistry;
    accounts: AppserviceAccounts;
    client: AppserviceClient;
    push: AppservicePush;
    actions: ClientActions;
    ping: AppservicePing;
  };
  close(): Promise<void>;
}

/** The per-room knock token bucket, shared by send_knock and knocks arriving through /send. */
export function knockBucket(config: Config): { ratePerSecond: number; burst: number } {
  return { ratePerSecond: config.rateLimits.knocksPerRoomPerSecond, burst: config.rateLimits.knocksPerRoomBurst };
}

export function buildCore(opts: CoreOptions): Core {
  const { config, logger, redis, ownKeys } = opts;
  const clock = opts.clock ?? Date.now;
  const keys = new RedisKeys(opts.redisPrefix ?? "gh");
  const metrics = opts.metrics ?? new Metrics(new Registry(), { defaultMetrics: false });
  // One cache budget per process (GATEHOUSE_CACHE_MAX_BYTES), shared by the store, the room service and the sender.
  const caches = new CacheBudget(config.cacheMaxBytes);
  metrics.setCacheCollector(() => caches.stats());
  const store = new RoomStore(redis, keys, {
    caches,
    // The entry stays in the room's outbox; the sender's sweep fans it out (store/fanout.ts).
    onFanoutError: (roomId, err) => logger.warn({ roomId, err: err.message }, "fan-out after a write failed; the sender's sweep retries it"),
    onStateRead: (path, delta) => {
      metrics.roomStateReads.inc({ path });
      if (delta?.local) metrics.roomStateDeltaEvents.inc({ source: "local" }, delta.local);
      if (delta?.remote) metrics.roomStateDeltaEvents.inc({ source: "remote" }, delta.remote);
      if (delta?.skipped) metrics.roomStateDeltaEvents.inc({ source: "skipped" }, delta.skipped);
    },
  });

  const client = new FederationClient({
    serverName: config.serverName,
    signingKey: ownKeys.current,
    insecureSkipTlsVerify: config.outbound.insecureSkipTlsVerify,
    allowPrivateAddresses: config.outbound.allowPrivateAddresses,
    ipRangeAllowlist: config.outbound.ipRangeAllowlist,
    extraCaPem: config.outbound.caFile ? readCaFile(config.outbound.caFile) : undefined,
    timeoutMs: config.outbound.requestTimeoutMs,
    maxResponseBytes: config.outbound.maxResponseBytes,
    now: clock,
    ...outboundHooks(metrics, logger),
  });

  const ownVerifyKeys = (): Record<string, CachedKey> => {
    const out: Record<string, CachedKey> = {};
    const now = clock();
    for (const k of ownKeys.keys) out[k.keyId] = { key: k.publicKeyBase64, validUntilTs: now + config.keyValidityMs, fetchedTs: now };
    for (const k of ownKeys.oldKeys) out[k.keyId] = { key: k.publicKeyBase64, validUntilTs: k.expiredTs, expiredTs: k.expiredTs, fetchedTs: now };
    return out;
  };
  const ed25519 = chooseEd25519(config.ed25519Backend);
  if (ed25519.fellBack) logger.warn({ reason: ed25519.fellBack }, "GATEHOUSE_ED25519_BACKEND=sodium-native: sodium-native cannot be loaded here; verifying with Node's crypto");
  const remoteKeys = new RemoteKeys({
    ed25519: ed25519.ed25519,
    redis,
    keys,
    client,
    trustedKeyServers: config.trustedKeyServers,
    ownServerName: config.serverName,
    ownKeys: ownVerifyKeys,
    logger,
    now: clock,
    onFetch: (outcome) => metrics.keyFetches.inc({ outcome }),
    fetchLimits: config.keyFetch,
  });

  const sender = new Sender({
    redis: opts.queueRedis ?? redis,
    keys,
    store,
    client,
    serverName: config.serverName,
    logger,
    settings: config.sender,
    caches,
    instanceId: config.instanceId,
    hostname: hostname(),
    clock,
    ...senderHooks(metrics),
  });
  metrics.setOutboundCollector(() => sender.view.metricsSnapshot());
  const verifier = new EventVerifier(remoteKeys, (check) => metrics.inboundCheckFailures.inc({ check }));

  // Application services: registrations, their users, and pushes through the sender's queue.
  const registry = new AppserviceRegistry(config.appservices, config.serverName);
  const asClient = new AppserviceClient({ timeoutMs: config.outbound.requestTimeoutMs, legacyAuthorization: config.appserviceLegacyAuthorization });
  sender.transports.add(new AppserviceTransport(registry, asClient));
  const push = new AppservicePush({ registry, redis, keys, fanout: store.fanout, aliasesOf: (roomId) => store.aliasesOf(roomId), wake: (d) => sender.wake(d) });

  const roomHooks = roomServiceHooks(metrics, (destinations) => sender.wake(destinations));
  // Set once remoteRooms exists: another server's member event for a local user (a kick, a ban).
  let onRemoteMembership: ((roomId: string, pdu: Pdu) => void) | undefined;
  const replicaWait = new ReplicaWait(redis, keys, {
    ...config.redisWait,
    logger,
    onWait: ({ seconds, timedOut }) => {
      metrics.redisReplicaWaitDuration.observe(seconds);
      if (timedOut) metrics.redisReplicaWaitTimeouts.inc();
    },
  });
  const afterWrites = replicaWait.enabled ? (roomIds: Iterable<string>) => replicaWait.afterRoomWrites(roomIds) : undefined;
  const rooms = new RoomService({
    store,
    caches,
    afterWrites,
    appserviceDestinations: (pdu, roomId, stateBefore) => push.destinationsFor(pdu, roomId, stateBefore),
    ...roomHooks,
    onPersisted: (event, origin) => {
      roomHooks.onPersisted?.(event, origin);
      if (origin !== null && event.pdu.type === "m.room.member") onRemoteMembership?.(event.roomId, event.pdu);
    },
    onWriteConflict: () => metrics.roomWriteConflicts.inc(),
    onLeaseWait: () => metrics.roomWriteLeaseWaits.inc(),
    onStateDiff: (path) => metrics.roomStateDiffs.inc({ path }),
    maxForwardExtremities: config.maxForwardExtremities,
    roomWriteLeaseMs: config.roomWriteLeaseMs,
    serverName: config.serverName,
    signingKey: ownKeys.current,
    verifier,
    logger,
    clock,
  });
  const ctx: RoomContext = { rooms, store };
  const membership = new MembershipService(ctx, client, remoteKeys, membershipHooks(metrics));
  const accounts = new AppserviceAccounts(redis, keys, registry);
  const localUsers = new LocalUsers({
    redis,
    keys,
    serverName: config.serverName,
    registered: (userId) => accounts.exists(userId),
    queryAppservices: async (userId) => {
      for (const reg of registry.interestedIn("users", userId)) if (await asClient.queryUser(reg, userId)) return true;
      return false;
    },
    logger,
  });
  const partialState = new PartialStateResync({
    store,
    gapState: new GapState({ rooms, store, client }),
    serverName: config.serverName,
    logger,
    onOutcome: (outcome) => metrics.partialStateResyncs.inc({ outcome }),
  });
  const participation = new Participation({
    rooms,
    store,
    client,
    verifier,
    serverName: config.serverName,
    logger,
    appserviceDestinations: (pdu, roomId, stateBefore) => push.destinationsFor(pdu, roomId, stateBefore),
    onQueued: (destinations) => sender.wake(destinations),
    onPartialState: (roomId) => partialState.start(roomId),
  });
  const remoteRooms = new RemoteRooms({
    partialStateJoins: config.partialStateJoins,
    participation,
    rooms,
    redis,
    keys,
    client,
    serverName: config.serverName,
    signingKey: ownKeys.current,
    verifier,
    logger,
    clock,
    onKnockOut: (outcome) => metrics.remoteKnocks.inc({ outcome }),
    onInvite: (pdu, eventId, state) => push.queueRemoteInvite(pdu, eventId, state),
    localUserExists: async (userId) => (await localUsers.exists(userId)) !== null,
  });
  // The record follows the event; an inbound transaction answers only once the records its
  // events changed are written (transactionAfterWrites below), so a kick is visible at the 200.
  const membershipNotes = new Set<Promise<void>>();
  onRemoteMembership = (roomId, pdu) => {
    const note: Promise<void> = remoteRooms
      .noteMembership(roomId, pdu)
      .catch((err: Error) => logger.warn({ roomId, err: err.message }, "could not record a membership change"))
      .finally(() => membershipNotes.delete(note));
    membershipNotes.add(note);
  };
  const transactionAfterWrites = async (roomIds: Iterable<string>): Promise<void> => {
    await Promise.all(membershipNotes);
    await afterWrites?.(roomIds);
  };
  const history = new RoomHistory(ctx);
  const queries = new RoomQueries(ctx);
  const limiter = new RateLimiter(redis, keys, clock);
  const transactions = new InboundTransactions({
    rooms,
    store,
    redis,
    keys,
    logger,
    onPdu: (outcome) => metrics.inboundPdus.inc({ outcome }),
    // /send knocks count against the same per-room bucket as send_knock (federation/app.ts).
    knockLimit: (roomId) => limiter.take("knock", roomId, knockBucket(config)),
    missingEvents: new MissingEvents({ rooms, store, client, logger, onOutcome: (outcome) => metrics.missingEvents.inc({ outcome }), gapStateMaxEvents: config.gapStateMaxEvents, clock }),
    participation,
    partialState,
    afterWrites: transactionAfterWrites,
  });

  const actions = new ClientActions({ ctx, queries, membership, remoteRooms, history, federation: client, registry, accounts, asClient, redis, keys, logger, participation });
  const appservices = { registry, accounts, client: asClient, push, actions, ping: new AppservicePing(asClient, clock) };

  return {
    config,
    logger,
    clock,
    redis,
    ownKeys,
    keys,
    metrics,
    store,
    client,
    remoteKeys,
    sender,
    rooms,
    membership,
    remoteRooms,
    localUsers,
    participation,
    partialState,
    history,
    queries,
    transactions,
    limiter,
    appservices,
    async close() {
      // A merge of forward extremities in progress finishes first, within the shutdown deadline
      // (with Redis unreachable its commands would wait for a reconnection forever).
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([rooms.settled(), new Promise<void>((resolve) => (timer = setTimeout(resolve, config.shutdownTimeoutMs)))]);
      clearTimeout(timer);
      await partialState.close();
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
