/**
 * A small kustomize renderer for the drift test (test/unit/deploy.test.ts), supporting exactly
 * what deploy/kubernetes uses, and refusing anything else rather than rendering it wrong:
 *
 *   kustomization fields: resources (files and kustomization folders), patches (`path:` to a
 *   strategic-merge patch whose kind and metadata.name pick the target), namespace (also set on
 *   role bindings' ServiceAccount subjects), images (name, newName, newTag, digest).
 *   strategic merge: maps merge recursively (null deletes a key); these lists merge by key and
 *   everything else is replaced, as kustomize does for them:
 *     pod spec containers / initContainers (name), volumes (name), imagePullSecrets (name);
 *     container env (name), volumeMounts (mountPath), ports (containerPort + protocol);
 *     Service spec.ports (port + protocol);
 *   `$patch: delete` on a whole patch (removes the resource) or on an element of a keyed list.
 *
 * When a real kustomize is at hand (`kubectl kustomize`), the test also compares this
 * renderer's output with it (see kubectlKustomize below).
 */
import { readFileSync, statSync, existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { spawnSync } from "node:child_process";
import { parseAllDocuments } from "yaml";

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; [k: string]: unknown };
  [k: string]: unknown;
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonMap = { [k: string]: Json };

const SUPPORTED_FIELDS = new Set(["apiVersion", "kind", "resources", "patches", "namespace", "images"]);
/** Kinds kustomize's namespace transformer leaves alone (the ones that could appear here). */
const CLUSTER_SCOPED = new Set(["Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass", "StorageClass"]);
const POD_TEMPLATE_KINDS = new Set(["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"]);

/**
 * Parses a YAML stream the way Kubernetes tools do: YAML 1.1 (so `0440` is octal, as in go-yaml),
 * failing on any parse error or warning.
 */
export function parseYamlStream(text: string, source: string): unknown[] {
  const out: unknown[] = [];
  for (const doc of parseAllDocuments(text, { version: "1.1" })) {
    if (doc.errors.length) throw new Error(`${source}: ${doc.errors[0]!.message}`);
    if (doc.warnings.length) throw new Error(`${source}: ${doc.warnings[0]!.message}`);
    const value = doc.toJS({ maxAliasCount: 0 }) as unknown;
    if (value !== null && value !== undefined) out.push(value);
  }
  return out;
}

