/**
 * The OpenAPI contract (openapi/gatehouse.yaml) for tests: load it, find the operation for a
 * request, and validate a real response body against the documented schema with Ajv (JSON Schema
 * 2020-12, the dialect of OpenAPI 3.1).
 *
 *   validateResponse("GET", "/_matrix/federation/v1/event/%24abc", 200, res.body)
 *
 * throws an AssertionError naming the operation and listing every schema error when the body does
 * not match, or when the document has no such operation or status.
 */
import { readFileSync } from "node:fs";
import { AssertionError } from "node:assert";
import { parse } from "yaml";
import { Ajv2020, type ErrorObject, type ValidateFunction } from "ajv/dist/2020.js";
import addFormatsPlugin from "ajv-formats";

export const OPENAPI_FILE = new URL("../../openapi/gatehouse.yaml", import.meta.url);

export const HTTP_METHODS = ["get", "put", "post", "delete", "patch", "head", "options", "trace"] as const;
export type HttpMethod = (typeof HTTP_METHODS)[number];

type Json = Record<string, unknown>;

export interface OpenApiDocument {
  openapi: string;
  paths: Record<string, Record<string, unknown>>;
  components?: Json;
  [key: string]: unknown;
}

/** The document as the YAML parses (a fresh object on every call: validators may mutate it). */
export function loadOpenApi(): OpenApiDocument {
  return parse(readFileSync(OPENAPI_FILE, "utf8"), { maxAliasCount: -1 }) as OpenApiDocument;
}

export interface OperationMatch {
  /** The templated path of the document, e.g. `/_matrix/federation/v1/event/{eventId}`. */
  template: string;
  method: HttpMethod;
  operation: Json;
  /** Path parameters, percent-decoded. */
  params: Record<string, string>;
}

const DOC_ID = "urn:gatehouse:openapi";

