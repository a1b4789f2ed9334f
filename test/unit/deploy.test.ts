/**
 * Drift test for deploy/: the Kubernetes overlays, alerts, dashboard and Dockerfile are checked
 * against the code they describe, so that a renamed setting, metric, probe path, port or CLI
 * command fails here rather than in a cluster.
 *
 * The overlays are rendered with test/support/kustomize.ts (the subset of kustomize they use);
 * when `kubectl kustomize` (kustomize v4+) is installed its output must be identical.
 */
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync, existsSync, statSync, mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { join, dirname, basename, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { stringify as toYaml } from "yaml";
import request from "supertest";
import type { Redis } from "ioredis";
import { Registry } from "prom-client";
import { loadConfig, type Config } from "../../src/config.js";
import { parseServerName } from "../../src/protocol/ids.js";
import { parseClusterUrl } from "../../src/server.js";
import { Metrics } from "../../src/metrics.js";
import { opsApp } from "../../src/http/ops.js";
import { renderKustomization, kubectlKustomize, podContainers, parseYamlStream, type K8sObject } from "../support/kustomize.js";
import { KubernetesSchemas } from "../support/k8s-schema.js";
import { checkGrafanaDashboard } from "../support/grafana-schema.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const deployDir = join(root, "deploy");
const k8sDir = join(deployDir, "kubernetes");
const OVERLAYS = ["sidecar", "split", "ingress", "bridge", "redis-cluster"] as const;

type Env = Record<string, string>;
type Obj = Record<string, unknown>;

// --- what the code defines ------------------------------------------------------------------

/**
 * The settings loadConfig reads: every key it looks up in an empty environment (recorded by a
 * Proxy), plus every quoted GATEHOUSE_… / REDIS_URL literal in src/config.ts (in case a key is
 * only read on some path).
 */
function settingNames(): Set<string> {
  const read = new Set<string>();
  const env = new Proxy({} as Record<string, string | undefined>, {
    get(_t, key) {
      if (typeof key === "string") read.add(key);
      return undefined;
    },
  });
  loadConfig(env, "/");
  const text = readFileSync(join(root, "src/config.ts"), "utf8");
  for (const m of text.matchAll(/"((?:GATEHOUSE_[A-Z0-9_]+)|REDIS_URL)"/g)) read.add(m[1]!);
  return read;
}
const SETTINGS = settingNames();

/** The `gatehouse` subcommands: the `case "…":` labels of src/cli.ts's command switch. */
function cliCommands(): Set<string> {
  const text = readFileSync(join(root, "src/cli.ts"), "utf8");
  const sw = text.slice(text.lastIndexOf("switch (command)"));
  return new Set([...sw.matchAll(/case "([a-z-]+)":/g)].map((m) => m[1]!));
}
const CLI = cliCommands();
/** Commands that keep running (what a Deployment may run). */
const LONG_RUNNING = new Set(["serve", "worker"]);

interface MetricInfo {
  labels: Set<string>;
}
/** Every series name the Registry exposes, with histogram suffixes, and its labels. */
function registryMetrics(): Map<string, MetricInfo> {
  const metrics = new Metrics(new Registry());
  const out = new Map<string, MetricInfo>();
  for (const m of metrics.registry.getMetricsAsArray()) {
    const labels = new Set((m as unknown as { labelNames?: readonly string[] }).labelNames ?? []);
    if (String(m.type) === "histogram") {
      out.set(`${m.name}_bucket`, { labels: new Set([...labels, "le"]) });
      out.set(`${m.name}_sum`, { labels });
      out.set(`${m.name}_count`, { labels });
    } else if (String(m.type) === "summary") {
      out.set(m.name, { labels: new Set([...labels, "quantile"]) });
      out.set(`${m.name}_sum`, { labels });
      out.set(`${m.name}_count`, { labels });
    } else {
      out.set(m.name, { labels });
    }
  }
  return out;
}
const METRICS = registryMetrics();

/** Labels Prometheus (Operator) attaches to every scraped series of a ServiceMonitor target. */
const TARGET_LABELS = new Set(["namespace", "pod", "service", "container", "job", "instance", "endpoint"]);
/** The only non-Gatehouse series the alerts and dashboard may use, with their labels. */
const EXTERNAL_METRICS = new Map<string, Set<string>>([
  ["up", TARGET_LABELS],
  ["kube_deployment_status_replicas_unavailable", new Set(["namespace", "deployment"])],
  ["kube_deployment_status_replicas_available", new Set(["namespace", "deployment"])],
]);

// --- PromQL: just enough to find series names and label names -----------------------------------

interface Selector {
  name: string;
  matchers: { label: string; op: string; value: string }[];
}
const PROMQL_KEYWORDS = new Set(["by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool", "inf", "nan"]);

/** Series selectors and grouping labels of a PromQL expression (Grafana variables allowed). */
function promqlNames(expr: string): { selectors: Selector[]; grouping: string[] } {
  let s = expr.replace(/\$__\w+|\$\{\w+\}/g, "5m");
  const selectors: Selector[] = [];
  const blocks = /([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{((?:[^{}"]|"(?:[^"\\]|\\.)*")*)\}/g;
  s = s.replace(blocks, (_all, name: string | undefined, body: string) => {
    if (!name) throw new Error(`selector without a metric name in ${expr}`);
    const matchers = [...body.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g)].map((m) => ({ label: m[1]!, op: m[2]!, value: m[3]! }));
    const rest = body.replace(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g, "").replace(/[\s,]/g, "");
    if (rest) throw new Error(`cannot read the matchers {${body}} in ${expr}`);
    selectors.push({ name, matchers });
    return " ";
  });
  s = s.replace(/"(?:[^"\\]|\\.)*"/g, " ").replace(/\[[^\]]*\]/g, " ");
  const grouping: string[] = [];
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g, (_a, _k, labels: string) => {
    grouping.push(...labels.split(",").map((l) => l.trim()).filter(Boolean));
    return " ";
  });
  for (const m of s.matchAll(/(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    if (m[2] || PROMQL_KEYWORDS.has(m[1]!.toLowerCase())) continue;
    selectors.push({ name: m[1]!, matchers: [] });
  }
  return { selectors, grouping };
}

/** Problems with the names used by one expression (empty when all are real). */
function checkExpr(expr: string, where: string): string[] {
  const problems: string[] = [];
  const { selectors, grouping } = promqlNames(expr);
  if (selectors.length === 0) problems.push(`${where}: no series in ${expr}`);
  const available = new Set<string>(TARGET_LABELS);
  for (const sel of selectors) {
    const labels = sel.name.startsWith("gatehouse_") ? METRICS.get(sel.name)?.labels : EXTERNAL_METRICS.get(sel.name);
    if (!labels) {
      problems.push(`${where}: ${sel.name} is not a metric of src/metrics.ts${sel.name.startsWith("gatehouse_") ? "" : " nor an allowed external series"}`);
      continue;
    }
    for (const l of labels) available.add(l);
    for (const m of sel.matchers) {
      if (!labels.has(m.label) && !TARGET_LABELS.has(m.label)) problems.push(`${where}: ${sel.name} has no label ${m.label}`);
    }
  }
  for (const g of grouping) if (!available.has(g)) problems.push(`${where}: grouping label ${g} is on none of the series`);
  return problems;
}

// --- rendering helpers --------------------------------------------------------------------------

/**
 * `promtool check rules` on a PrometheusRule's spec (a Prometheus rule file). .ci/run installs
 * Debian's prometheus package, so in CI a missing promtool is a failure, elsewhere a skip.
 */
function promtoolCheck(spec: Obj): { status: number; output: string } | { skip: string } {
  const promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].find(existsSync);
  if (!promtool) {
    if (process.env.CI) throw new Error("promtool is not installed (.ci/run installs Debian's prometheus package)");
    return { skip: "promtool is not installed (apt-get install prometheus)" };
  }
  const dir = mkdtempSync(join(tmpdir(), "gatehouse-rules-"));
  try {
    const file = join(dir, "gatehouse.rules.yaml");
    writeFileSync(file, toYaml(spec));
    const r = spawnSync(promtool, ["check", "rules", file], { encoding: "utf8" });
    return { status: r.status ?? 1, output: `${r.stdout}${r.stderr}` };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const K8S_SCHEMAS = new KubernetesSchemas();
/** Custom resources (no schema in the Kubernetes API) and what checks them instead. */
const CUSTOM_RESOURCES = new Map([
  ["monitoring.coreos.com/v1 ServiceMonitor", "the ServiceMonitor port/label test"],
  ["monitoring.coreos.com/v1 PrometheusRule", "promtool check rules"],
]);

const rendered = new Map(OVERLAYS.map((o) => [o, renderKustomization(join(k8sDir, "overlays", o))]));

function byKind(objects: K8sObject[], kind: string): K8sObject[] {
  return objects.filter((o) => o.kind === kind);
}
function find(objects: K8sObject[], kind: string, name: string): K8sObject | undefined {
  return objects.find((o) => o.kind === kind && o.metadata.name === name);
}
function podSpec(o: K8sObject): Obj {
  return ((o.spec as Obj).template as Obj).spec as Obj;
}
function podLabels(o: K8sObject): Record<string, string> {
  return (((o.spec as Obj).template as Obj).metadata as { labels: Record<string, string> }).labels;
}
function selects(selector: Record<string, string> | undefined, labels: Record<string, string>): boolean {
  return !!selector && Object.entries(selector).every(([k, v]) => labels[k] === v);
}
function isGatehouseImage(image: unknown): boolean {
  const name = String(image).split("@")[0]!.replace(/:[^/:]*$/, "");
  return name.split("/").at(-1) === "gatehouse";
}

/** The environment a container sees: envFrom ConfigMaps/Secrets, then env (which wins). */
function containerEnv(objects: K8sObject[], c: Obj): Env {
  const env: Env = {};
  const secretData = (name: string): Env => {
    const s = find(objects, "Secret", name);
    assert.ok(s, `Secret ${name} is not in the rendered manifests`);
    const out: Env = { ...((s.stringData as Env | undefined) ?? {}) };
    for (const [k, v] of Object.entries((s.data as Env | undefined) ?? {})) out[k] = Buffer.from(v, "base64").toString("utf8");
    return out;
  };
  for (const from of (c.envFrom as Obj[] | undefined) ?? []) {
    if (from.configMapRef) {
      const name = (from.configMapRef as { name: string }).name;
      const cm = find(objects, "ConfigMap", name);
      assert.ok(cm, `ConfigMap ${name} is not in the rendered manifests`);
      Object.assign(env, cm.data as Env);
    } else if (from.secretRef) {
      Object.assign(env, secretData((from.secretRef as { name: string }).name));
    } else assert.fail(`unsupported envFrom ${JSON.stringify(from)}`);
  }
  for (const e of (c.env as Obj[] | undefined) ?? []) {
    const name = String(e.name);
    if (typeof e.value === "string") env[name] = e.value;
    else if (e.valueFrom && (e.valueFrom as Obj).secretKeyRef) {
      const ref = (e.valueFrom as Obj).secretKeyRef as { name: string; key: string };
      const v = secretData(ref.name)[ref.key];
      assert.ok(v !== undefined, `Secret ${ref.name} has no key ${ref.key}`);
      env[name] = v;
    } else assert.fail(`env ${name}: only value and secretKeyRef are supported here`);
  }
  return env;
}

interface GatehouseContainer {
  deployment: K8sObject;
  container: Obj;
  env: Env;
  config: Config;
  command: string;
}
/** The init containers of a pod template (podContainers lists them after the containers). */
function initContainers(o: K8sObject): Obj[] {
  const all = podContainers(o);
  const n = ((((o.spec as Obj | undefined)?.template as Obj | undefined)?.spec as Obj | undefined)?.initContainers as Obj[] | undefined)?.length ?? 0;
  return n ? all.slice(-n) : [];
}

/**
 * Secrets created by `gatehouse keygen --kubernetes-secret NAME` Jobs whose service account may
 * get that Secret and create Secrets (Role + RoleBinding), with a token mounted.
 */
function keygenJobs(objects: K8sObject[]): string[] {
  const out: string[] = [];
  for (const job of objects.filter((o) => o.kind === "Job")) {
    const pod = ((job.spec as Obj).template as Obj).spec as Obj;
    const c = podContainers(job).find((x) => isGatehouseImage(x.image) && (x.args as string[])[0] === "keygen");
    if (!c) continue;
    const args = c.args as string[];
    assert.equal(args[1], "--kubernetes-secret");
    const name = args[2]!;
    assert.equal(pod.automountServiceAccountToken, true, "the keygen pod needs its token");
    assert.ok(["keygen"].every((cmd) => CLI.has(cmd)));
    const sa = String(pod.serviceAccountName);
    assert.ok(find(objects, "ServiceAccount", sa), `ServiceAccount ${sa}`);
    const bindings = objects.filter((o) => o.kind === "RoleBinding" && (o.subjects as Obj[]).some((x) => x.kind === "ServiceAccount" && x.name === sa));
    const rules = bindings.flatMap((b) => ((find(objects, "Role", String((b.roleRef as Obj).name))?.rules as Obj[] | undefined) ?? []));
    const allows = (verb: string, resourceName?: string) =>
      rules.some((r) => (r.apiGroups as string[]).includes("") && (r.resources as string[]).includes("secrets") && (r.verbs as string[]).includes(verb) && (!r.resourceNames || (resourceName !== undefined && (r.resourceNames as string[]).includes(resourceName))));
    assert.ok(allows("get", name), `${sa} may not get Secret ${name}`);
    assert.ok(allows("create"), `${sa} may not create Secrets`);
    assert.ok(!rules.some((r) => (r.verbs as string[]).some((v) => ["list", "watch", "update", "patch", "delete", "*"].includes(v))), "keygen needs only get and create");
    out.push(name);
  }
  return out;
}

const secretDirs: string[] = [];
after(() => {
  for (const dir of secretDirs) rmSync(dir, { recursive: true, force: true });
});

/** The settings src/config.ts reads through secretSetting, whose `_FILE` forms name a file to read. */
const SECRET_FILE_SETTINGS = new Set(
  [...readFileSync(join(root, "src", "config.ts"), "utf8").matchAll(/secretSetting\(env, "([A-Z0-9_]+)"/g)].map((m) => `${m[1]}_FILE`),
);

/** Settings naming files that loadConfig reads, with whether they hold a comma-separated list. */
const READ_FILE_SETTINGS = new Map<string, boolean>([...[...SECRET_FILE_SETTINGS].map((k) => [k, false] as const), ["GATEHOUSE_APPSERVICE_REGISTRATION_FILES", true]]);

/**
 * What the container reads for the settings that name files (the `*_FILE` secret settings, the
 * application service registrations): each path must lie in a volume of the pod mounted into
 * this container, from a Secret of the rendered manifests that has the file's key. The key's
 * value is written to a temporary file and the setting pointed at it, so that loadConfig reads
 * what the pod would read.
 */
function withMountedSecretFiles(objects: K8sObject[], d: K8sObject, c: Obj, env: Env): Env {
  const out: Env = { ...env };
  const pod = ((d.spec as Obj).template as Obj).spec as Obj;
  const volumes = (pod.volumes as Obj[] | undefined) ?? [];
  const materialise = (k: string, path: string): string => {
    const mount = ((c.volumeMounts as Obj[] | undefined) ?? []).find((m) => path.startsWith(`${String(m.mountPath).replace(/\/$/, "")}/`));
    assert.ok(mount, `${d.metadata.name}/${String(c.name)}: ${k}=${path} is in no volume mounted into the container`);
    const volume = volumes.find((v) => v.name === mount.name);
    const secretName = (volume?.secret as { secretName?: string } | undefined)?.secretName;
    assert.ok(secretName, `${d.metadata.name}/${String(c.name)}: ${k} must come from a Secret volume`);
    const secret = find(objects, "Secret", secretName);
    assert.ok(secret, `Secret ${secretName} is not in the rendered manifests`);
    const key = path.slice(String(mount.mountPath).replace(/\/$/, "").length + 1);
    const data: Env = { ...((secret.stringData as Env | undefined) ?? {}) };
    for (const [dk, v] of Object.entries((secret.data as Env | undefined) ?? {})) data[dk] = Buffer.from(v, "base64").toString("utf8");
    assert.ok(data[key] !== undefined, `${k}: Secret ${secretName} has no key ${key}`);
    const dir = mkdtempSync(join(tmpdir(), "gatehouse-secret-"));
    secretDirs.push(dir);
    writeFileSync(join(dir, key), data[key]!);
    return join(dir, key);
  };
  for (const [k, value] of Object.entries(env)) {
    const list = READ_FILE_SETTINGS.get(k);
    if (list === undefined || value === "") continue;
    out[k] = list ? value.split(",").map((p) => materialise(k, p.trim())).join(",") : materialise(k, value);
  }
  return out;
}

function gatehouseContainers(objects: K8sObject[]): GatehouseContainer[] {
  const out: GatehouseContainer[] = [];
  for (const d of objects) {
    if (d.kind !== "Deployment") continue; // the keygen Job is checked on its own
    const inits = new Set(initContainers(d));
    for (const c of podContainers(d)) {
      if (!isGatehouseImage(c.image) || inits.has(c)) continue;
      const env = containerEnv(objects, c);
      out.push({ deployment: d, container: c, env, config: loadConfig(withMountedSecretFiles(objects, d, c, env), "/"), command: String((c.args as string[] | undefined)?.[0]) });
    }
  }
  return out;
}

/** containerPort number of a probe/Service/NetworkPolicy port (name or number) in a pod. */
function resolvePort(containers: Obj[], port: unknown): number | undefined {
  if (typeof port === "number") return port;
  for (const c of containers) for (const p of (c.ports as Obj[] | undefined) ?? []) if (p.name === port) return p.containerPort as number;
  return undefined;
}

function allStrings(v: unknown, out: string[] = []): string[] {
  if (typeof v === "string") out.push(v);
  else if (Array.isArray(v)) v.forEach((x) => allStrings(x, out));
  else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) {
    out.push(k);
    allStrings(x, out);
  }
  return out;
}

/** GATEHOUSE_… names mentioned in a text; a trailing `_` (as in GATEHOUSE_SENDER_*) is a prefix. */
function unknownSettingMentions(text: string): string[] {
  const bad = new Set<string>();
  for (const m of text.matchAll(/\bGATEHOUSE_[A-Z0-9_]*/g)) {
    const name = m[0];
    const ok = name.endsWith("_") ? [...SETTINGS].some((s) => s.startsWith(name)) : SETTINGS.has(name);
    if (!ok) bad.add(name);
  }
  return [...bad];
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

// --- the tests ----------------------------------------------------------------------------------

describe("deploy: code facts the checks rely on", () => {
  test("settings, CLI commands and metrics were found", () => {
    for (const s of ["GATEHOUSE_SERVER_NAME", "GATEHOUSE_METRICS_LISTEN", "GATEHOUSE_RUN_WORKERS", "REDIS_URL"]) assert.ok(SETTINGS.has(s), s);
    for (const c of LONG_RUNNING) assert.ok(CLI.has(c), `src/cli.ts has no command ${c}`);
    assert.ok(METRICS.has("gatehouse_federation_requests_total"), "registry read");
    assert.ok(METRICS.has("gatehouse_federation_request_duration_seconds_bucket"), "histogram suffixes");
    assert.ok(METRICS.has("gatehouse_process_cpu_seconds_total"), "default process metrics carry the gatehouse_ prefix");
  });

  test("the PromQL reader finds names and rejects unknown ones", () => {
    const { selectors, grouping } = promqlNames(
      'histogram_quantile(0.99, sum by (le, route) (rate(gatehouse_federation_request_duration_seconds_bucket{namespace=~"$namespace"}[$__rate_interval]))) > 2 and on (namespace) up',
    );
    assert.deepEqual(selectors.map((s) => s.name).sort(), ["gatehouse_federation_request_duration_seconds_bucket", "up"]);
    assert.deepEqual(grouping, ["le", "route", "namespace"]);
    assert.deepEqual(checkExpr("rate(gatehouse_no_such_metric_total[5m])", "t"), ["t: gatehouse_no_such_metric_total is not a metric of src/metrics.ts"]);
    assert.deepEqual(checkExpr('sum by (outcome) (gatehouse_knocks_total{state="x"})', "t"), ["t: gatehouse_knocks_total has no label state"]);
    assert.deepEqual(checkExpr("sum by (destination) (gatehouse_knocks_total)", "t"), ["t: grouping label destination is on none of the series"]);
  });
});

for (const overlay of OVERLAYS) {
  const dir = join(k8sDir, "overlays", overlay);
  const objects = rendered.get(overlay)!;

  describe(`deploy: overlays/${overlay}`, () => {
    test("renders the same as kubectl kustomize (when installed)", (t) => {
      const real = kubectlKustomize(dir);
      if ("skip" in real) {
        t.skip(real.skip);
        return;
      }
      const key = (o: K8sObject) => `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`;
      const sort = (list: K8sObject[]) => [...list].sort((a, b) => key(a).localeCompare(key(b)));
      assert.deepEqual(sort(objects), sort(real.objects));
    });

    test("every object validates strictly against the Kubernetes API schemas", (t) => {
      const { problems, unknownKinds, validated } = K8S_SCHEMAS.validate(objects);
      t.diagnostic(`${validated} objects validated strictly (unknown fields refused); custom resources: ${unknownKinds.map((o) => o.kind).join(", ")}`);
      assert.deepEqual(problems, []);
      // Custom resources have no schema in the Kubernetes API: each kind must be one we check
      // another way (promtool for PrometheusRule, the ServiceMonitor test above).
      for (const o of unknownKinds) assert.ok(CUSTOM_RESOURCES.has(`${o.apiVersion} ${o.kind}`), `${o.apiVersion} ${o.kind} has no schema and no other check`);
    });

    test("every GATEHOUSE_* name in the manifests is a setting of src/config.ts", () => {
      assert.deepEqual(unknownSettingMentions(allStrings(objects).join("\n")), []);
    });

    test("Gatehouse containers get only real settings, and loadConfig accepts them", () => {
      const gcs = gatehouseContainers(objects);
      assert.ok(gcs.length > 0, "no Gatehouse container found");
      for (const gc of gcs) {
        const extra = Object.keys(gc.env).filter((k) => !SETTINGS.has(k) && k !== "NODE_OPTIONS");
        assert.deepEqual(extra, [], `${gc.deployment.metadata.name}/${String(gc.container.name)}: not settings of src/config.ts`);
        // The heap cap must reach the process (issue 13: under metadata it silently never did),
        // and stay under the container's memory limit.
        const heapMb = Number(/--max-old-space-size=(\d+)/.exec(gc.env.NODE_OPTIONS ?? "")?.[1]);
        const limit = String(((gc.container.resources as Obj | undefined)?.limits as Obj | undefined)?.memory ?? "");
        assert.ok(heapMb > 0, `${gc.deployment.metadata.name}: NODE_OPTIONS=--max-old-space-size=… is not in the container's environment`);
        assert.match(limit, /^\d+Mi$/, "memory limit in Mi");
        assert.ok(heapMb * 1.5 < parseInt(limit, 10), `heap cap ${heapMb} MB leaves too little of the ${limit} limit`);
        assert.ok(gc.config.redisUrl, "REDIS_URL must point at an external Redis (the embedded one is for development)");
        // Secrets reach Gatehouse as mounted files, not as environment variables.
        const secretEnv = ((gc.container.envFrom as Obj[] | undefined) ?? []).filter((f) => f.secretRef);
        assert.deepEqual(secretEnv, [], `${gc.deployment.metadata.name}: a Secret passed with envFrom (mount it and use the *_FILE settings)`);
        assert.ok(gc.env.GATEHOUSE_ADMIN_TOKEN_FILE && gc.env.REDIS_URL_FILE, "the admin token and REDIS_URL are read from files");
      }
    });

    test("containers run long-running gatehouse commands, and someone sends", () => {
      const gcs = gatehouseContainers(objects);
      for (const gc of gcs) {
        const args = gc.container.args as string[] | undefined;
        assert.ok(args && args.length === 1, `${gc.deployment.metadata.name}: give exactly one command in args`);
        assert.ok(CLI.has(gc.command), `${gc.command} is not a command of src/cli.ts (${[...CLI].join(", ")})`);
        assert.ok(LONG_RUNNING.has(gc.command), `${gc.command} exits; a Deployment must run serve or worker`);
        assert.equal(gc.container.command, undefined, "keep the image ENTRYPOINT (bin/gatehouse.mjs)");
      }
      assert.ok(gcs.some((g) => g.command === "serve"), "no gateway (serve)");
      assert.ok(
        gcs.some((g) => g.command === "worker" || (g.command === "serve" && g.config.runWorkers)),
        "nothing runs the outbound sender (a worker, or serve with GATEHOUSE_RUN_WORKERS=true)",
      );
    });

    test("every Gatehouse pod checks its settings first (config-check init container with the same settings)", () => {
      for (const gc of gatehouseContainers(objects)) {
        const init = initContainers(gc.deployment).find((c) => c.name === "config-check");
        assert.ok(init, `${gc.deployment.metadata.name}: no config-check init container`);
        assert.deepEqual(init.args, ["config", "check"]);
        assert.ok(CLI.has("config"), "config is a command of src/cli.ts");
        assert.equal(init.image, gc.container.image, "the same image as the container it checks");
        assert.deepEqual(containerEnv(objects, init), gc.env, "the same settings as the container it checks");
        assert.doesNotThrow(() => loadConfig(withMountedSecretFiles(objects, gc.deployment, init, containerEnv(objects, init)), "/"), "the check reads the same secret files");
        const sc = init.securityContext as Obj;
        assert.equal(sc.readOnlyRootFilesystem, true);
        assert.equal(sc.allowPrivilegeEscalation, false);
      }
    });

    test("no CPU limit on any container (a CFS quota throttles single-threaded Node), a CPU request on each", () => {
      for (const d of objects) {
        for (const c of podContainers(d)) {
          const res = (c.resources ?? {}) as { requests?: Obj; limits?: Obj };
          assert.equal(res.limits?.cpu, undefined, `${d.metadata.name}/${String(c.name)} has a CPU limit`);
          if (isGatehouseImage(c.image)) assert.ok(res.requests?.cpu, `${d.metadata.name}/${String(c.name)} requests no CPU`);
        }
      }
    });

    test("probes use the ops listener's paths and port", async () => {
      const fakeRedis = { ping: async () => "PONG" } as unknown as Redis;
      const app = opsApp(new Metrics(new Registry(), { defaultMetrics: false }).registry, fakeRedis, { starting: false, shuttingDown: false });
      for (const gc of gatehouseContainers(objects)) {
        const where = `${gc.deployment.metadata.name}/${String(gc.container.name)}`;
        assert.ok(gc.config.metrics, `${where}: GATEHOUSE_METRICS_LISTEN is off, but the probes need it`);
        assert.ok(!["127.0.0.1", "::1", "localhost"].includes(gc.config.metrics.host), `${where}: the ops listener must listen on the pod IP for kubelet probes`);
        const pod = podSpec(gc.deployment).containers as Obj[];
        const expected = { livenessProbe: "/health/live", readinessProbe: "/health/ready", startupProbe: "/health/live" } as const;
        for (const [probe, path] of Object.entries(expected)) {
          const p = gc.container[probe] as { httpGet?: { path: string; port: unknown } } | undefined;
          if (probe === "startupProbe" && !p) continue;
          assert.ok(p?.httpGet, `${where}: ${probe} must be an httpGet probe`);
          assert.equal(p.httpGet.path, path, `${where}: ${probe} path`);
          assert.equal(resolvePort(pod, p.httpGet.port), gc.config.metrics.port, `${where}: ${probe} must hit the ops listener port`);
          const res = await request(app).get(p.httpGet.path);
          assert.equal(res.status, 200, `${where}: ${probe} ${p.httpGet.path} answered ${res.status} by src/http/ops.ts`);
        }
        const metrics = await request(app).get("/metrics");
        assert.equal(metrics.status, 200);
      }
    });

    test("declared ports match the configured listeners", () => {
      for (const gc of gatehouseContainers(objects)) {
        const where = `${gc.deployment.metadata.name}/${String(gc.container.name)}`;
        const ports = new Map(((gc.container.ports as Obj[] | undefined) ?? []).map((p) => [String(p.name), p.containerPort as number]));
        if (gc.config.metrics) assert.equal(ports.get("metrics"), gc.config.metrics.port, `${where}: metrics port`);
        if (gc.command === "serve") {
          assert.equal(ports.get("federation"), gc.config.federation.port, `${where}: federation port`);
          assert.ok(!["127.0.0.1", "::1"].includes(gc.config.federation.host), `${where}: federation must listen on the pod IP`);
          const loopbackAdmin = ["127.0.0.1", "::1", "localhost"].includes(gc.config.admin.host);
          if (loopbackAdmin) assert.equal(ports.get("admin"), undefined, `${where}: the admin API is on loopback; declare no admin port`);
          else assert.equal(ports.get("admin"), gc.config.admin.port, `${where}: admin port`);
        } else {
          assert.deepEqual([...ports.keys()], ["metrics"], `${where}: a worker serves only the ops listener`);
        }
      }
    });

    test("Services, ServiceMonitor and NetworkPolicy name ports that exist", () => {
      const deployments = byKind(objects, "Deployment");
      for (const svc of byKind(objects, "Service")) {
        const selector = (svc.spec as Obj).selector as Record<string, string>;
        const pods = deployments.filter((d) => selects(selector, podLabels(d)));
        assert.ok(pods.length > 0, `Service ${svc.metadata.name} selects no pods`);
        for (const p of (svc.spec as Obj).ports as Obj[]) {
          for (const d of pods)
            assert.ok(resolvePort(podSpec(d).containers as Obj[], p.targetPort) !== undefined, `Service ${svc.metadata.name} port ${String(p.targetPort)} missing in ${d.metadata.name}`);
        }
      }
      for (const gc of gatehouseContainers(objects)) {
        const admin = find(objects, "Service", "gatehouse-admin");
        const loopbackAdmin = ["127.0.0.1", "::1", "localhost"].includes(gc.config.admin.host);
        if (gc.command === "serve") assert.equal(!!admin, !loopbackAdmin, "an admin Service exists exactly when the admin API listens on the pod IP");
      }
      const sms = byKind(objects, "ServiceMonitor");
      assert.equal(sms.length, 1);
      const sm = sms[0]!.spec as { selector: { matchLabels: Record<string, string> }; endpoints: Obj[] };
      const monitored = byKind(objects, "Service").filter((s) => selects(sm.selector.matchLabels, s.metadata.labels ?? {}));
      assert.equal(monitored.length, 1, "the ServiceMonitor selects exactly one Service");
      const metricsSvc = monitored[0]!;
      for (const e of sm.endpoints) {
        assert.ok(((metricsSvc.spec as Obj).ports as Obj[]).some((p) => p.name === e.port), `ServiceMonitor port ${String(e.port)} not on ${metricsSvc.metadata.name}`);
        assert.equal(e.path ?? "/metrics", "/metrics");
        // No Gatehouse label collides with a target label, so none is renamed to exported_*
        // and honorLabels (which lets a target overwrite namespace/pod) is not needed.
        assert.equal(e.honorLabels, undefined, "ServiceMonitor needs no honorLabels");
      }
      const clashes = [...METRICS].flatMap(([name, m]) => [...m.labels].filter((l) => TARGET_LABELS.has(l)).map((l) => `${name}{${l}}`));
      assert.deepEqual(clashes, [], "Gatehouse metric labels that collide with Prometheus Operator target labels");
      const gatehousePods = deployments.filter((d) => podContainers(d).some((c) => isGatehouseImage(c.image)));
      for (const d of gatehousePods) assert.ok(selects((metricsSvc.spec as Obj).selector as Record<string, string>, podLabels(d)), `${d.metadata.name} is not scraped`);
      // Prometheus Operator's job label is the Service name; the alerts and dashboard filter on it.
      const texts = [JSON.stringify(byKind(objects, "PrometheusRule")), readFileSync(join(deployDir, "grafana/gatehouse-dashboard.json"), "utf8")];
      for (const t of texts) for (const m of t.matchAll(/job=\\*"([^"\\]+)/g)) assert.equal(m[1], metricsSvc.metadata.name, "job label in alerts/dashboard");

      const policies = byKind(objects, "NetworkPolicy");
      assert.ok(policies.length > 0, "no NetworkPolicy");
      for (const np of policies) {
        const spec = np.spec as { podSelector: { matchLabels: Record<string, string> }; ingress: { ports?: Obj[] }[] };
        const pods = deployments.filter((d) => selects(spec.podSelector.matchLabels, podLabels(d)));
        for (const d of gatehousePods) assert.ok(pods.includes(d), `NetworkPolicy ${np.metadata.name} does not cover ${d.metadata.name}`);
        for (const rule of spec.ingress)
          for (const p of rule.ports ?? [])
            assert.ok(pods.some((d) => resolvePort(podSpec(d).containers as Obj[], p.port) !== undefined), `NetworkPolicy port ${String(p.port)} is on no selected pod`);
      }
    });

    test("pods are locked down: non-root, read-only root, emptyDir data folder, key from a Secret", () => {
      for (const gc of gatehouseContainers(objects)) {
        const where = `${gc.deployment.metadata.name}/${String(gc.container.name)}`;
        const spec = podSpec(gc.deployment);
        const podSec = spec.securityContext as Obj;
        const sec = gc.container.securityContext as Obj;
        assert.equal(podSec.runAsNonRoot, true, `${where}: runAsNonRoot`);
        assert.equal(podSec.runAsUser, 10001, `${where}: runAsUser is the image's user (deploy/Dockerfile)`);
        assert.equal(sec.readOnlyRootFilesystem, true, `${where}: readOnlyRootFilesystem`);
        assert.equal(sec.allowPrivilegeEscalation, false, `${where}: allowPrivilegeEscalation`);
        const resources = gc.container.resources as { requests?: Obj; limits?: Obj } | undefined;
        assert.ok(resources?.requests?.cpu && resources.requests.memory && resources.limits?.memory, `${where}: resources`);

        const volumes = new Map(((spec.volumes as Obj[] | undefined) ?? []).map((v) => [String(v.name), v]));
        const mounts = (gc.container.volumeMounts as { name: string; mountPath: string }[] | undefined) ?? [];
        const mountOf = (path: string) => mounts.find((m) => m.mountPath === path);
        const data = mountOf(gc.config.dataDir);
        assert.ok(data && volumes.get(data.name)?.emptyDir, `${where}: GATEHOUSE_DATA_DIR ${gc.config.dataDir} must be an emptyDir mount`);
        const keyMount = mountOf(dirname(gc.config.signingKeyFile));
        const keyVolume = keyMount ? (volumes.get(keyMount.name)?.secret as { secretName: string } | undefined) : undefined;
        assert.ok(keyVolume, `${where}: the signing key ${gc.config.signingKeyFile} must come from a Secret volume`);
        assert.equal(basename(gc.config.signingKeyFile), "signing.key", "the key the keygen Job writes");
        assert.deepEqual(keygenJobs(objects), [keyVolume.secretName], `${where}: the gatehouse-keygen Job must create Secret ${keyVolume.secretName}`);
        assert.equal(find(objects, "Secret", keyVolume.secretName), undefined, "no placeholder key Secret (the Job would keep it)");
        if (gc.command === "serve" && gc.config.tls && !gc.config.tls.generateIfMissing) {
          const tlsMount = mountOf(dirname(gc.config.tls.certFile));
          assert.ok(tlsMount && volumes.get(tlsMount.name)?.secret, `${where}: GATEHOUSE_TLS=files needs the certificate from a Secret volume`);
          assert.equal(dirname(gc.config.tls.keyFile), dirname(gc.config.tls.certFile));
        }
      }
    });

    test("secrets stay in Secrets; the grace period covers Gatehouse's shutdown", () => {
      for (const cm of byKind(objects, "ConfigMap"))
        for (const k of ["GATEHOUSE_ADMIN_TOKEN", "REDIS_URL"]) assert.ok(!(k in ((cm.data as Obj | undefined) ?? {})), `${k} belongs in a Secret, not ConfigMap ${cm.metadata.name}`);
      for (const gc of gatehouseContainers(objects)) {
        const where = `${gc.deployment.metadata.name}/${String(gc.container.name)}`;
        const grace = Number(podSpec(gc.deployment).terminationGracePeriodSeconds ?? 30) * 1000;
        const preStop = ((gc.container.lifecycle as Obj | undefined)?.preStop as { exec?: { command: string[] } } | undefined)?.exec?.command;
        const sleepMs = preStop?.[0] === "sleep" ? Number(preStop[1]) * 1000 : 0;
        // src/cli.ts exits hard at shutdownTimeoutMs + 5 s; the kubelet must not SIGKILL before.
        assert.ok(grace >= sleepMs + gc.config.shutdownTimeoutMs + 5000, `${where}: terminationGracePeriodSeconds ${grace / 1000} < preStop + GATEHOUSE_SHUTDOWN_TIMEOUT_MS + 5 s`);
      }
    });

    test("every Deployment has a PodDisruptionBudget; HPAs target real Deployments", () => {
      const pdbs = byKind(objects, "PodDisruptionBudget");
      for (const d of byKind(objects, "Deployment")) {
        assert.ok(
          pdbs.some((p) => selects(((p.spec as Obj).selector as { matchLabels: Record<string, string> }).matchLabels, podLabels(d))),
          `no PodDisruptionBudget for ${d.metadata.name}`,
        );
      }
      for (const hpa of byKind(objects, "HorizontalPodAutoscaler")) {
        const ref = (hpa.spec as Obj).scaleTargetRef as { kind: string; name: string };
        const target = find(objects, ref.kind, ref.name);
        assert.ok(target, `HPA ${hpa.metadata.name} targets a missing ${ref.kind}/${ref.name}`);
        assert.equal((target.spec as Obj).replicas, undefined, `${ref.name}: leave replicas to the HPA`);
      }
    });
  });
}

describe("deploy: the schema checks refuse what kubectl, Prometheus and Grafana refuse", () => {
  const base = renderKustomization(join(k8sDir, "overlays", "split"));
  const mutate = (kind: string, name: string, edit: (o: Obj) => void) =>
    base.map((o) => {
      const c = structuredClone(o);
      if (c.kind === kind && c.metadata.name === name) edit(c as unknown as Obj);
      return c;
    });
  const podSpec = (o: Obj) => ((o.spec as Obj).template as Obj).spec as Obj;
  const cases: { why: string; objects: K8sObject[]; expect: RegExp }[] = [
    {
      why: "a setting put under metadata instead of data (issue 13: kubectl apply refuses the ConfigMap)",
      objects: mutate("ConfigMap", "gatehouse-config", (o) => ((o.metadata as Obj).NODE_OPTIONS = "--max-old-space-size=256")),
      expect: /ConfigMap\/gatehouse-config: \/metadata has unknown field "NODE_OPTIONS"/,
    },
    {
      why: "a misspelt container field is ignored by the API server but refused by kubectl's strict validation",
      objects: mutate("Deployment", "gatehouse", (o) => ((podSpec(o).containers as Obj[])[0]!.resource = {})),
      expect: /Deployment\/gatehouse: \/spec\/template\/spec\/containers\/0 has unknown field "resource"/,
    },
    {
      why: "a quoted replica count is a string, not an int32",
      objects: mutate("Deployment", "gatehouse-worker", (o) => ((o.spec as Obj).replicas = "2")),
      expect: /Deployment\/gatehouse-worker: \/spec\/replicas must be integer/,
    },
    {
      why: "a memory limit that is not a Kubernetes quantity",
      objects: mutate("Deployment", "gatehouse", (o) => (((podSpec(o).containers as Obj[])[0]!.resources as Obj).limits = { memory: "512 MB" })),
      expect: /resources\/limits\/memory must match format "quantity"/,
    },
  ];
  for (const c of cases) {
    test(`Kubernetes schemas: ${c.why}`, () => {
      const { problems } = K8S_SCHEMAS.validate(c.objects);
      assert.ok(problems.some((p) => c.expect.test(p)), `expected ${c.expect} in ${JSON.stringify(problems)}`);
    });
  }

  test("promtool: a template function Prometheus does not have (issue 13: humanizeBytes)", (t) => {
    const rule = byKind(base, "PrometheusRule")[0]!;
    const text = JSON.stringify(rule.spec).replace("humanize1024", "humanizeBytes");
    assert.notEqual(text, JSON.stringify(rule.spec), "the memory alert uses humanize1024");
    const r = promtoolCheck(JSON.parse(text) as Obj);
    if ("skip" in r) return t.skip(r.skip);
    assert.notEqual(r.status, 0, "promtool accepts an unknown template function");
    assert.match(r.output, /function "humanizeBytes" not defined/);
  });

  test("Grafana schema: unknown fields and values outside the schema's enumerations", () => {
    const dashboard = JSON.parse(readFileSync(join(deployDir, "grafana/gatehouse-dashboard.json"), "utf8")) as Obj & { templating: { list: Obj[] } };
    dashboard.templating.list[0]!.type = "prometheus"; // why: the variable type is an enumeration (VariableType)
    (dashboard.panels as Obj[])[1]!.gridpos = (dashboard.panels as Obj[])[1]!.gridPos; // why: field names are case-sensitive
    const problems = checkGrafanaDashboard(JSON.stringify(dashboard, null, 2));
    assert.ok(problems.some((p) => /"prometheus"' is not assignable to type 'VariableType'/.test(p)), problems.join("\n"));
    assert.ok(problems.some((p) => /'"gridpos"' does not exist/.test(p)), problems.join("\n"));
  });
});

describe("deploy: overlay specifics", () => {
  test("sidecar: one pod with the homeserver, admin API on loopback", () => {
    const objects = rendered.get("sidecar")!;
    const deployments = byKind(objects, "Deployment");
    assert.equal(deployments.length, 1);
    const containers = podSpec(deployments[0]!).containers as Obj[];
    assert.ok(containers.some((c) => !isGatehouseImage(c.image)), "a homeserver container beside Gatehouse");
    const [gc] = gatehouseContainers(objects);
    assert.equal(gc!.config.admin.host, "127.0.0.1");
    assert.equal(gc!.config.runWorkers, true);
  });

  test("bridge: one pod with the bridge, which reaches the client listener on loopback and is pushed to at its registration's url", () => {
    const objects = rendered.get("bridge")!;
    const deployments = byKind(objects, "Deployment");
    assert.equal(deployments.length, 1);
    const containers = podSpec(deployments[0]!).containers as Obj[];
    assert.deepEqual(containers.map((c) => c.name).sort(), ["bridge", "gatehouse"], "the bridge replaces the sidecar's homeserver");
    const [gc] = gatehouseContainers(objects);
    const config = gc!.config;
    assert.equal(config.appservices.length, 1, "the registration is loaded");
    assert.equal(config.client.host, "127.0.0.1", "the client listener stays inside the pod");
    assert.equal(config.admin.host, "127.0.0.1");
    const bridge = containers.find((c) => c.name === "bridge")!;
    const hsUrl = new URL(String(((bridge.env as Obj[]).find((e) => e.name === "HOMESERVER_URL") as Obj).value));
    assert.deepEqual([hsUrl.hostname, Number(hsUrl.port)], [config.client.host, config.client.port], "the bridge's homeserver URL is Gatehouse's client listener");
    const push = new URL(config.appservices[0]!.url!);
    assert.equal(push.hostname, "127.0.0.1", "pushes stay on the pod's loopback");
    assert.ok(((bridge.ports as Obj[] | undefined) ?? []).some((p) => p.containerPort === Number(push.port)), `the bridge container listens on the registration's port ${push.port}`);
    const gatehousePorts = [config.federation.port, config.admin.port, config.client.port, config.metrics?.port];
    assert.ok(!gatehousePorts.includes(Number(push.port)), "the bridge's port is not one of Gatehouse's listeners (one network namespace)");
  });

  test("ingress: TLS ends at the ingress for the server name, which Gatehouse's well-known delegates to :443", () => {
    const objects = rendered.get("ingress")!;
    const ing = byKind(objects, "Ingress")[0]!;
    const spec = ing.spec as { tls: { hosts: string[]; secretName: string }[]; rules: { host: string; http: { paths: { path: string; backend: { service: { name: string; port: { name: string } } } }[] } }[] };
    assert.ok((ing.metadata as { annotations?: Record<string, string> }).annotations?.["cert-manager.io/cluster-issuer"], "cert-manager issues the certificate");
    for (const gc of gatehouseContainers(objects).filter((g) => g.command === "serve")) {
      assert.equal(gc.config.tls, null, "plain HTTP behind the ingress");
      assert.ok(!((gc.container.volumeMounts as Obj[]) ?? []).some((m) => String(m.mountPath).includes("tls")), "no TLS Secret mounted");
      const host = parseServerName(gc.config.serverName)!.host;
      assert.equal(gc.config.wellKnownServer, `${host}:443`);
      assert.ok(spec.tls.some((t) => t.hosts.includes(host)), "the certificate covers the server name");
      const rule = spec.rules.find((r) => r.host === host);
      assert.ok(rule, "a rule for the server name");
      const paths = rule.http.paths.map((p) => p.path);
      for (const want of ["/.well-known/matrix/server", "/_matrix/federation", "/_matrix/key"]) assert.ok(paths.includes(want), `routes ${want}`);
      const svc = find(objects, "Service", rule.http.paths[0]!.backend.service.name)!;
      for (const p of rule.http.paths) {
        assert.equal(p.backend.service.name, svc.metadata.name);
        assert.ok(((svc.spec as Obj).ports as Obj[]).some((x) => x.name === p.backend.service.port.name), `Service port ${p.backend.service.port.name}`);
      }
      assert.equal(resolvePort([gc.container], "federation"), gc.config.federation.port);
    }
  });

  test("split: gateway without the in-process sender, HPA-scaled workers", () => {
    const objects = rendered.get("split")!;
    const gcs = gatehouseContainers(objects);
    const serve = gcs.filter((g) => g.command === "serve");
    const workers = gcs.filter((g) => g.command === "worker");
    assert.ok(serve.length === 1 && workers.length === 1, `one serve and one worker container, got ${gcs.map((g) => g.command).join(", ")}`);
    assert.equal(serve[0]!.config.runWorkers, false);
    assert.ok(
      byKind(objects, "HorizontalPodAutoscaler").some((h) => ((h.spec as Obj).scaleTargetRef as { name: string }).name === workers[0]!.deployment.metadata.name),
      "the worker Deployment is scaled by an HPA",
    );
  });
});

describe("deploy: overlays/redis-cluster", () => {
  test("a redis-cluster:// seed list, WAIT for one replica, gateway and workers each scaled by an HPA, Bitnami values that bound loss", () => {
    const objects = rendered.get("redis-cluster")!;
    const gcs = gatehouseContainers(objects);
    assert.ok(gcs.length >= 2);
    for (const gc of gcs) {
      const seeds = parseClusterUrl(gc.config.redisUrl ?? "");
      assert.ok(seeds && seeds.nodes.length >= 3, `${gc.deployment.metadata.name}: REDIS_URL is a redis-cluster:// list of seeds`);
      assert.equal(gc.config.redisWait.replicas, 1, "acknowledged writes wait for a replica");
      assert.ok(gc.config.sender.shards >= 8, "sender queues spread over the primaries");
    }
    const scaled = byKind(objects, "HorizontalPodAutoscaler").map((h) => ((h.spec as Obj).scaleTargetRef as { name: string }).name);
    for (const gc of gcs) assert.ok(scaled.includes(gc.deployment.metadata.name), `${gc.deployment.metadata.name} is scaled by an HPA (autoscaling/v2)`);
    assert.ok(byKind(objects, "HorizontalPodAutoscaler").every((h) => h.apiVersion === "autoscaling/v2"));
    const values = readFileSync(join(deployDir, "redis-cluster", "bitnami-values.yaml"), "utf8");
    for (const line of ["appendonly yes", "maxmemory-policy noeviction", "min-replicas-to-write 1"]) assert.ok(values.includes(line), `bitnami-values.yaml sets ${line}`);
    assert.match(values, /replicas: 1/, "one replica per primary (what WAIT 1 assumes)");
  });
});

describe("deploy: alerts (PrometheusRule)", () => {
  const rules = byKind(renderKustomization(join(k8sDir, "base")), "PrometheusRule");
  const alerts = rules.flatMap((r) =>
    ((r.spec as { groups: { name: string; rules: Obj[] }[] }).groups).flatMap((g) => g.rules.map((rule) => ({ group: g.name, ...rule }))),
  ) as { group: string; alert?: string; record?: string; expr: string; labels?: Record<string, string>; annotations?: Record<string, string> }[];

  test("promtool check rules accepts the rendered rules", (t) => {
    assert.equal(rules.length, 1);
    const r = promtoolCheck(rules[0]!.spec as Obj);
    if ("skip" in r) return t.skip(r.skip);
    t.diagnostic(r.output.trim());
    assert.equal(r.status, 0, r.output);
  });

  test("there are alerts, each with a severity, summary and description, all documented", () => {
    assert.ok(alerts.length >= 10, `only ${alerts.length} alerts`);
    const readme = readFileSync(join(deployDir, "README.md"), "utf8");
    const names = new Set<string>();
    for (const a of alerts) {
      assert.ok(a.alert, `${a.group}: only alerting rules are expected`);
      assert.ok(!names.has(a.alert), `${a.alert} is defined twice`);
      names.add(a.alert);
      assert.ok(["critical", "warning", "info"].includes(a.labels?.severity ?? ""), `${a.alert}: severity`);
      assert.ok((a.annotations?.summary ?? "").length > 10, `${a.alert}: summary`);
      assert.ok((a.annotations?.description ?? "").length > 80, `${a.alert}: description saying what it means and what to do`);
      assert.ok(readme.includes(a.alert), `${a.alert} is not explained in deploy/README.md`);
    }
  });

  test("every series and label in the expressions exists (src/metrics.ts, or the allowed external ones)", () => {
    const problems = alerts.flatMap((a) => checkExpr(a.expr, a.alert ?? a.group));
    assert.deepEqual(problems, []);
  });

  test("deployment matchers name the rendered Deployments", () => {
    const names = OVERLAYS.flatMap((o) => byKind(rendered.get(o)!, "Deployment").map((d) => d.metadata.name));
    const patterns: RegExp[] = [];
    for (const a of alerts)
      for (const sel of promqlNames(a.expr).selectors)
        for (const m of sel.matchers.filter((x) => x.label === "deployment")) {
          const re = new RegExp(`^(?:${m.op === "=~" ? m.value : m.value.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")})$`);
          assert.ok(names.some((n) => re.test(n)), `${a.alert}: deployment${m.op}"${m.value}" matches no Deployment (${names.join(", ")})`);
          patterns.push(re);
        }
    for (const n of names) assert.ok(patterns.some((re) => re.test(n)), `Deployment ${n} is watched by no readiness alert`);
  });

  test("thresholds follow the manifests: memory alert below the memory limit", () => {
    const mem = alerts.find((a) => a.alert === "GatehouseMemoryHigh");
    assert.ok(mem, "GatehouseMemoryHigh is missing");
    // "… > 440 * 1024 * 1024"
    const threshold = /> ([\d *]+)$/.exec(mem.expr.trim())![1]!.split("*").reduce((a, b) => a * Number(b.trim()), 1);
    for (const o of OVERLAYS)
      for (const gc of gatehouseContainers(rendered.get(o)!)) {
        const limit = String(((gc.container.resources as Obj).limits as Obj).memory);
        const bytes = Number(/^(\d+)Mi$/.exec(limit)?.[1]) * 1024 * 1024;
        assert.ok(threshold < bytes && threshold > bytes * 0.7, `${o}: GatehouseMemoryHigh threshold ${threshold} vs limit ${limit}`);
      }
  });
});

describe("deploy: Grafana dashboard", () => {
  const file = join(deployDir, "grafana/gatehouse-dashboard.json");
  const dashboard = JSON.parse(readFileSync(file, "utf8")) as {
    uid: string;
    panels: { id: number; type: string; title: string; targets?: { expr: string; refId: string }[]; datasource?: { uid: string } }[];
    templating: { list: { name: string; query?: unknown }[] };
  };
  const panels = dashboard.panels.filter((p) => p.type !== "row");
  const exprs = panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));

  test("the dashboard matches Grafana's Dashboard schema (@grafana/schema)", () => {
    assert.deepEqual(checkGrafanaDashboard(readFileSync(file, "utf8")), []);
  });

  test("panels are well formed", () => {
    assert.ok(panels.length >= 20, `only ${panels.length} panels`);
    const ids = dashboard.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, "panel ids are unique");
    for (const p of panels) {
      assert.ok(p.targets && p.targets.length > 0, `${p.title}: no query`);
      assert.equal(p.datasource?.uid, "${datasource}", `${p.title}: use the datasource variable`);
    }
  });

  test("every series and label in the queries exists", () => {
    assert.deepEqual(
      exprs.flatMap((e) => checkExpr(e.expr, e.panel)),
      [],
    );
    for (const v of dashboard.templating.list) {
      const q = typeof v.query === "string" ? v.query : (v.query as { query?: string } | undefined)?.query;
      const m = q && /^label_values\(([a-zA-Z_:][\w:]*),\s*(\w+)\)$/.exec(q);
      if (!m) continue;
      assert.ok(METRICS.has(m[1]!), `variable ${v.name}: ${m[1]} is not a metric`);
      assert.ok(METRICS.get(m[1]!)!.labels.has(m[2]!) || TARGET_LABELS.has(m[2]!), `variable ${v.name}: label ${m[2]}`);
    }
  });

  test("every Gatehouse metric of src/metrics.ts is on the dashboard; queries filter by $namespace", () => {
    const used = new Set(exprs.flatMap((e) => promqlNames(e.expr).selectors.map((s) => s.name.replace(/_(bucket|sum|count)$/, ""))));
    const own = new Metrics(new Registry(), { defaultMetrics: false }).registry.getMetricsAsArray().map((m) => m.name);
    assert.deepEqual(own.filter((n) => !used.has(n)), [], "metrics without a panel");
    for (const e of exprs)
      for (const sel of promqlNames(e.expr).selectors)
        assert.ok(sel.matchers.some((m) => m.label === "namespace" && m.value === "$namespace"), `${e.panel}: ${sel.name} is not filtered by $namespace`);
  });
});

describe("deploy: Dockerfile and docs", () => {
  const dockerfile = readFileSync(join(deployDir, "Dockerfile"), "utf8");
  const instructions = dockerfile
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"))
    .map((l) => {
      const [op, ...rest] = l.split(/\s+/);
      return { op: op!.toUpperCase(), args: rest.join(" ") };
    });
  const stages = instructions.filter((i) => i.op === "FROM");
  const runtimeStart = instructions.lastIndexOf(stages.at(-1)!);
  const runtime = instructions.slice(runtimeStart);

  test("multi-stage build: npm run build, runtime with production deps, dist, bin and package.json", () => {
    assert.ok(stages.length >= 2, "a multi-stage build");
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { scripts: Record<string, string> };
    assert.ok(pkg.scripts.build, "package.json has a build script");
    assert.ok(instructions.some((i) => i.op === "RUN" && i.args.includes("npm run build")), "the build stage runs npm run build");
    assert.ok(instructions.some((i) => i.op === "RUN" && /npm ci .*--omit=dev/.test(i.args)), "production dependencies via npm ci --omit=dev");
    const tsbuild = JSON.parse(readFileSync(join(root, "tsconfig.build.json"), "utf8")) as { compilerOptions: { outDir: string } };
    const copies = runtime.filter((i) => i.op === "COPY").map((i) => i.args);
    for (const want of [`/app/${tsbuild.compilerOptions.outDir}`, "/app/node_modules", "package.json", "bin"])
      assert.ok(copies.some((c) => c.split(/\s+/).includes(want) || c.split(/\s+/).includes(`${want}`)), `runtime stage copies ${want}`);
    // Every COPY from the build context names a file that exists and that .dockerignore keeps.
    const ignored = readFileSync(join(root, ".dockerignore"), "utf8").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
    for (const c of instructions.filter((i) => i.op === "COPY" && !i.args.startsWith("--from"))) {
      const parts = c.args.split(/\s+/);
      for (const src of parts.slice(0, -1)) {
        assert.ok(existsSync(join(root, src)), `COPY ${src}: not in the repository`);
        assert.ok(!ignored.includes(src) && !ignored.includes(src.split("/")[0]!), `COPY ${src} is excluded by .dockerignore`);
      }
    }
  });

  test("runtime: non-root user matching the pods, ports, entrypoint and command", () => {
    const user = runtime.filter((i) => i.op === "USER").at(-1)?.args;
    assert.equal(user, "10001:10001");
    const defaults = loadConfig({}, "/");
    const expose = runtime.filter((i) => i.op === "EXPOSE").flatMap((i) => i.args.split(/\s+/).map(Number));
    assert.deepEqual(expose.sort(), [defaults.federation.port, defaults.admin.port, defaults.metrics!.port].sort());
    const entrypoint = JSON.parse(runtime.find((i) => i.op === "ENTRYPOINT")!.args) as string[];
    assert.ok(entrypoint.some((a) => a.endsWith("bin/gatehouse.mjs")), "ENTRYPOINT runs bin/gatehouse.mjs");
    assert.ok(existsSync(join(root, "bin/gatehouse.mjs")), "bin/gatehouse.mjs exists");
    const cmd = JSON.parse(runtime.find((i) => i.op === "CMD")!.args) as string[];
    assert.deepEqual(cmd, ["serve"]);
    assert.ok(CLI.has(cmd[0]!), `CMD ${cmd[0]} is not a command of src/cli.ts`);
  });

  test("the Dockerfile parses: known instructions, stages named before use, a JSON-form ENTRYPOINT and CMD", () => {
    const KNOWN = new Set(["FROM", "ARG", "RUN", "COPY", "ADD", "ENV", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "LABEL", "VOLUME", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "ONBUILD"]);
    for (const i of instructions) assert.ok(KNOWN.has(i.op), `unknown instruction ${i.op}`);
    const named: string[] = [];
    for (const i of instructions) {
      if (i.op === "FROM") {
        const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(i.args);
        assert.ok(m, `FROM ${i.args}`);
        if (m[2]) named.push(m[2]);
      }
      const from = /--from=(\S+)/.exec(i.args)?.[1];
      if (from) assert.ok(named.includes(from), `COPY --from=${from} before that stage`);
    }
    for (const op of ["ENTRYPOINT", "CMD"]) assert.ok(Array.isArray(JSON.parse(runtime.find((i) => i.op === op)!.args)), `${op} in exec (JSON) form`);
  });

  test("Node.js 24 LTS base; engines in package.json admit it; gatehouse on PATH; no tsx/esbuild in production", () => {
    const arg = instructions.find((i) => i.op === "ARG" && i.args.startsWith("NODE_IMAGE="))?.args.split("=")[1];
    assert.match(arg ?? "", /^node:24-/, "the image is built on Node 24");
    assert.ok(stages.every((s) => s.args.startsWith("${NODE_IMAGE}")), "every stage uses NODE_IMAGE");
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { engines: { node: string }; dependencies: Record<string, string>; bin: Record<string, string> };
    const min = Number(/^>=(\d+)/.exec(pkg.engines.node)?.[1]);
    assert.ok(min <= 24 && min >= 20, `engines.node ${pkg.engines.node}`);
    assert.ok(runtime.some((i) => i.op === "RUN" && /ln -s \/app\/bin\/gatehouse\.mjs \/usr\/local\/bin\/gatehouse\b/.test(i.args)), "gatehouse on PATH");
    assert.equal(pkg.bin.gatehouse, "bin/gatehouse.mjs");
    assert.ok(statSync(join(root, "bin/gatehouse.mjs")).mode & 0o111, "bin/gatehouse.mjs is executable");
    // What `npm ci --omit=dev` installs: lockfile entries not marked dev.
    const lock = JSON.parse(readFileSync(join(root, "package-lock.json"), "utf8")) as { packages: Record<string, { dev?: boolean; devOptional?: boolean }> };
    for (const name of ["tsx", "esbuild", "typescript", "@esbuild/linux-x64"]) {
      const entry = lock.packages[`node_modules/${name}`];
      assert.ok(entry, `${name} is in the lockfile`);
      assert.ok(entry.dev === true, `${name} would ship as a production dependency`);
    }
  });

  test("ENV defaults are settings that loadConfig accepts", () => {
    const env: Env = {};
    for (const i of runtime.filter((x) => x.op === "ENV")) for (const m of i.args.matchAll(/([A-Z_][A-Z0-9_]*)=(\S+)/g)) env[m[1]!] = m[2]!;
    const settings = Object.keys(env).filter((k) => k !== "NODE_ENV");
    assert.ok(settings.length > 0, "the image sets GATEHOUSE_* defaults");
    for (const k of settings) assert.ok(SETTINGS.has(k), `${k} is not a setting`);
    const config = loadConfig(env, "/");
    assert.equal(config.metrics?.host, "0.0.0.0");
  });

  test("every setting loadConfig reads has a row in README.md's settings table", () => {
    const readme = readFileSync(join(root, "README.md"), "utf8");
    // A row's first cell names one setting or several (`A` / `B`).
    const rows = new Set([...readme.matchAll(/^\| ([^|]+) \|/gm)].flatMap((m) => [...m[1]!.matchAll(/`([A-Z][A-Z0-9_]*)`/g)].map((n) => n[1]!)));
    assert.ok(SETTINGS.size > 40, `settings found: ${SETTINGS.size}`);
    assert.deepEqual([...SETTINGS].filter((k) => !rows.has(k)), [], "settings without a README row");
  });

  test("every GATEHOUSE_* name in deploy/ (comments, README, Dockerfile) is a setting", () => {
    const bad: string[] = [];
    for (const f of filesUnder(deployDir)) for (const n of unknownSettingMentions(readFileSync(f, "utf8"))) bad.push(`${relative(root, f)}: ${n}`);
    assert.deepEqual(bad, []);
  });

  test("YAML files parse, and every file under kubernetes/ is used by a kustomization", () => {
    const used = new Set<string>();
    for (const f of filesUnder(k8sDir).filter((x) => x.endsWith("kustomization.yaml"))) {
      used.add(f);
      const k = parseYamlStream(readFileSync(f, "utf8"), f)[0] as { resources?: string[]; patches?: { path: string }[] };
      for (const r of k.resources ?? []) used.add(join(dirname(f), r));
      for (const p of k.patches ?? []) used.add(join(dirname(f), p.path));
    }
    for (const f of filesUnder(k8sDir)) {
      parseYamlStream(readFileSync(f, "utf8"), f);
      assert.ok(used.has(f), `${relative(root, f)} is not referenced by any kustomization`);
    }
  });
});
