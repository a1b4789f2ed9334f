// The OpenAPI contract (openapi/gatehouse.yaml): structurally valid OpenAPI 3.1, every schema
// compiles under Ajv's strict mode, the served JSON copy is up to date, and the document and the
// Express apps agree route for route (every registered route is documented and vice versa).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import type { Express, Router } from "express";
import { Redis } from "ioredis";
import { Registry } from "prom-client";
import { validate, compileErrors } from "@readme/openapi-parser";
import { loadOpenApi, openApiContract, HTTP_METHODS, OPENAPI_FILE } from "../support/openapi.js";
import { TestGatehouse, requireRedisUrl } from "../support/gatehouse.js";
import { opsApp } from "../../src/http/ops.js";
import { wellKnownRouter } from "../../src/federation/well-known-routes.js";
import { openapiRouter, OPENAPI_JSON_PATH, OPENAPI_YAML_PATH } from "../../src/admin/openapi-route.js";
import { renderOpenApiJson, OPENAPI_JSON } from "../../scripts/openapi-json.js";

const doc = loadOpenApi();

/** `METHOD /templated/{path}` for every operation of the document. */
function documentedRoutes(): Set<string> {
  const out = new Set<string>();
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const m of HTTP_METHODS) if (item[m]) out.add(`${m.toUpperCase()} ${path}`);
  }
  return out;
}

/**
 * Express 5 route paths in OpenAPI form: `:name` → `{name}`; an optional group `{/:name}` gives
 * two paths (with and without it). Other path syntax is refused so the test notices.
 */
export function expressPathToOpenApi(path: string): string[] {
  const optional = /\{([^{}]*)\}/.exec(path);
  if (optional) {
    const before = path.slice(0, optional.index);
    const after = path.slice(optional.index + optional[0].length);
    return [...expressPathToOpenApi(before + after), ...expressPathToOpenApi(before + optional[1] + after)];
  }
  if (/[*()?+]/.test(path)) throw new Error(`route path syntax not handled by the OpenAPI check: ${path}`);
  return [path.replace(/:([A-Za-z0-9_]+)/g, "{$1}")];
}

interface Layer {
  route?: { path: string | string[]; methods: Record<string, boolean> };
  handle?: { stack?: Layer[] };
  slash?: boolean;
  name?: string;
}

/** Every (method, path) route registered on an app or router, including nested routers. */
function registeredRoutes(appOrRouter: Express | Router): Set<string> {
  const out = new Set<string>();
  const stackOf = (x: unknown): Layer[] => {
    const r = x as { router?: { stack: Layer[] }; stack?: Layer[] };
    return r.router?.stack ?? r.stack ?? [];
  };
  const walk = (stack: Layer[]) => {
    for (const layer of stack) {
      if (layer.route) {
        const paths = Array.isArray(layer.route.path) ? layer.route.path : [layer.route.path];
        for (const p of paths) {
          for (const [m, on] of Object.entries(layer.route.methods)) {
            if (!on) continue;
            assert.notEqual(m, "_all", `app.all() route ${p} cannot be documented per method`);
            for (const oa of expressPathToOpenApi(p)) out.add(`${m.toUpperCase()} ${oa}`);
          }
        }
      } else if (layer.handle?.stack) {
        // A nested router: only mounted at the root ("/") is understood here.
        assert.ok(layer.slash, `a router is mounted under a path prefix (${layer.name}); extend registeredRoutes`);
        walk(layer.handle.stack);
      }
    }
  };
  walk(stackOf(appOrRouter));
  return out;
}

