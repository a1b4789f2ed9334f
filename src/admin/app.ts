/** The admin listener's Express app (`/_gatehouse/admin/v1`, its own bearer token, and the OpenAPI document). */
import express, { type Express } from "express";
import { jsonBody } from "../http/body.js";
import { errorHandler, unmatchedHandler } from "../http/errors.js";
import { observeRequests } from "../http/observe.js";
import { adminRequestHook } from "../metrics-hooks.js";
import { queueAdminRouter } from "../sender/admin-routes.js";
import { remoteAdminRouter } from "./remote-routes.js";
import { userAdminRouter } from "./user-routes.js";
import { openapiRouter } from "./openapi-route.js";
import { adminRouter } from "./routes.js";
import { requireAdminToken } from "./auth.js";
import type { Core } from "../core.js";

export function buildAdminApp(core: Core, adminToken: string): Express {
  const { config, logger } = core;
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);
  app.use(observeRequests(logger, adminRequestHook(core.metrics)));
  app.use(jsonBody(config.maxRequestBytes));
  app.use("/_gatehouse/admin", requireAdminToken(adminToken));
  app.use(
    adminRouter({
      ctx: core,
      queries: core.queries,
      membership: core.membership,
      serverName: config.serverName,
      localUsers: core.localUsers,
      extra: [queueAdminRouter(core.sender), remoteAdminRouter(core.remoteRooms, core.localUsers), userAdminRouter(core.localUsers)],
    }),
  );
  app.use(openapiRouter());
  app.use(unmatchedHandler(app as never));
  app.use(errorHandler(logger));
  return app;
}
