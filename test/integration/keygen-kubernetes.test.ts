// `gatehouse keygen --kubernetes-secret NAME` as the gatehouse-keygen Job runs it: the CLI as a
// child process, in-cluster settings (KUBERNETES_SERVICE_HOST/PORT and a service account folder
// with token, ca.crt and namespace), against a small fake Kubernetes API over HTTPS that keeps
// Secrets in memory, checks the bearer token and can refuse like RBAC does.
import { test, describe, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer, type Server } from "node:https";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { generateSelfSignedCertificate } from "../../src/tls.js";
import { parseSigningKeyFile } from "../../src/protocol/signing-key.js";

const root = new URL("../..", import.meta.url).pathname;
const TOKEN = "fake-service-account-token";
const NS = "gatehouse";

let dir: string;
let saDir: string;
let server: Server;
let port: number;
/** The fake API's Secrets of namespace NS, and what it was asked. */
const secrets = new Map<string, { metadata: { name: string; labels?: Record<string, string> }; type?: string; data: Record<string, string> }>();
let calls: string[] = [];
let denyCreate = false;
/** Simulates another keygen pod creating the Secret between our GET and POST. */
let raceWith: string | null = null;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "gatehouse-keygen-k8s-"));
  saDir = join(dir, "serviceaccount");
  await generateSelfSignedCertificate(join(saDir, "ca.crt"), join(dir, "apiserver.key"), "127.0.0.1");
  writeFileSync(join(saDir, "token"), `${TOKEN}\n`);
  writeFileSync(join(saDir, "namespace"), NS);
  server = createServer({ cert: readFileSync(join(saDir, "ca.crt")), key: readFileSync(join(dir, "apiserver.key")) }, (req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString("utf8")));
    req.on("end", () => {
      calls.push(`${req.method} ${req.url}`);
      const answer = (status: number, json: unknown) => {
        res.writeHead(status, { "Content-Type": "application/json" });
        res.end(JSON.stringify(json));
      };
      const status = (code: number, reason: string, message: string) => answer(code, { kind: "Status", apiVersion: "v1", status: "Failure", reason, message, code });
      if (req.headers.authorization !== `Bearer ${TOKEN}`) return status(401, "Unauthorized", "Unauthorized");
      const base = `/api/v1/namespaces/${NS}/secrets`;
      const m = /^\/api\/v1\/namespaces\/([^/]+)\/secrets(?:\/([^/]+))?$/.exec(req.url ?? "");
      if (!m || m[1] !== NS) return status(404, "NotFound", "the server could not find the requested resource");
      if (req.method === "GET" && m[2]) {
        const s = secrets.get(m[2]);
        return s ? answer(200, { apiVersion: "v1", kind: "Secret", ...s }) : status(404, "NotFound", `secrets "${m[2]}" not found`);
      }
      if (req.method === "POST" && req.url === base) {
        if (denyCreate)
          return status(403, "Forbidden", `secrets is forbidden: User "system:serviceaccount:${NS}:gatehouse-keygen" cannot create resource "secrets" in API group "" in the namespace "${NS}"`);
        const s = JSON.parse(body) as { metadata: { name: string } } & Record<string, unknown>;
        if (raceWith !== null) secrets.set(s.metadata.name, { metadata: { name: s.metadata.name }, data: { "signing.key": Buffer.from(raceWith).toString("base64") } });
        if (secrets.has(s.metadata.name)) return status(409, "AlreadyExists", `secrets "${s.metadata.name}" already exists`);
        secrets.set(s.metadata.name, s as never);
        return answer(201, s);
      }
      return status(405, "MethodNotAllowed", "method not allowed");
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as AddressInfo).port;
});
after(async () => {
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => {
  secrets.clear();
  calls = [];
  denyCreate = false;
  raceWith = null;
});

function keygen(name: string, env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const base = { PATH: process.env.PATH ?? "", KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: String(port) };
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(root, "bin/gatehouse.mjs"), "keygen", "--kubernetes-secret", name, "--serviceaccount-dir", saDir], {
      cwd: dir,
      env: { ...base, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

const EXISTING = "ed25519 a_old 7yJeTsDTaW8hTgSnTm5VUC7FDLv6qVqRnQqsw/yRZOA";

describe("gatehouse keygen --kubernetes-secret", () => {
  test("absent: creates the Secret with a valid key file under signing.key; prints only the public part", async () => {
    const r = await keygen("gatehouse-signing-key");
    assert.equal(r.code, 0, r.stderr);
    const s = secrets.get("gatehouse-signing-key");
    assert.ok(s, "Secret created");
    assert.equal(s.type, "Opaque");
    assert.equal(s.metadata.labels?.["app.kubernetes.io/name"], "gatehouse");
    const keyFile = Buffer.from(s.data["signing.key"]!, "base64").toString("utf8");
    const [key] = parseSigningKeyFile(keyFile);
    assert.match(r.stdout, new RegExp(`^created Secret ${NS}/gatehouse-signing-key with signing key ${key!.keyId}\\npublic key: ${key!.publicKeyBase64.replace(/[+/]/g, "\\$&")}\\n$`));
    assert.ok(!r.stdout.includes(keyFile.trim().split(" ")[2]!), "the private key is not printed");
    assert.deepEqual(calls, [`GET /api/v1/namespaces/${NS}/secrets/gatehouse-signing-key`, `POST /api/v1/namespaces/${NS}/secrets`]);
  });

  test("present: kept untouched (a second run, or an operator's own key)", async () => {
    secrets.set("gatehouse-signing-key", { metadata: { name: "gatehouse-signing-key" }, data: { "signing.key": Buffer.from(`${EXISTING}\n`).toString("base64") } });
    const r = await keygen("gatehouse-signing-key");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^kept Secret gatehouse\/gatehouse-signing-key with signing key ed25519:a_old\n/);
    assert.equal(Buffer.from(secrets.get("gatehouse-signing-key")!.data["signing.key"]!, "base64").toString(), `${EXISTING}\n`);
    assert.deepEqual(calls, [`GET /api/v1/namespaces/${NS}/secrets/gatehouse-signing-key`], "no write");
  });

  test("two Jobs at once: the one that lost the race keeps the winner's key (409 AlreadyExists)", async () => {
    raceWith = `${EXISTING}\n`;
    const r = await keygen("gatehouse-signing-key");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^kept Secret gatehouse\/gatehouse-signing-key with signing key ed25519:a_old\n/);
    assert.equal(calls.length, 3);
  });

  const failures: { why: string; setup: () => void; name?: string; env?: Record<string, string>; message: RegExp }[] = [
    {
      why: "RBAC refuses create: the API's message and where the Role is",
      setup: () => (denyCreate = true),
      message: /^gatehouse: cannot create Secret gatehouse\/gatehouse-signing-key: secrets is forbidden: .*cannot create resource "secrets".* \(RBAC: the gatehouse-keygen Role of deploy\/kubernetes\/base\/keygen\.yaml/,
    },
    {
      why: "an existing Secret without signing.key is not silently replaced",
      setup: () => secrets.set("gatehouse-signing-key", { metadata: { name: "gatehouse-signing-key" }, data: { other: "eA==" } }),
      message: /^gatehouse: Secret gatehouse\/gatehouse-signing-key exists but has no signing\.key/,
    },
    {
      why: "an existing Secret with a placeholder instead of a key (secret.example.yaml's) is reported",
      setup: () => secrets.set("gatehouse-signing-key", { metadata: { name: "gatehouse-signing-key" }, data: { "signing.key": Buffer.from("REPLACE-ME").toString("base64") } }),
      message: /^gatehouse: Secret gatehouse\/gatehouse-signing-key has an invalid signing\.key/,
    },
    { why: "outside a pod", setup: () => {}, env: { KUBERNETES_SERVICE_HOST: "" }, message: /^gatehouse: KUBERNETES_SERVICE_HOST is not set/ },
    { why: "a name Kubernetes would refuse", setup: () => {}, name: "Signing_Key", message: /^gatehouse: not a Secret name: "Signing_Key"/ },
  ];
  for (const c of failures) {
    test(`fails with one line, exit 1: ${c.why}`, async () => {
      c.setup();
      const r = await keygen(c.name ?? "gatehouse-signing-key", c.env);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, c.message);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    });
  }
});