describe("OpenAPI document", () => {
  test("is a valid OpenAPI 3.1 document (@readme/openapi-parser)", async () => {
    assert.match(doc.openapi, /^3\.1\./);
    const result = await validate(structuredClone(doc) as never);
    assert.ok(result.valid, result.valid ? "" : compileErrors(result));
    assert.deepEqual(result.warnings, []);
  });

  test("every request and response schema compiles under Ajv 2020-12 strict mode", () => {
    const contract = openApiContract();
    const pointers = contract.schemaPointers();
    assert.ok(pointers.length > 100, `only ${pointers.length} schemas found`);
    for (const p of pointers) assert.doesNotThrow(() => contract.compile(p), `schema at ${p}`);
  });

  test("openapi/gatehouse.json (served at /_gatehouse/openapi.json) matches the YAML", () => {
    const want = renderOpenApiJson(readFileSync(OPENAPI_FILE, "utf8"));
    let have = "";
    try {
      have = readFileSync(OPENAPI_JSON, "utf8");
    } catch {
      // missing
    }
    assert.ok(have === want, "openapi/gatehouse.json is stale: run `node --import tsx scripts/openapi-json.ts`");
  });

  test("the error code enum lists exactly the errcodes of src/protocol/errors.ts", () => {
    const source = readFileSync(new URL("../../src/protocol/errors.ts", import.meta.url), "utf8");
    const union = /export type Errcode =([^;]+);/.exec(source)![1]!;
    const declared = [...union.matchAll(/"(M_[A-Z_]+)"/g)].map((m) => m[1]!);
    const documented = ((doc.components!.schemas as Record<string, { enum: string[] }>).Errcode!).enum;
    assert.deepEqual([...documented].sort(), [...new Set(declared)].sort());
  });

  test("operations declare servers, security and the errors every request can meet", () => {
    const problems: string[] = [];
    for (const [path, item] of Object.entries(doc.paths)) {
      const servers = (item.servers ?? []) as { url: string }[];
      if (servers.length !== 1) problems.push(`${path}: one listener expected in servers`);
      for (const m of HTTP_METHODS) {
        const op = item[m] as { security?: unknown[]; responses: Record<string, unknown>; requestBody?: unknown; operationId?: string } | undefined;
        if (!op) continue;
        const name = `${m.toUpperCase()} ${path}`;
        if (!op.operationId) problems.push(`${name}: no operationId`);
        if (!Array.isArray(op.security)) problems.push(`${name}: security not declared`);
        const codes = Object.keys(op.responses);
        const federated = path.startsWith("/_matrix/federation/") && path !== "/_matrix/federation/v1/version";
        const admin = path.startsWith("/_gatehouse/admin/");
        const client = path.startsWith("/_matrix/client/") && path !== "/_matrix/client/versions";
        if (federated) {
          if (JSON.stringify(op.security) !== JSON.stringify([{ XMatrix: [] }])) problems.push(`${name}: must require XMatrix`);
          for (const c of ["400", "401", "429", "500"]) if (!codes.includes(c)) problems.push(`${name}: no ${c}`);
          if (!servers[0]?.url.startsWith("https://")) problems.push(`${name}: not on the federation listener`);
        } else if (admin) {
          if (JSON.stringify(op.security) !== JSON.stringify([{ AdminToken: [] }])) problems.push(`${name}: must require AdminToken`);
          for (const c of ["401", "500"]) if (!codes.includes(c)) problems.push(`${name}: no ${c}`);
        } else if (client) {
          if (JSON.stringify(op.security) !== JSON.stringify([{ AsToken: [] }])) problems.push(`${name}: must require AsToken`);
          for (const c of ["401", "429", "500"]) if (!codes.includes(c)) problems.push(`${name}: no ${c}`);
          if (!servers[0]?.url.includes("{clientHost}")) problems.push(`${name}: not on the client listener`);
        } else if (JSON.stringify(op.security) !== "[]") problems.push(`${name}: unauthenticated endpoint must say security: []`);
        if (op.requestBody && !codes.includes("413")) problems.push(`${name}: takes a body but documents no 413`);
        if (!path.startsWith("/health/") && !codes.includes("500")) problems.push(`${name}: no 500`);
        for (const c of codes) {
          if (c !== "default" && !/^[1-5](\d\d|XX)$/.test(c)) problems.push(`${name}: bad status key ${c}`);
        }
      }
    }
    assert.deepEqual(problems, []);
  });
});

describe("OpenAPI document ↔ Express routes", () => {
  let t: TestGatehouse;
  let redis: Redis;
  before(async () => {
    t = await TestGatehouse.start({ name: "openapi-routes" });
    redis = new Redis(requireRedisUrl(), { lazyConnect: true });
  });
  after(async () => {
    await t.cleanup();
    redis.disconnect();
  });

  test("every registered route is documented, and every documented operation is registered", () => {
    const registered = new Set<string>([
      ...registeredRoutes(t.gh.federationApp),
      ...registeredRoutes(t.gh.adminApp),
      ...registeredRoutes(t.gh.clientApp),
      // Registered only when GATEHOUSE_WELL_KNOWN_SERVER is set.
      ...registeredRoutes(wellKnownRouter("federation.example.org:443")),
      ...registeredRoutes(opsApp(new Registry(), redis, { starting: false, shuttingDown: false })),
      // Mounted on the admin listener by app.ts (adminApp.use(openapiRouter())).
      ...registeredRoutes(openapiRouter()),
    ]);
    assert.ok(registered.size >= 50, `only ${registered.size} routes found: is the Express introspection still right?`);
    const documented = documentedRoutes();
    const undocumented = [...registered].filter((r) => !documented.has(r)).sort();
    const unregistered = [...documented].filter((r) => !registered.has(r)).sort();
    assert.deepEqual(undocumented, [], "routes registered in Express but missing from openapi/gatehouse.yaml");
    assert.deepEqual(unregistered, [], "operations in openapi/gatehouse.yaml that no Express app registers");
  });

  test("the document serves itself on the admin listener", () => {
    const admin = registeredRoutes(openapiRouter());
    assert.ok(admin.has(`GET ${OPENAPI_YAML_PATH}`) && admin.has(`GET ${OPENAPI_JSON_PATH}`));
  });

  test("expressPathToOpenApi expands optional groups", () => {
    assert.deepEqual(expressPathToOpenApi("/a/:roomId/state/:type{/:stateKey}"), ["/a/{roomId}/state/{type}", "/a/{roomId}/state/{type}/{stateKey}"]);
  });
});
