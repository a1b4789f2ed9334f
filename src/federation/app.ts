/**
 * The federation listener's Express app (`/_matrix/key`, `/_matrix/federation`): X-Matrix
 * authentication, per-origin and per-room rate limits, then the federation routers.
 */
import express, { type Express } from "express";
import { jsonBody } from "../http/body.js";
import { errorHandler, unmatchedHandler } from "../http/errors.js";
import { observeRequests } from "../http/observe.js";
import { federationRequestHook } from "../metrics-hooks.js";
import { keysRouter } from "./keys-routes.js";
import { versionRouter } from "./version-routes.js";
import { wellKnownRouter } from "./well-known-routes.js";
import { requireXMatrix } from "./auth.js";
import { membershipRouter } from "./membership-routes.js";
import { inviteRouter } from "./invite-routes.js";
import { queryRouter } from "./query-routes.js";
import { roomRouter } from "./room-routes.js";
import { knockBucket, type Core } from "../core.js";

export function buildFederationApp(core: Core): Express {
  const { config, logger, metrics, limiter, sender } = core;
  const rl = config.rateLimits;
  const app = express();
  app.disable("x-powered-by");
  // No ETags: no federation client sends If-None-Match, and hashing every body costs CPU.
  app.set("etag", false);
  app.set("case sensitive routing", true);
  app.set("strict routing", true);
  app.use(observeRequests(logger, federationRequestHook(metrics)));
  app.use(jsonBody(config.maxRequestBytes));
  app.use(keysRouter(core.ownKeys, core.clock));
  app.use(versionRouter());
  app.use(wellKnownRouter(config.wellKnownServer));
  app.use(
    "/_matrix/federation",
    requireXMatrix({
      serverName: config.serverName,
      remoteKeys: core.remoteKeys,
      onFailure: () => metrics.inboundCheckFailures.inc({ check: "x_matrix" }),
      onAuthenticated: (origin) => void sender.noteRemoteActivity(origin),
    }),
  );
  app.use("/_matrix/federation", limiter.perOrigin({ ratePerSecond: rl.originPerSecond, burst: rl.originBurst }));
  app.use(membershipRouter(core.membership, limiter.perRoom("knock", knockBucket(config))));
  app.use(inviteRouter(core.remoteRooms));
  app.use(queryRouter(core.rooms, core.queries));
  app.use(roomRouter({ transactions: core.transactions, history: core.history, serverName: config.serverName, clock: core.clock }));
  app.use(unmatchedHandler(app as never));
  app.use(errorHandler(logger));
  return app;
}
