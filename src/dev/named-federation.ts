/**
 * A federation of named servers for the interop tests and the demo, as on the internet: DNS names (A and SRV
 * records served by a dnsmasq on 127.0.0.53), `.well-known/matrix/server` delegation, and TLS
 * certificates issued by a private CA with verification on everywhere.
 *
 * It runs inside the private network and mount namespace `npm run test:interop` creates (see
 * scripts/test.mjs): there, lo is the only interface, /etc/resolv.conf (and the Synapse chroot's)
 * names 127.0.0.53, so no lookup and no connection leaves the namespace. Every server listens on
 * its own loopback address (127.0.0.x), so several can use port 8448 or 443.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import selfsigned from "selfsigned";
import { inPrivateNamespace } from "./netns.js";
import { resolveSrvWithTtl } from "../net/srv.js";

export const DNS_SERVER = "127.0.0.53";

/** Why the named topology cannot run here, or null. */
export function namedUnavailable(): string | null {
  if (!inPrivateNamespace()) return "named-server interop runs inside the network namespace of `npm run test:interop` (root, unshare)";
  if (!existsSync("/usr/sbin/dnsmasq")) return "dnsmasq not installed (apt-get install dnsmasq-base)";
  return null;
}

export interface IssuedCert {
  cert: string;
  key: string;
}

/** A private certificate authority (EC P-256, SHA-256), for every server certificate of a test federation. */
export class TestCa {
  private constructor(
    readonly cert: string,
    private readonly key: string,
  ) {}

