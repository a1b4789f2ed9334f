/**
 * The client listener's Express app: `/_matrix/client/...` for application services (as_token
 * authentication, `user_id` masquerading, `ts`), on GATEHOUSE_CLIENT_LISTEN.
 */
import express, { type Express } from "express";
import { jsonBody } from "../http/body.js";
import { errorHandler, unmatchedHandler } from "../http/errors.js";
import { observeRequests } from "../http/observe.js";
import { clientRequestHook } from "../metrics-hooks.js";
import { requireAppserviceToken } from "./auth.js";
import { clientRouter, versionsRouter } from "./routes.js";
import type { Core } from "../core.js";

export function buildClientApp(core: Core): Express {
  const { config, logger, appservices } = core;
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);
  app.set("case sensitive routing", true);
  // SDKs of the r0 era (matrix-bot-sdk 0.5) call `/_matrix/client/r0/...`: the same endpoints.
  app.use((req, _res, next) => {
    if (req.url.startsWith("/_matrix/client/r0/")) req.url = `/_matrix/client/v3/${req.url.slice("/_matrix/client/r0/".length)}`;
    next();
  });
  app.use(observeRequests(logger, clientRequestHook(core.metrics)));
  app.use(jsonBody(config.maxRequestBytes));
  app.use(versionsRouter());
  app.use(
    "/_matrix/client",
    requireAppserviceToken({
      registry: appservices.registry,
      accounts: appservices.accounts,
      limiter: core.limiter,
      rateLimit: { ratePerSecond: config.rateLimits.clientPerSecond, burst: config.rateLimits.clientBurst },
    }),
  );
  app.use(clientRouter(appservices.actions, appservices.ping));
  app.use(unmatchedHandler(app as never));
  app.use(errorHandler(logger));
  return app;
}
