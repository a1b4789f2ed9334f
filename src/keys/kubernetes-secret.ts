/**
 * `gatehouse keygen --kubernetes-secret NAME`: the signing key created inside the cluster, as a
 * Secret that exists only if absent. Runs in a pod (the gatehouse-keygen Job) and talks to the
 * Kubernetes API the in-cluster way: KUBERNETES_SERVICE_HOST/PORT, the service account's token,
 * CA certificate and namespace under /var/run/secrets/kubernetes.io/serviceaccount.
 *
 *   GET  /api/v1/namespaces/NS/secrets/NAME   200: keep it (its key is checked), 404: create:
 *   POST /api/v1/namespaces/NS/secrets        201: created; 409: another pod won the race, keep
 *                                             that one (read back and checked).
 *
 * The private key goes only into the Secret: never to disk, never to the output (the public key
 * and key id are printed). RBAC: deploy/kubernetes/base/keygen.yaml.
 */
import { request } from "node:https";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { formatSigningKeyFile, makeSigningKey, newKeyVersion, parseSigningKeyFile, type SigningKey } from "../protocol/signing-key.js";

export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";
/** The Secret's key holding the Synapse-format key file (what the pods mount as signing.key). */
export const SECRET_KEY = "signing.key";

export class KubernetesSecretError extends Error {}

interface InCluster {
  host: string;
  port: number;
  token: string;
  ca: string;
  namespace: string;
}

function inCluster(env: Record<string, string | undefined>, dir: string): InCluster {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = Number(env.KUBERNETES_SERVICE_PORT ?? "443");
  if (!host) throw new KubernetesSecretError("KUBERNETES_SERVICE_HOST is not set: --kubernetes-secret runs in a pod (the gatehouse-keygen Job)");
  const read = (f: string) => {
    try {
      return readFileSync(join(dir, f), "utf8").trim();
    } catch (e) {
      throw new KubernetesSecretError(
        `cannot read the service account's ${f} in ${dir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): the pod needs automountServiceAccountToken: true`,
      );
    }
  };
  return { host, port, token: read("token"), ca: read("ca.crt"), namespace: read("namespace") };
}

function call(k: InCluster, method: "GET" | "POST", path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> | null }> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: k.host,
        port: k.port,
        path,
        method,
        ca: k.ca,
        timeout: 15_000,
        headers: { Authorization: `Bearer ${k.token}`, Accept: "application/json", ...(payload ? { "Content-Type": "application/json" } : {}) },
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (text += c));
        res.on("end", () => {
          let json: Record<string, unknown> | null = null;
          try {
            json = JSON.parse(text) as Record<string, unknown>;
          } catch {
            json = null;
          }
          resolve({ status: res.statusCode ?? 0, json });
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error("no answer within 15 s")));
    req.on("error", (e) => reject(new KubernetesSecretError(`cannot reach the Kubernetes API at https://${k.host}:${k.port}: ${e.message}`)));
    req.end(payload);
  });
}

function refused(what: string, name: string, ns: string, status: number, json: Record<string, unknown> | null): KubernetesSecretError {
  const message = typeof json?.message === "string" ? json.message : `HTTP ${status}`;
  const hint = status === 403 ? " (RBAC: the gatehouse-keygen Role of deploy/kubernetes/base/keygen.yaml grants get and create on Secrets)" : "";
  return new KubernetesSecretError(`cannot ${what} Secret ${ns}/${name}: ${message}${hint}`);
}

function keyOf(json: Record<string, unknown> | null, name: string, ns: string): SigningKey {
  const data = (json?.data ?? {}) as Record<string, string>;
  const b64 = data[SECRET_KEY];
  if (!b64) throw new KubernetesSecretError(`Secret ${ns}/${name} exists but has no ${SECRET_KEY}: delete it, or add the key file under ${SECRET_KEY}`);
  try {
    return parseSigningKeyFile(Buffer.from(b64, "base64").toString("utf8"))[0]!;
  } catch (e) {
    throw new KubernetesSecretError(`Secret ${ns}/${name} has an invalid ${SECRET_KEY}: ${(e as Error).message}`);
  }
}

export interface SecretResult {
  created: boolean;
  namespace: string;
  key: SigningKey;
}

/** Creates the Secret with a fresh signing key unless it exists; returns the key in force. */
export async function ensureSigningKeySecret(name: string, env: Record<string, string | undefined> = process.env, dir = SERVICE_ACCOUNT_DIR): Promise<SecretResult> {
  if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(name)) throw new KubernetesSecretError(`not a Secret name: ${JSON.stringify(name)}`);
  const k = inCluster(env, dir);
  const path = `/api/v1/namespaces/${encodeURIComponent(k.namespace)}/secrets`;
  const existing = await call(k, "GET", `${path}/${name}`);
  if (existing.status === 200) return { created: false, namespace: k.namespace, key: keyOf(existing.json, name, k.namespace) };
  if (existing.status !== 404) throw refused("read", name, k.namespace, existing.status, existing.json);

  const key = makeSigningKey(`ed25519:${newKeyVersion(randomBytes(4))}`, randomBytes(32));
  const secret = {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name, labels: { "app.kubernetes.io/name": "gatehouse", "app.kubernetes.io/part-of": "gatehouse", "app.kubernetes.io/created-by": "gatehouse-keygen" } },
    type: "Opaque",
    data: { [SECRET_KEY]: Buffer.from(formatSigningKeyFile([key]), "utf8").toString("base64") },
  };
  const made = await call(k, "POST", path, secret);
  if (made.status === 201 || made.status === 200) return { created: true, namespace: k.namespace, key };
  if (made.status === 409) {
    // Created meanwhile by another keygen pod: that key is the one in force.
    const again = await call(k, "GET", `${path}/${name}`);
    if (again.status === 200) return { created: false, namespace: k.namespace, key: keyOf(again.json, name, k.namespace) };
    throw refused("read", name, k.namespace, again.status, again.json);
  }
  throw refused("create", name, k.namespace, made.status, made.json);
}