  static async create(name = "Gatehouse interop test CA"): Promise<TestCa> {
    const now = Date.now();
    const pems = await selfsigned.generate([{ name: "commonName", value: name }], {
      keyType: "ec",
      algorithm: "sha256",
      notBeforeDate: new Date(now - 3600_000),
      notAfterDate: new Date(now + 30 * 24 * 3600_000),
      extensions: [
        { name: "basicConstraints", cA: true, critical: true },
        { name: "keyUsage", keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
      ],
    } as Parameters<typeof selfsigned.generate>[1]);
    return new TestCa(pems.cert, pems.private);
  }

  /** A server certificate for `names` (DNS names or IP addresses); `expired` makes one that ended yesterday. */
  async issue(names: string[], opts: { expired?: boolean } = {}): Promise<IssuedCert> {
    const now = Date.now();
    const day = 24 * 3600_000;
    const pems = await selfsigned.generate([{ name: "commonName", value: names[0]! }], {
      keyType: "ec",
      algorithm: "sha256",
      notBeforeDate: new Date(opts.expired ? now - 30 * day : now - 3600_000),
      notAfterDate: new Date(opts.expired ? now - day : now + 7 * day),
      ca: { cert: this.cert, key: this.key },
      extensions: [
        { name: "basicConstraints", cA: false },
        { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
        { name: "extKeyUsage", serverAuth: true, clientAuth: true },
        { name: "subjectAltName", altNames: names.map((n) => (/^[\d.]+$|:/.test(n) ? { type: 7, ip: n } : { type: 2, value: n })) },
      ],
    } as Parameters<typeof selfsigned.generate>[1]);
    return { cert: pems.cert, key: pems.private };
  }
}

export interface DnsRecords {
  /** name → IPv4/IPv6 address */
  hosts: Record<string, string | string[]>;
  /** SRV records: `_matrix-fed._tcp.example.test` → target host:port */
  srv?: { service: string; target: string; port: number; priority?: number; weight?: number }[];
  /** TTL of every answer, seconds. */
  ttl?: number;
}

/** dnsmasq on 127.0.0.53:53, authoritative for `.test` (unknown names: NXDOMAIN), nothing forwarded. */
export class TestDns {
  private child: ChildProcess | null = null;
  readonly logFile: string;
  private readonly dir: string;

  constructor(private readonly records: DnsRecords) {
    this.dir = mkdtempSync(join(tmpdir(), "gatehouse-dns-"));
    this.logFile = join(this.dir, "queries.log");
  }

  async start(): Promise<void> {
    const lines = [
      "no-resolv",
      "no-hosts",
      "no-poll",
      "bind-interfaces",
      `listen-address=${DNS_SERVER}`,
      "port=53",
      "local=/test/",
      `local-ttl=${this.records.ttl ?? 60}`,
      "log-queries",
      `log-facility=${this.logFile}`,
      "user=root",
      "pid-file=",
    ];
    for (const [name, addr] of Object.entries(this.records.hosts)) lines.push(`host-record=${name},${([] as string[]).concat(addr).join(",")}`);
    for (const s of this.records.srv ?? []) lines.push(`srv-host=${s.service},${s.target},${s.port},${s.priority ?? 10},${s.weight ?? 10}`);
    const conf = join(this.dir, "dnsmasq.conf");
    writeFileSync(conf, lines.join("\n") + "\n");
    this.child = spawn("/usr/sbin/dnsmasq", ["--keep-in-foreground", `--conf-file=${conf}`], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    this.child.stderr!.on("data", (d) => (stderr += d));
    // Ready when it answers a query sent to it directly.
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (this.child.exitCode !== null) throw new Error(`dnsmasq exited: ${stderr}`);
      try {
        await resolveSrvWithTtl("_ready._tcp.test", { servers: [DNS_SERVER], timeoutMs: 200 });
        return;
      } catch {
        if (Date.now() > deadline) throw new Error(`dnsmasq did not answer: ${stderr}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Queries dnsmasq logged (`query[SRV] _matrix-fed._tcp.x.test from 127.0.0.1`). */
  queries(): string[] {
    const r = spawnSync("grep", ["-o", "query\\[[A-Z]*\\] [^ ]*", this.logFile], { encoding: "utf8" });
    return r.stdout.split("\n").filter(Boolean);
  }

  async stop(): Promise<void> {
    const c = this.child;
    this.child = null;
    if (c && c.exitCode === null) {
      await new Promise<void>((r) => {
        c.once("exit", () => r());
        c.kill("SIGTERM");
      });
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export type WellKnownBehaviour =
  | { json: unknown; headers?: Record<string, string> }
  | { redirect: string; status?: number }
  | { status: number };

/**
 * An HTTPS server on `address:port` (443 for a `.well-known`) with a certificate for `names`,
 * answering each path from `routes` (unknown paths: 404), and counting requests per path.
 */
export class TestHttpsServer {
  private server: https.Server | null = null;
  readonly hits: Record<string, number> = {};
  /** Every request: its path, Host header and the SNI name the client sent (false: none). */
  readonly requests: { path: string; host: string | undefined; sni: string | false }[] = [];
  constructor(
    readonly address: string,
    readonly port: number,
    private readonly tls: IssuedCert,
    private readonly routes: Record<string, WellKnownBehaviour>,
  ) {}

  async start(): Promise<void> {
    this.server = https.createServer({ cert: this.tls.cert, key: this.tls.key }, (req, res) => {
      const path = (req.url ?? "/").split("?")[0]!;
      this.hits[path] = (this.hits[path] ?? 0) + 1;
      this.requests.push({ path, host: req.headers.host, sni: (req.socket as import("node:tls").TLSSocket).servername ?? false });
      const b = this.routes[path];
      if (!b) {
        res.writeHead(404, { "Content-Type": "application/json" }).end('{"errcode":"M_UNRECOGNIZED"}');
        return;
      }
      if ("json" in b) res.writeHead(200, { "Content-Type": "application/json", ...b.headers }).end(JSON.stringify(b.json));
      else if ("redirect" in b) res.writeHead(b.status ?? 302, { Location: b.redirect }).end();
      else res.writeHead(b.status).end();
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once("error", reject);
      this.server!.listen(this.port, this.address, () => resolve());
    });
  }

  get boundPort(): number {
    return (this.server!.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (s) {
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
  }
}

/** Writes `files` (name → content) into a fresh folder; its path. */
export function writeTempFiles(prefix: string, files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content, { mode: 0o600 });
  return dir;
}
