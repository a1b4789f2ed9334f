/**
 * X-Matrix authentication for federation endpoints, once, at the edge: parse every
 * Authorization header, fetch the origin's keys (valid now), verify the signed request object
 * over the raw request target and the parsed body, and record the authenticated origin.
 */
import type { NextFunction, Request, Response } from "express";
import { parseXMatrixHeaders, verifyRequest, type XMatrixAuth } from "../protocol/x-matrix.js";
import { badJson, MatrixError, unauthorized } from "../protocol/errors.js";
import { findNonCanonicalNumber } from "../protocol/canonical-json.js";
import type { Ed25519Verifier } from "../protocol/ed25519.js";
import type { RemoteKeys } from "../keys/remote-keys.js";

declare module "express-serve-static-core" {
  interface Request {
    /** The authenticated requesting server (set by requireXMatrix). */
    origin?: string;
  }
}

export function requireXMatrix(opts: { serverName: string; remoteKeys: RemoteKeys; onFailure?: (reason: string) => void }) {
  return (req: Request, _res: Response, next: NextFunction): void => {
    authenticate(req, opts).then(
      (origin) => {
        req.origin = origin;
        next();
      },
      (err) => {
        if (err instanceof MatrixError) opts.onFailure?.(err.errcode);
        next(err);
      },
    );
  };
}

async function authenticate(req: Request, opts: { serverName: string; remoteKeys: RemoteKeys }): Promise<string> {
  const headers = req.headersDistinct?.authorization;
  if (!headers || headers.length === 0) throw unauthorized("Missing Authorization header");
  const auths: XMatrixAuth[] = [];
  for (const parsed of parseXMatrixHeaders(headers)) {
    if (!parsed.ok) throw parsed.error;
    auths.push(parsed.auth);
  }
  // Floats and out-of-range integers have no canonical form, so no signature can cover them.
  if (req.rawBody) {
    const problem = findNonCanonicalNumber(req.rawBody);
    if (problem) throw badJson(`Request body is not canonical JSON: ${problem}`);
  }
  const verifiers = new Map<string, Ed25519Verifier>();
  for (const a of auths) {
    const found = await opts.remoteKeys.getVerifier(a.origin, a.key);
    if (found) verifiers.set(`${a.origin}\u0000${a.key}`, found.verifier);
  }
  if (verifiers.size === 0) {
    throw unauthorized(`Failed to find any key to satisfy ${auths.map((a) => `${a.origin} ${a.key}`).join(", ")}`);
  }
  const result = verifyRequest(
    auths,
    { method: req.method, uri: req.originalUrl, content: req.body },
    (entity, keyId) => verifiers.get(`${entity}\u0000${keyId}`),
    opts.serverName,
  );
  if (!result.ok) throw result.error;
  return result.origin;
}
