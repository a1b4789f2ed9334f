/**
 * Authentication of the Client-Server API for application services, with Synapse's conventions:
 * the as_token in `Authorization: Bearer` or the `access_token` query parameter (not both),
 * `user_id` to act as a registered user of the service's namespaces (or its sender), and
 * registrations with `rate_limited: true` limited per acting user.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { NextFunction, Request, Response } from "express";
import { MatrixError, forbidden, limitExceeded } from "../protocol/errors.js";
import { isValidUserId, serverOfUserId } from "../protocol/ids.js";
import type { AppserviceRegistration } from "../appservice/registration.js";
import type { AppserviceRegistry } from "../appservice/registry.js";
import type { AppserviceAccounts } from "../appservice/accounts.js";
import type { RateLimiter, BucketSettings } from "../http/rate-limit.js";

declare module "express-serve-static-core" {
  interface Request {
    /** The application service whose as_token authenticated the request (client API). */
    appservice?: AppserviceRegistration;
    /** The user the request acts as: `user_id`, or the service's sender (client API). */
    userId?: string;
  }
}

/** The access token of a request, or undefined; 401 M_MISSING_TOKEN when header and query disagree. */
export function accessToken(req: Request): string | undefined {
  const header = req.headers.authorization;
  const fromHeader = typeof header === "string" && /^Bearer\s+/i.test(header) ? header.replace(/^Bearer\s+/i, "").trim() : undefined;
  const q = req.query.access_token;
  if (Array.isArray(q)) throw new MatrixError(401, "M_MISSING_TOKEN", "access_token must be given once");
  const fromQuery = typeof q === "string" ? q : undefined;
  if (fromHeader !== undefined && fromQuery !== undefined)
    throw new MatrixError(401, "M_MISSING_TOKEN", "Mixing Authorization headers and access_token query parameters");
  return fromHeader ?? fromQuery;
}

function sameToken(a: string, b: string): boolean {
  return timingSafeEqual(createHash("sha256").update(a).digest(), createHash("sha256").update(b).digest());
}

export interface ClientAuthDeps {
  registry: AppserviceRegistry;
  accounts: AppserviceAccounts;
  limiter: RateLimiter;
  rateLimit: BucketSettings;
}

export function requireAppserviceToken(deps: ClientAuthDeps) {
  return (req: Request, _res: Response, next: NextFunction): void => {
    Promise.resolve()
      .then(async () => {
        const token = accessToken(req);
        if (token === undefined) throw new MatrixError(401, "M_MISSING_TOKEN", "Missing access token");
        // Every registration is compared, in constant time each.
        const reg = deps.registry.all.find((r) => sameToken(r.asToken, token));
        if (!reg) throw new MatrixError(401, "M_UNKNOWN_TOKEN", "Unrecognised access token");
        const sender = deps.registry.senderOf(reg);
        const q = req.query.user_id;
        let userId = sender;
        if (q !== undefined) {
          if (typeof q !== "string" || !isValidUserId(q)) throw forbidden("user_id is not a valid user ID");
          if (serverOfUserId(q) !== deps.registry.serverName) throw forbidden(`${q} is not a user on ${deps.registry.serverName}`);
          if (!deps.registry.mayMasquerade(reg, q)) throw forbidden(`Application service ${reg.id} cannot masquerade as ${q}`);
          // Registering is how a user comes to exist (Synapse ignores user_id there too).
          const registering = req.method === "POST" && /^\/(?:v3|r0)\/register$/.test(req.path);
          if (q !== sender && !registering && (await deps.accounts.ownerOf(q)) === null) throw forbidden(`Application service has not registered ${q}`);
          userId = q;
        }
        req.appservice = reg;
        req.userId = userId;
        if (reg.rateLimited) {
          const wait = await deps.limiter.take("client", userId, deps.rateLimit).catch(() => 0);
          if (wait > 0) throw limitExceeded(wait);
        }
      })
      .then(() => next(), next);
  };
}

/**
 * `ts` (timestamp massaging): an application service may set origin_server_ts of the events it
 * sends. Undefined when absent; 400 M_INVALID_PARAM when not a non-negative integer.
 */
export function massagedTs(req: Request): number | undefined {
  const ts = req.query.ts;
  if (ts === undefined) return undefined;
  if (typeof ts !== "string" || !/^\d{1,16}$/.test(ts) || !Number.isSafeInteger(Number(ts))) throw new MatrixError(400, "M_INVALID_PARAM", "ts must be a timestamp in milliseconds");
  return Number(ts);
}
