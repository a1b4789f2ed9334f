/**
 * GET /_matrix/key/v2/server (and the legacy /{keyId} form Synapse still answers): our signed key
 * document. Unauthenticated; Synapse signs these requests anyway, so an Authorization header is
 * ignored rather than rejected.
 */
import { Router } from "express";
import type { OwnKeys } from "../keys/own-keys.js";

export function keysRouter(ownKeys: OwnKeys, clock: () => number): Router {
  const router = Router();
  const serve = (_req: unknown, res: import("express").Response) => {
    const { body } = ownKeys.keyDocument(clock());
    res.setHeader("Content-Type", "application/json");
    res.setHeader("Cache-Control", "public, max-age=3600");
    res.end(body);
  };
  router.get("/_matrix/key/v2/server", serve);
  router.get("/_matrix/key/v2/server/:keyId", serve);
  return router;
}
