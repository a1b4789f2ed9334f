/**
 * The two federations the interop suites run against:
 *
 * - `ip-literal`: the lab federation (server names 127.0.0.1:<port>, self-signed certificates,
 *   certificate checks off, no DNS);
 * - `named`: servers with DNS names, as on the internet, every certificate issued by a private CA
 *   and verified in both directions:
 *
 *   | server name | reached by                                                    | certificate for |
 *   | ----------- | ------------------------------------------------------------- | --------------- |
 *   | gate.test   | A 127.0.0.10, port 8448 (Gatehouse)                           | gate.test       |
 *   | hs-a.test   | .well-known on 127.0.0.11:443 → fed-a.test:28448 (127.0.0.12) | fed-a.test      |
 *   | hs-b.test   | SRV _matrix-fed._tcp.hs-b.test → fed-b.test:28449 (127.0.0.13) only, no A record | hs-b.test |
 *   | hs-c.test   | A 127.0.0.14, port 8448                                       | hs-c.test       |
 *
 *   (The certificate names are the spec's: the delegated host for .well-known with a port, the
 *   server name for SRV and 8448.)
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { startLoopbackGatehouse, type LoopbackGatehouse } from "../../src/dev/loopback.js";
import { interopUnavailable, SynapsePeer } from "./synapse.js";
import { namedUnavailable, TestCa, TestDns, TestHttpsServer, writeTempFiles } from "../../src/dev/named-federation.js";

export type PeerRole = "A" | "B" | "C";

export interface InteropTopology {
  readonly name: "ip-literal" | "named";
  /** Why it cannot run here, or null. */
  unavailable(): string | null;
  /** Starts what the topology needs besides Synapse (DNS, CA, .well-known servers). */
  setup(): Promise<void>;
  teardown(): Promise<void>;
  peer(role: PeerRole): SynapsePeer;
  startGatehouse(label: string, env?: Record<string, string | undefined>): Promise<LoopbackGatehouse>;
  /** The host part of a server name, as server ACLs match it. */
  aclHost(serverName: string): string;
}

const logLevel = () => process.env.GATEHOUSE_LOG_LEVEL ?? "warn";

class IpLiteralTopology implements InteropTopology {
  readonly name = "ip-literal" as const;
  private readonly peers: Record<PeerRole, SynapsePeer>;
  constructor(prefix = "gh") {
    this.peers = {
      A: new SynapsePeer(`${prefix}A`, 18108, 18548),
      B: new SynapsePeer(`${prefix}B`, 18208, 18648),
      C: new SynapsePeer(`${prefix}C`, 18308, 18748),
    };
  }
  unavailable() {
    return interopUnavailable();
  }
  async setup() {}
  async teardown() {}
  peer(role: PeerRole) {
    return this.peers[role];
  }
  startGatehouse(label: string, env: Record<string, string | undefined> = {}) {
    return startLoopbackGatehouse({ label, env: { REDIS_URL: process.env.REDIS_URL, GATEHOUSE_METRICS_LISTEN: "off", ...env }, logLevel: logLevel() });
  }
  aclHost(serverName: string) {
    return serverName.replace(/:\d+$/, "");
  }
}

export const NAMED = {
  gate: { name: "gate.test", address: "127.0.0.10", port: 8448 },
  /** A second Gatehouse whose certificate is for another name: Synapse must refuse it. */
  badGate: { name: "bad-gate.test", address: "127.0.0.16", port: 8448, certName: "someone-else.test" },
  wellKnownA: { address: "127.0.0.11" },
  A: { serverName: "hs-a.test", host: "fed-a.test", address: "127.0.0.12", port: 28448, clientPort: 28108 },
  B: { serverName: "hs-b.test", host: "fed-b.test", address: "127.0.0.13", port: 28449, clientPort: 28208 },
  C: { serverName: "hs-c.test", address: "127.0.0.14", port: 8448, clientPort: 28308 },
} as const;

class NamedTopology implements InteropTopology {
  readonly name = "named" as const;
  private ca!: TestCa;
  private dns: TestDns | null = null;
  private wellKnown: TestHttpsServer | null = null;
  private peers!: Record<PeerRole, SynapsePeer>;
  private readonly gatehouseDirs: string[] = [];
  constructor(private readonly prefix = "dns") {}

  unavailable() {
    return interopUnavailable() ?? namedUnavailable();
  }

  async setup() {
    this.ca = await TestCa.create();
    this.dns = new TestDns({
      hosts: {
        [NAMED.gate.name]: NAMED.gate.address,
        [NAMED.badGate.name]: NAMED.badGate.address,
        [NAMED.A.serverName]: NAMED.wellKnownA.address,
        [NAMED.A.host]: NAMED.A.address,
        [NAMED.B.host]: NAMED.B.address,
        [NAMED.C.serverName]: NAMED.C.address,
      },
      srv: [{ service: `_matrix-fed._tcp.${NAMED.B.serverName}`, target: NAMED.B.host, port: NAMED.B.port }],
      ttl: 300,
    });
    await this.dns.start();
    this.wellKnown = new TestHttpsServer(NAMED.wellKnownA.address, 443, await this.ca.issue([NAMED.A.serverName]), {
      "/.well-known/matrix/server": { json: { "m.server": `${NAMED.A.host}:${NAMED.A.port}` }, headers: { "Cache-Control": "max-age=3600" } },
    });
    await this.wellKnown.start();
    const named = async (role: "A" | "B" | "C", certNames: string[]) => ({
      serverName: NAMED[role].serverName,
      federationAddress: NAMED[role].address,
      tls: await this.ca.issue(certNames),
      caPem: this.ca.cert,
    });
    this.peers = {
      A: new SynapsePeer(`${this.prefix}A`, NAMED.A.clientPort, NAMED.A.port, await named("A", [NAMED.A.host])),
      B: new SynapsePeer(`${this.prefix}B`, NAMED.B.clientPort, NAMED.B.port, await named("B", [NAMED.B.serverName])),
      C: new SynapsePeer(`${this.prefix}C`, NAMED.C.clientPort, NAMED.C.port, await named("C", [NAMED.C.serverName])),
    };
  }

