/**
 * Strict validation of rendered Kubernetes objects against the Kubernetes API's own schemas.
 *
 * The schemas come from the npm package `kubernetes-models` (3.x), which ships the definitions of
 * the Kubernetes OpenAPI document as JSON Schema objects (one module per definition under
 * `_schemas/`, each registering itself and the definitions it references). No npm package ships
 * the kubeconform/kubeval JSON files themselves, and the newer kubernetes-models majors ship only
 * precompiled, non-strict validators, hence this major.
 *
 * Kubernetes itself ignores unknown fields unless asked, but `kubectl apply` validates strictly
 * (`--validate=strict` is the default since 1.27), so a misplaced key (a setting under
 * `metadata:`) is refused. We do what kubeconform's `-strict` / openapi2jsonschema's `--strict`
 * flavour does: every object schema that lists `properties` gets `additionalProperties: false`,
 * then the tree is compiled with Ajv. Objects of kinds the package does not describe (CRDs such
 * as ServiceMonitor) are reported to the caller, which must check them another way.
 */
import { createRequire } from "node:module";
import { readdirSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { Ajv, type ErrorObject } from "ajv";
import addFormatsPlugin from "ajv-formats";
import type { K8sObject } from "./kustomize.js";

const require = createRequire(import.meta.url);
/** A package's folder (their `exports` hide package.json): up from a resolvable entry point. */
function packageDir(req: NodeRequire, entry: string, name: string): string {
  let dir = dirname(req.resolve(entry));
  while (!existsSync(join(dir, "package.json")) || (require(join(dir, "package.json")) as { name?: string }).name !== name) {
    if (dirname(dir) === dir) throw new Error(`cannot find the folder of ${name}`);
    dir = dirname(dir);
  }
  return dir;
}
const modelsDir = packageDir(require, "kubernetes-models/v1/ConfigMap", "kubernetes-models");
const requireFromModels = createRequire(join(modelsDir, "package.json"));
/** @kubernetes-models/validate keeps the registered schemas in one Ajv instance (dist/ajv.js). */
const validateDir = packageDir(requireFromModels, "@kubernetes-models/validate", "@kubernetes-models/validate");
const registry = require(join(validateDir, "dist", "ajv.js")) as {
  ajv: { schemas: Record<string, { schema: unknown }> };
};

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonMap = { [k: string]: Json };

/** The definition module of a top-level kind: apps/v1 Deployment → IoK8sApiAppsV1Deployment. */
function moduleName(apiVersion: string, kind: string): string {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["core", apiVersion];
  const cap = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);
  return `IoK8sApi${cap(group!.split(".")[0]!)}${cap(version!)}${kind}`;
}

/** openapi2jsonschema --strict: refuse properties a definition does not list. */
function strict(node: Json): Json {
  if (Array.isArray(node)) return node.map(strict);
  if (node === null || typeof node !== "object") return node;
  const out: JsonMap = {};
  for (const [k, v] of Object.entries(node)) out[k] = k === "enum" ? v : strict(v);
  if (out.properties && typeof out.properties === "object" && !("additionalProperties" in out)) out.additionalProperties = false;
  return out;
}

const schemaFiles = new Set(readdirSync(join(modelsDir, "_schemas")).filter((f) => f.endsWith(".js")).map((f) => f.slice(0, -3)));

export interface SchemaCheck {
  /** Problems per object ("Kind/name: path message"); empty when all described objects are valid. */
  problems: string[];
  /** Objects whose kind the Kubernetes schemas do not describe (custom resources). */
  unknownKinds: K8sObject[];
  /** How many objects were validated against a schema. */
  validated: number;
}

export class KubernetesSchemas {
  private readonly ajv: Ajv;
  private readonly added = new Set<string>();

  constructor() {
    this.ajv = new Ajv({ strict: false, allErrors: true, validateFormats: true });
    (addFormatsPlugin as unknown as (a: Ajv) => void)(this.ajv);
    this.ajv.addFormat("int-or-string", true);
    this.ajv.addFormat("byte", /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/);
    this.ajv.addFormat("quantity", /^[+-]?(?:\d+|\d+\.\d+|\d+\.|\.\d+)(?:[KMGTPE]i|[YZEPTGMkhdcmunpfazy]|da|[eE][+-]?(?:\d+|\d+\.\d+|\d+\.|\.\d+))?$/);
    this.ajv.addFormat("int32", { type: "number", validate: (n: number) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 });
    this.ajv.addFormat("int64", { type: "number", validate: (n: number) => Number.isInteger(n) });
    this.ajv.addFormat("double", { type: "number", validate: () => true });
  }

  /** Whether the Kubernetes schemas describe this kind (else it is a custom resource). */
  describes(apiVersion: string, kind: string): boolean {
    return schemaFiles.has(moduleName(apiVersion, kind));
  }

  private schemaId(apiVersion: string, kind: string): string {
    const mod = moduleName(apiVersion, kind);
    (require(join(modelsDir, "_schemas", `${mod}.js`)) as { addSchema(): void }).addSchema();
    for (const [id, entry] of Object.entries(registry.ajv.schemas)) {
      if (this.added.has(id) || this.ajv.getSchema(id)) continue;
      this.ajv.addSchema(strict(entry.schema as Json) as object, id);
      this.added.add(id);
    }
    const ids = Object.keys(registry.ajv.schemas).filter((id) => id.endsWith(`.${kind}`));
    const id = ids.find((i) => {
      const props = (registry.ajv.schemas[i]!.schema as { properties?: { apiVersion?: { enum?: string[] }; kind?: { enum?: string[] } } }).properties;
      return props?.apiVersion?.enum?.includes(apiVersion) && props.kind?.enum?.includes(kind);
    });
    if (!id) throw new Error(`${mod} registers no schema for ${apiVersion} ${kind}`);
    return id;
  }

  validate(objects: K8sObject[]): SchemaCheck {
    const problems: string[] = [];
    const unknownKinds: K8sObject[] = [];
    let validated = 0;
    for (const o of objects) {
      if (!this.describes(o.apiVersion, o.kind)) {
        unknownKinds.push(o);
        continue;
      }
      const v = this.ajv.getSchema(this.schemaId(o.apiVersion, o.kind))!;
      validated++;
      if (!v(o)) problems.push(...(v.errors ?? []).map((e) => `${o.kind}/${o.metadata.name}: ${describe(e)}`));
    }
    return { problems: dedupe(problems), unknownKinds, validated };
  }
}

function describe(e: ErrorObject): string {
  const where = e.instancePath || "/";
  if (e.keyword === "additionalProperties") return `${where} has unknown field "${(e.params as { additionalProperty: string }).additionalProperty}"`;
  return `${where} ${e.message ?? e.keyword}${e.keyword === "enum" ? ` ${JSON.stringify((e.params as { allowedValues: unknown }).allowedValues)}` : ""}`;
}

/** oneOf [$ref, null] reports the same problem twice plus a oneOf summary; keep the useful lines. */
function dedupe(lines: string[]): string[] {
  const seen = new Set<string>();
  return lines.filter((l) => !/must match exactly one schema in oneOf|must be null/.test(l) && !seen.has(l) && !!seen.add(l));
}
