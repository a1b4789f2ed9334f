/**
 * X-Matrix authentication for federation endpoints, once, at the edge: parse every
 * Authorization header, fetch the origin's keys (valid now), verify the signed request object
 * over the raw request target and the parsed body, and record the authenticated origin.
 */
import type { NextFunction, Request, Response } from "express";
import { checkAuthHeaders, parseXMatrixHeaders, verifyRequest, type XMatrixAuth } from "../protocol/x-matrix.js";
import { badJson, MatrixError, unauthorized } from "../protocol/errors.js";
import { findNonCanonicalNumber } from "../protocol/canonical-json.js";
import type { Ed25519Verifier } from "../protocol/ed25519.js";
import type { RemoteKeys } from "../keys/remote-keys.js";
import { createHash } from "node:crypto";
import { Lru } from "../store/state-cache.js";

declare module "express-serve-static-core" {
  interface Request {
    /** The authenticated requesting server (set by requireXMatrix). */
    origin?: string;
  }
}

/**
 * Requests whose X-Matrix signature already verified, by a hash of everything the verification
 * covers (method, raw target, raw Authorization headers, raw body) → the origin and key that
 * verified. X-Matrix has no nonce, so a retried or replayed request is byte-identical and would
 * verify again: the hit skips only the ed25519 work; the key must still be usable (looked up as
 * always) and the destination check is part of the hashed header.
 */
const VERIFIED_CACHE_SIZE = 10_000;

interface VerifiedRequest {
  origin: string;
  keyId: string;
  /** The verifier's key bytes (identity is enough: RemoteKeys reuses one verifier per key). */
  publicKey: Uint8Array;
}

export function requireXMatrix(opts: {
  serverName: string;
  remoteKeys: RemoteKeys;
  onFailure?: (reason: string) => void;
  /** Each authenticated request's origin (the sender clears a destination's backoff: it is up). */
  onAuthenticated?: (origin: string) => void;
}) {
  const verified = new Lru<string, VerifiedRequest>(VERIFIED_CACHE_SIZE);
  return (req: Request, _res: Response, next: NextFunction): void => {
    authenticate(req, opts, verified).then(
      (origin) => {
        req.origin = origin;
        opts.onAuthenticated?.(origin);
        next();
      },
      (err) => {
        if (err instanceof MatrixError) opts.onFailure?.(err.errcode);
        next(err);
      },
    );
  };
}

async function authenticate(req: Request, opts: { serverName: string; remoteKeys: RemoteKeys }, cache: Lru<string, VerifiedRequest>): Promise<string> {
  const headers = req.headersDistinct?.authorization;
  if (!headers || headers.length === 0) throw unauthorized("Missing Authorization header");
  const auths: XMatrixAuth[] = [];
  for (const parsed of parseXMatrixHeaders(headers)) {
    if (!parsed.ok) throw parsed.error;
    auths.push(parsed.auth);
  }
  // Several headers must agree (one origin, addressed to us) before any key is fetched.
  const headerError = checkAuthHeaders(auths, opts.serverName);
  if (headerError) throw headerError;
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
  const cacheKey = createHash("sha256")
    .update(`${req.method}\n${req.originalUrl}\n${headers.join("\n")}\n`)
    .update(req.rawBody ?? "")
    .digest("base64");
  const hit = cache.get(cacheKey);
  // The very key that verified must still be the one we know under that ID (not just the ID).
  if (hit && verifiers.get(`${hit.origin}\u0000${hit.keyId}`)?.publicKey === hit.publicKey) return hit.origin;
  const result = verifyRequest(
    auths,
    { method: req.method, uri: req.originalUrl, content: req.body },
    (entity, keyId) => verifiers.get(`${entity}\u0000${keyId}`),
    opts.serverName,
  );
  if (!result.ok) throw result.error;
  const usedKey = verifiers.get(`${result.origin}\u0000${result.keyId}`)!.publicKey;
  cache.set(cacheKey, { origin: result.origin, keyId: result.keyId, publicKey: usedKey });
  return result.origin;
}
