import { Router } from "express";
import { readFileSync } from "node:fs";

const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
export const GATEHOUSE_VERSION = pkg.version;

/** GET /_matrix/federation/v1/version: unauthenticated, free-form name and version. */
export function versionRouter(): Router {
  const router = Router();
  const body = JSON.stringify({ server: { name: "Gatehouse", version: GATEHOUSE_VERSION } });
  router.get("/_matrix/federation/v1/version", (_req, res) => {
    res.setHeader("Content-Type", "application/json");
    res.end(body);
  });
  return router;
}