function isMap(v: unknown): v is JsonMap {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

function asObject(v: unknown, source: string): K8sObject {
  if (!isMap(v) || typeof v.kind !== "string" || typeof v.apiVersion !== "string" || !isMap(v.metadata) || typeof v.metadata.name !== "string")
    throw new Error(`${source}: not a Kubernetes object with apiVersion, kind and metadata.name`);
  return v as unknown as K8sObject;
}

/** Renders the kustomization in `dir` (a folder holding kustomization.yaml). */
export function renderKustomization(dir: string): K8sObject[] {
  const file = join(dir, "kustomization.yaml");
  const docs = parseYamlStream(readFileSync(file, "utf8"), file);
  if (docs.length !== 1 || !isMap(docs[0])) throw new Error(`${file}: expected one mapping`);
  const k = docs[0];
  for (const key of Object.keys(k)) if (!SUPPORTED_FIELDS.has(key)) throw new Error(`${file}: field ${key} is not supported by test/support/kustomize.ts`);
  if (k.kind !== "Kustomization") throw new Error(`${file}: kind must be Kustomization`);

  let objects: K8sObject[] = [];
  for (const entry of (k.resources ?? []) as Json[]) {
    if (typeof entry !== "string") throw new Error(`${file}: resources entries must be paths`);
    const path = resolve(dir, entry);
    if (!existsSync(path)) throw new Error(`${file}: resource ${entry} does not exist`);
    if (statSync(path).isDirectory()) objects.push(...renderKustomization(path));
    else objects.push(...parseYamlStream(readFileSync(path, "utf8"), path).map((d) => asObject(d, path)));
  }
  assertUnique(objects, file);

  for (const p of (k.patches ?? []) as Json[]) {
    if (!isMap(p) || typeof p.path !== "string" || Object.keys(p).length !== 1) throw new Error(`${file}: only patches with a single path: are supported`);
    const path = resolve(dir, p.path);
    const patchDocs = parseYamlStream(readFileSync(path, "utf8"), path);
    for (const patch of patchDocs) objects = applyPatch(objects, patch, path);
  }

  if (k.namespace !== undefined) {
    if (typeof k.namespace !== "string") throw new Error(`${file}: namespace must be a string`);
    for (const o of objects) {
      if (!CLUSTER_SCOPED.has(o.kind)) o.metadata.namespace = k.namespace;
      // kustomize also moves the ServiceAccount subjects of role bindings into the namespace.
      if (o.kind === "RoleBinding" || o.kind === "ClusterRoleBinding")
        for (const sub of (o.subjects as JsonMap[] | undefined) ?? []) if (sub.kind === "ServiceAccount") sub.namespace = k.namespace;
    }
  }

  for (const img of (k.images ?? []) as Json[]) {
    if (!isMap(img) || typeof img.name !== "string") throw new Error(`${file}: images entries need a name`);
    for (const key of Object.keys(img)) if (!["name", "newName", "newTag", "digest"].includes(key)) throw new Error(`${file}: images field ${key} is not supported`);
    for (const o of objects) for (const c of podContainers(o)) c.image = retag(String(c.image), img);
  }
  return objects;
}

function assertUnique(objects: K8sObject[], source: string): void {
  const seen = new Set<string>();
  for (const o of objects) {
    const id = `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`;
    if (seen.has(id)) throw new Error(`${source}: ${id} is defined twice`);
    seen.add(id);
  }
}

/** The containers and initContainers of an object's pod template (empty for other kinds). */
export function podContainers(o: K8sObject): JsonMap[] {
  if (!POD_TEMPLATE_KINDS.has(o.kind)) return [];
  const spec = (o.spec as JsonMap | undefined)?.template as JsonMap | undefined;
  const pod = spec?.spec as JsonMap | undefined;
  return [...((pod?.containers as JsonMap[] | undefined) ?? []), ...((pod?.initContainers as JsonMap[] | undefined) ?? [])];
}

function retag(image: string, img: JsonMap): string {
  const at = image.indexOf("@");
  const base = at >= 0 ? image.slice(0, at) : image;
  const colon = base.lastIndexOf(":");
  const name = colon > base.lastIndexOf("/") ? base.slice(0, colon) : base;
  if (name !== img.name) return image;
  const newName = typeof img.newName === "string" ? img.newName : name;
  if (typeof img.digest === "string") return `${newName}@${img.digest}`;
  if (typeof img.newTag === "string") return `${newName}:${img.newTag}`;
  return newName + image.slice(name.length);
}

function applyPatch(objects: K8sObject[], raw: unknown, source: string): K8sObject[] {
  if (!isMap(raw) || typeof raw.kind !== "string" || !isMap(raw.metadata) || typeof raw.metadata.name !== "string")
    throw new Error(`${source}: a patch needs kind and metadata.name`);
  const { kind } = raw;
  const name = raw.metadata.name;
  const matches = objects.filter((o) => o.kind === kind && o.metadata.name === name);
  if (matches.length !== 1) throw new Error(`${source}: patch target ${kind}/${name} matches ${matches.length} resources`);
  const target = matches[0]!;
  if (raw.apiVersion !== undefined && raw.apiVersion !== target.apiVersion) throw new Error(`${source}: apiVersion ${String(raw.apiVersion)} differs from the target's`);
  if (raw.$patch === "delete") return objects.filter((o) => o !== target);
  if (raw.$patch !== undefined) throw new Error(`${source}: $patch: ${String(raw.$patch)} is not supported`);
  const merged = mergeMap(target as unknown as JsonMap, raw, [], kind, source) as unknown as K8sObject;
  return objects.map((o) => (o === target ? merged : o));
}

/** The merge key of the list at `path` (field names from the object root), or null: replace. */
function mergeKeyFor(kind: string, path: string[]): string[] | null {
  const field = path.at(-1);
  const parent = path.at(-2);
  const inPodSpec = POD_TEMPLATE_KINDS.has(kind) && path.length >= 4 && path.slice(0, 3).join(".") === "spec.template.spec";
  if (inPodSpec && path.length === 4) {
    if (field === "containers" || field === "initContainers" || field === "volumes" || field === "imagePullSecrets") return ["name"];
  }
  if (inPodSpec && path.length === 5 && (parent === "containers" || parent === "initContainers")) {
    if (field === "env") return ["name"];
    if (field === "volumeMounts") return ["mountPath"];
    if (field === "ports") return ["containerPort", "protocol"];
  }
  if (kind === "Service" && path.join(".") === "spec.ports") return ["port", "protocol"];
  return null;
}

function mergeMap(base: JsonMap, patch: JsonMap, path: string[], kind: string, source: string): JsonMap {
  const out = clone(base);
  for (const [key, value] of Object.entries(patch)) {
    if (key.startsWith("$")) throw new Error(`${source}: directive ${key} at ${path.join(".") || "(root)"} is not supported`);
    const here = [...path, key];
    if (value === null) {
      delete out[key];
    } else if (isMap(value) && isMap(out[key])) {
      out[key] = mergeMap(out[key] as JsonMap, value, here, kind, source);
    } else if (Array.isArray(value)) {
      const keys = mergeKeyFor(kind, here);
      out[key] = keys && Array.isArray(out[key]) ? mergeList(out[key] as Json[], value, keys, here, kind, source) : stripChecked(value, here, source);
    } else {
      out[key] = isMap(value) ? stripChecked(value, here, source) : value;
    }
  }
  return out;
}

/** A value copied as is from a patch must hold no directives. */
function stripChecked<T extends Json>(value: T, path: string[], source: string): T {
  const walk = (v: Json, p: string[]): void => {
    if (Array.isArray(v)) v.forEach((x) => walk(x, p));
    else if (isMap(v))
      for (const [k, x] of Object.entries(v)) {
        if (k.startsWith("$")) throw new Error(`${source}: directive ${k} at ${p.join(".")} is not supported here`);
        walk(x, [...p, k]);
      }
  };
  walk(value, path);
  return clone(value);
}

function mergeList(base: Json[], patch: Json[], keys: string[], path: string[], kind: string, source: string): Json[] {
  // As kustomize (kyaml) orders a merged keyed list: the patch's elements first, in the patch's
  // order (merged into their base element when there is one), then the base elements the patch
  // does not name, in their order.
  const rest = clone(base);
  const first: Json[] = [];
  const same = (a: Json, b: Json) => isMap(a) && isMap(b) && keys.every((k) => a[k] === b[k]);
  for (const item of patch) {
    if (!isMap(item)) throw new Error(`${source}: ${path.join(".")} elements must be mappings`);
    const { $patch: directive, ...element } = item;
    const index = rest.findIndex((x) => same(x, element));
    if (directive === "delete") {
      if (index < 0) throw new Error(`${source}: $patch: delete at ${path.join(".")} matches no element`);
      rest.splice(index, 1);
    } else if (directive !== undefined) {
      throw new Error(`${source}: $patch: ${String(directive)} at ${path.join(".")} is not supported`);
    } else if (index >= 0) {
      first.push(mergeMap(rest[index] as JsonMap, element, path, kind, source));
      rest.splice(index, 1);
    } else {
      first.push(stripChecked(element, path, source));
    }
  }
  return [...first, ...rest];
}

/**
 * `kubectl kustomize <dir>` parsed, or null with the reason when no usable kubectl is installed.
 * Only kustomize v4+ (embedded in kubectl 1.21+) understands `patches:`.
 */
export function kubectlKustomize(dir: string): { objects: K8sObject[] } | { skip: string } {
  const version = spawnSync("kubectl", ["version", "--client", "-o", "json"], { encoding: "utf8", timeout: 20_000 });
  if (version.error || version.status !== 0) return { skip: "kubectl is not installed" };
  let kustomizeVersion = "";
  try {
    kustomizeVersion = String((JSON.parse(version.stdout) as { kustomizeVersion?: string }).kustomizeVersion ?? "");
  } catch {
    return { skip: "kubectl version did not answer JSON" };
  }
  const major = Number(/^v(\d+)/.exec(kustomizeVersion)?.[1] ?? 0);
  if (major < 4) return { skip: `kubectl embeds kustomize ${kustomizeVersion || "(unknown)"}, older than v4` };
  const run = spawnSync("kubectl", ["kustomize", dir], { encoding: "utf8", timeout: 60_000 });
  if (run.error || run.status !== 0) throw new Error(`kubectl kustomize ${dir} failed: ${run.stderr || run.error?.message}`);
  return { objects: parseYamlStream(run.stdout, `kubectl kustomize ${dir}`).map((d) => asObject(d, dir)) };
}