/** JSON Pointer escaping of one reference token. */
const pointerToken = (s: string) => s.replace(/~/g, "~0").replace(/\//g, "~1");

class Contract {
  readonly doc: OpenApiDocument;
  private readonly ajv: Ajv2020;
  private readonly compiled = new Map<string, ValidateFunction>();
  /** [template, segments] sorted most specific first (more literal segments win). */
  private readonly templates: { template: string; segments: string[] }[];

  constructor(doc: OpenApiDocument) {
    this.doc = doc;
    this.ajv = new Ajv2020({ allErrors: true, strict: true, strictTypes: false, strictRequired: false, validateFormats: true });
    const addFormats = ((addFormatsPlugin as unknown as { default?: unknown }).default ?? addFormatsPlugin) as unknown as (ajv: Ajv2020) => void;
    addFormats(this.ajv);
    // The document is added whole so that `#/components/...` references resolve; the OpenAPI
    // keywords around the schemas are declared so strict mode accepts them, and are not walked.
    this.ajv.addVocabulary(["openapi", "info", "servers", "paths", "components", "tags", "security", "webhooks", "jsonSchemaDialect", "externalDocs"]);
    this.ajv.addSchema({ ...doc, $id: DOC_ID });
    this.templates = Object.keys(doc.paths)
      .map((template) => ({ template, segments: template.split("/") }))
      .sort((a, b) => literalCount(b.segments) - literalCount(a.segments));
  }

  /** The operation for `method` and a concrete request path (query string ignored). */
  findOperation(method: string, path: string): OperationMatch | null {
    const m = method.toLowerCase() as HttpMethod;
    const concrete = path.split("?")[0]!.split("/");
    for (const { template, segments } of this.templates) {
      if (segments.length !== concrete.length) continue;
      const params: Record<string, string> = {};
      let ok = true;
      for (let i = 0; i < segments.length && ok; i++) {
        const seg = segments[i]!;
        const got = concrete[i]!;
        const param = /^\{([^}]+)\}$/.exec(seg);
        if (param) {
          if (got === "") ok = false;
          else params[param[1]!] = safeDecode(got);
        } else if (seg !== got) ok = false;
      }
      if (!ok) continue;
      const operation = this.doc.paths[template]![m] as Json | undefined;
      if (operation) return { template, method: m, operation, params };
    }
    return null;
  }

  validateResponse(method: string, path: string, status: number, body: unknown, contentType?: string): OperationMatch {
    const where = `${method.toUpperCase()} ${path} → ${status}`;
    const match = this.findOperation(method, path);
    if (!match) throw new AssertionError({ message: `OpenAPI: no operation for ${method.toUpperCase()} ${path.split("?")[0]}`, actual: path });
    const responses = (match.operation.responses ?? {}) as Record<string, Json>;
    const statusKey = [String(status), `${String(status)[0]}XX`, "default"].find((k) => k in responses);
    if (!statusKey) {
      throw new AssertionError({
        message: `OpenAPI: ${match.method.toUpperCase()} ${match.template} documents no response ${status} (has ${Object.keys(responses).join(", ")}); body ${JSON.stringify(body)?.slice(0, 500)}`,
        actual: status,
        expected: Object.keys(responses),
      });
    }
    let response = responses[statusKey]!;
    let responsePointer = `#/paths/${pointerToken(match.template)}/${match.method}/responses/${pointerToken(statusKey)}`;
    // A response may be a reference to components/responses.
    if (typeof response.$ref === "string") {
      responsePointer = response.$ref;
      response = resolvePointer(this.doc, response.$ref) as Json;
    }
    const content = (response.content ?? {}) as Record<string, Json>;
    const mediaTypes = Object.keys(content);
    if (mediaTypes.length === 0) {
      if (body !== undefined && body !== "" && !(isPlainObject(body) && Object.keys(body).length === 0))
        throw new AssertionError({ message: `OpenAPI: ${where} documents no body, got ${JSON.stringify(body)?.slice(0, 300)}` });
      return match;
    }
    const wanted = contentType?.split(";")[0]!.trim().toLowerCase();
    const mediaType = wanted ? mediaTypes.find((t) => t === wanted) : mediaTypes.includes("application/json") ? "application/json" : mediaTypes[0];
    if (!mediaType) {
      throw new AssertionError({ message: `OpenAPI: ${where}: content type ${wanted} is not documented (${mediaTypes.join(", ")})`, actual: wanted, expected: mediaTypes });
    }
    if (!("schema" in content[mediaType]!)) return match;
    const pointer = `${responsePointer}/content/${pointerToken(mediaType)}/schema`;
    const validate = this.validator(pointer);
    if (!validate(body)) {
      throw new AssertionError({
        message: `OpenAPI: ${where} (${match.method.toUpperCase()} ${match.template}, ${statusKey}, ${mediaType}) does not match the schema:\n${formatErrors(validate.errors ?? [])}\nbody: ${JSON.stringify(body)?.slice(0, 2000)}`,
        actual: body,
      });
    }
    return match;
  }

  /**
   * JSON Pointers of every schema in the document that Ajv must compile: component schemas and
   * each operation's request and response bodies (references to components included once).
   */
  schemaPointers(): string[] {
    const out = new Set<string>();
    const schemas = ((this.doc.components?.schemas ?? {}) as Json);
    for (const name of Object.keys(schemas)) out.add(`#/components/schemas/${pointerToken(name)}`);
    const addContent = (base: string, holder: Json) => {
      if (typeof holder.$ref === "string") {
        addContent(holder.$ref, resolvePointer(this.doc, holder.$ref) as Json);
        return;
      }
      for (const [type, media] of Object.entries((holder.content ?? {}) as Record<string, Json>)) {
        if ("schema" in media) out.add(`${base}/content/${pointerToken(type)}/schema`);
      }
    };
    for (const [template, item] of Object.entries(this.doc.paths)) {
      for (const method of HTTP_METHODS) {
        const op = item[method] as Json | undefined;
        if (!op) continue;
        const base = `#/paths/${pointerToken(template)}/${method}`;
        if (op.requestBody) addContent(`${base}/requestBody`, op.requestBody as Json);
        for (const [status, response] of Object.entries((op.responses ?? {}) as Record<string, Json>)) {
          addContent(`${base}/responses/${pointerToken(status)}`, response);
        }
      }
    }
    return [...out];
  }

  /** Compiles (strict mode) the schema at a JSON Pointer of the document. */
  compile(pointer: string): ValidateFunction {
    return this.validator(pointer);
  }

  private validator(pointer: string): ValidateFunction {
    let v = this.compiled.get(pointer);
    if (!v) {
      v = this.ajv.compile({ $ref: `${DOC_ID}${pointer}` });
      this.compiled.set(pointer, v);
    }
    return v;
  }
}

function literalCount(segments: string[]): number {
  return segments.filter((s) => !s.startsWith("{")).length;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function isPlainObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function resolvePointer(doc: unknown, ref: string): unknown {
  if (!ref.startsWith("#/")) throw new Error(`only local references are supported: ${ref}`);
  let cur: unknown = doc;
  for (const raw of ref.slice(2).split("/")) {
    const token = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~");
    if (!isPlainObject(cur) || !(token in cur)) throw new Error(`unresolvable reference ${ref}`);
    cur = cur[token];
  }
  return cur;
}

function formatErrors(errors: ErrorObject[]): string {
  return errors.map((e) => `  ${e.instancePath || "(body)"} ${e.message ?? e.keyword} ${JSON.stringify(e.params)} [${e.schemaPath}]`).join("\n");
}

let contract: Contract | null = null;

/** The loaded contract (loaded and compiled once per process). */
export function openApiContract(): Contract {
  contract ??= new Contract(loadOpenApi());
  return contract;
}

/**
 * Validates one real response against the document: finds the operation (templated paths match
 * one non-empty segment per parameter), picks the response for the status (exact, then `4XX`-style
 * range, then `default`) and validates the body with Ajv. Pass `contentType` for non-JSON
 * responses (the body is then the text). Returns the matched operation.
 */
export function validateResponse(method: string, path: string, status: number, body: unknown, contentType?: string): OperationMatch {
  return openApiContract().validateResponse(method, path, status, body, contentType);
}

export type { Contract };