  async teardown() {
    await this.wellKnown?.stop();
    await this.dns?.stop();
    for (const d of this.gatehouseDirs.splice(0)) rmSync(d, { recursive: true, force: true });
  }

  peer(role: PeerRole) {
    return this.peers[role];
  }

  /** The test CA's certificate (PEM). */
  get caPem(): string {
    return this.ca.cert;
  }

  /** Gatehouse as gate.test, or (`as: badGate`) as bad-gate.test presenting a certificate for another name. */
  async startGatehouse(label: string, env: Record<string, string | undefined> = {}, as: "gate" | "badGate" = "gate") {
    const me = NAMED[as];
    const tls = await this.ca.issue([as === "badGate" ? NAMED.badGate.certName : me.name]);
    const dir = writeTempFiles("gatehouse-named-", { "tls.crt": tls.cert, "tls.key": tls.key, "ca.pem": this.ca.cert });
    this.gatehouseDirs.push(dir);
    return startLoopbackGatehouse({
      label,
      env: {
        REDIS_URL: process.env.REDIS_URL,
        GATEHOUSE_METRICS_LISTEN: "off",
        GATEHOUSE_SERVER_NAME: me.name,
        GATEHOUSE_FEDERATION_LISTEN: `${me.address}:${me.port}`,
        GATEHOUSE_TLS: "files",
        GATEHOUSE_TLS_CERT: join(dir, "tls.crt"),
        GATEHOUSE_TLS_KEY: join(dir, "tls.key"),
        // Verification on, trusting the test CA; only loopback (where every test server is) allowed.
        GATEHOUSE_FEDERATION_INSECURE_SKIP_TLS_VERIFY: "false",
        GATEHOUSE_FEDERATION_ALLOW_PRIVATE_ADDRESSES: "false",
        GATEHOUSE_FEDERATION_IP_RANGE_ALLOWLIST: "127.0.0.0/8",
        GATEHOUSE_FEDERATION_CA_FILE: join(dir, "ca.pem"),
        ...env,
      },
      logLevel: logLevel(),
    });
  }

  aclHost(serverName: string) {
    return serverName.replace(/:\d+$/, "");
  }

  /** DNS queries dnsmasq answered so far. */
  dnsQueries(): string[] {
    return this.dns?.queries() ?? [];
  }

  /** Requests hs-a.test's .well-known server answered so far. */
  wellKnownHits(): number {
    return this.wellKnown?.hits["/.well-known/matrix/server"] ?? 0;
  }
}

/**
 * Both topologies. `peerPrefix` names the Synapse peers' data folders and PID files in the shared
 * chroot (`<prefix>A`, `<prefix>nA`, …) instead of the default ghA/dnsA, so a suite can run while
 * another checkout runs the default ones.
 */
export function topologies(peerPrefix?: string): InteropTopology[] {
  return peerPrefix ? [new IpLiteralTopology(peerPrefix), new NamedTopology(`${peerPrefix}n`)] : [new IpLiteralTopology(), new NamedTopology()];
}

export { NamedTopology };

/**
 * A Gatehouse of `topology` beside an application service with no URL (it acts through the client
 * API, as a bridge does, and takes no pushes), whose users are `@_{ns}_.*`. Answers the Gatehouse,
 * the service's as_token, and what removes the registration's folder once the Gatehouse stopped.
 */
export async function startGatehouseWithClientAppservice(
  topology: InteropTopology,
  ns: string,
  env: Record<string, string | undefined> = {},
): Promise<{ lb: LoopbackGatehouse; asToken: string; removeFiles: () => void }> {
  const asToken = randomBytes(18).toString("base64url");
  const dir = mkdtempSync(join(tmpdir(), `gatehouse-${ns}-interop-`));
  const registration = {
    id: ns,
    url: null,
    as_token: asToken,
    hs_token: randomBytes(18).toString("base64url"),
    sender_localpart: `${ns}bot`,
    rate_limited: false,
    namespaces: { users: [{ exclusive: true, regex: `@_${ns}_.*` }], aliases: [], rooms: [] },
  };
  writeFileSync(join(dir, "registration.yaml"), JSON.stringify(registration));
  const removeFiles = () => rmSync(dir, { recursive: true, force: true });
  try {
    const lb = await topology.startGatehouse(`${ns}-${topology.name}`, {
      GATEHOUSE_APPSERVICE_REGISTRATION_FILES: join(dir, "registration.yaml"),
      GATEHOUSE_CLIENT_LISTEN: "127.0.0.1:0",
      ...env,
    });
    return { lb, asToken, removeFiles };
  } catch (e) {
    removeFiles();
    throw e;
  }
}
