/**
 * GET /_gatehouse/openapi.yaml and /_gatehouse/openapi.json on the admin listener, without
 * authentication: the OpenAPI contract of every listener (openapi/gatehouse.yaml).
 *
 * The JSON form is generated from the YAML (`node --import tsx scripts/openapi-json.ts`; test/unit/openapi.test.ts
 * fails when it is stale), so serving it needs no YAML parser at run time. Both files are read on
 * first request and kept; a missing file is a 500 for this route only, never a failed start.
 */
import { readFile } from "node:fs/promises";
import { Router, type Request, type Response } from "express";
import { route } from "../http/errors.js";

export const OPENAPI_YAML_PATH = "/_gatehouse/openapi.yaml";
export const OPENAPI_JSON_PATH = "/_gatehouse/openapi.json";

const YAML_FILE = new URL("../../openapi/gatehouse.yaml", import.meta.url);
const JSON_FILE = new URL("../../openapi/gatehouse.json", import.meta.url);

export function openapiRouter(): Router {
  const router = Router();
  const cache = new Map<string, Promise<Buffer>>();
  const load = (file: URL): Promise<Buffer> => {
    let p = cache.get(file.href);
    if (!p) {
      p = readFile(file);
      // Do not cache a failure: the file may be put in place later.
      p.catch(() => cache.delete(file.href));
      cache.set(file.href, p);
    }
    return p;
  };
  const serve = (file: URL, contentType: string) =>
    route(async (_req: Request, res: Response) => {
      const body = await load(file);
      res.setHeader("Content-Type", contentType);
      res.setHeader("Cache-Control", "no-cache");
      res.end(body);
    });
  router.get(OPENAPI_YAML_PATH, serve(YAML_FILE, "application/yaml; charset=utf-8"));
  router.get(OPENAPI_JSON_PATH, serve(JSON_FILE, "application/json; charset=utf-8"));
  return router;
}
