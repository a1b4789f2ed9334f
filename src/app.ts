/**
 * The composition root: the shared core (src/core.ts) plus one Express app per listener, each
 * built by its own module. Nothing else constructs services.
 */
import type { Express } from "express";
import { buildCore, type Core, type CoreOptions } from "./core.js";
import { buildFederationApp } from "./federation/app.js";
import { buildAdminApp } from "./admin/app.js";
import { buildClientApp } from "./client/app.js";

export interface GatehouseOptions extends CoreOptions {
  adminToken: string;
}

export interface Gatehouse extends Core {
  federationApp: Express;
  adminApp: Express;
  /** The Client-Server API for application services (GATEHOUSE_CLIENT_LISTEN). */
  clientApp: Express;
}

export function buildGatehouse(opts: GatehouseOptions): Gatehouse {
  const core = buildCore(opts);
  return {
    ...core,
    federationApp: buildFederationApp(core),
    adminApp: buildAdminApp(core, opts.adminToken),
    clientApp: buildClientApp(core),
  };
}
