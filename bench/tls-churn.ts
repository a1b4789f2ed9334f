/**
 * `node --expose-gc --import tsx bench/tls-churn.ts` — native memory per outbound TLS connection
 * of the federation client (src/net/federation-client.ts), in a tight loop: a child process serves
 * HTTPS and answers every request with `Connection: close`, so each request is a new TLS
 * connection (what a destination that times out or drops its connections costs the sender).
 *
 *   TLS_CHURN_CONNECTIONS  connections (default 12000), 8 at a time
 *   TLS_CHURN_ROOT         checkout whose src/net/federation-client.ts is measured (default this
 *                          one; point it at another worktree for a before/after)
 *
 * Every 2,000 connections, after a full GC: RSS, V8's committed heap (heapTotal), heap used, and
 * native = RSS − heapTotal (OpenSSL, the allocator, libuv). Run it with LD_PRELOAD=libjemalloc.so.2
 * or MALLOC_* settings to compare allocators. Figures are printed, never asserted.
 */
import { fork } from "node:child_process";
import { readFileSync } from "node:fs";
import https from "node:https";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

if (process.argv[2] === "serve") {
  const { cert, key } = JSON.parse(process.env.TLS_CHURN_CERT!) as { cert: string; key: string };
  const server = https.createServer({ cert, key }, (req, res) => {
    req.resume();
    req.on("end", () => res.writeHead(200, { "Content-Type": "application/json", Connection: "close" }).end("{}"));
  });
  server.listen(0, "127.0.0.1", () => process.send!((server.address() as { port: number }).port));
} else {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("run with node --expose-gc");
  const repo = fileURLToPath(new URL("..", import.meta.url));
  const root = process.env.TLS_CHURN_ROOT ?? repo;
  const N = Number(process.env.TLS_CHURN_CONNECTIONS ?? "12000");
  const { FederationClient } = (await import(pathToFileURL(join(root, "src/net/federation-client.ts")).href)) as typeof import("../src/net/federation-client.js");
  const { makeSigningKey } = await import("../src/protocol/signing-key.js");
  const { generateSelfSignedCertificate } = await import("../src/tls.js");
  const { mkdtempSync, rmSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const dir = mkdtempSync(join(tmpdir(), "tls-churn-"));
  await generateSelfSignedCertificate(join(dir, "c.pem"), join(dir, "k.pem"), "localhost");
  const certEnv = JSON.stringify({ cert: readFileSync(join(dir, "c.pem"), "utf8"), key: readFileSync(join(dir, "k.pem"), "utf8") });
  rmSync(dir, { recursive: true });
  const child = fork(fileURLToPath(import.meta.url), ["serve"], { env: { ...process.env, TLS_CHURN_CERT: certEnv }, execArgv: ["--import", "tsx"] });
  const port = await new Promise<number>((resolve) => child.once("message", (p) => resolve(p as number)));
  const client = new FederationClient({
    serverName: "churn.test",
    signingKey: makeSigningKey("ed25519:a", new Uint8Array(32)),
    insecureSkipTlsVerify: true,
    allowPrivateAddresses: true,
    timeoutMs: 10_000,
  });
  const mb = (b: number) => (b / 1048576).toFixed(1);
  const rows: { n: number; native: number }[] = [];
  const report = (n: number) => {
    gc();
    const m = process.memoryUsage();
    rows.push({ n, native: m.rss - m.heapTotal });
    console.log(`${String(n).padStart(6)} connections: RSS ${mb(m.rss)} MB, heap committed ${mb(m.heapTotal)} MB, used ${mb(m.heapUsed)} MB, native ${mb(m.rss - m.heapTotal)} MB`);
  };
  console.log(`# tls-churn: ${N} outbound TLS connections, client from ${root}, node ${process.version}${process.env.LD_PRELOAD ? `, LD_PRELOAD=${process.env.LD_PRELOAD}` : ""}; ${new Date().toISOString()}`);
  report(0);
  for (let i = 0; i < N; i += 8) {
    await Promise.all(Array.from({ length: 8 }, () => client.request("PUT", `127.0.0.1:${port}`, "/churn", { n: i }, { signed: false })));
    if ((i + 8) % 2000 === 0) report(i + 8);
  }
  const first = rows[0]!;
  const last = rows[rows.length - 1]!;
  console.log(`native growth: ${mb(last.native - first.native)} MB over ${last.n} connections (${Math.round((last.native - first.native) / last.n)} B per connection)`);
  client.close();
  child.kill();
}
