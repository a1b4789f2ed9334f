// Real Synapse homeservers on loopback, through ../shared/peers/synapse-peers.sh (root only).
import { execFileSync } from "node:child_process";
import { jsonRequest } from "../../src/dev/http-json.js";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import YAML from "yaml";
import type { IssuedCert } from "../../src/dev/named-federation.js";
import { fileURLToPath } from "node:url";
import { join } from "node:path";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

export function peersScript(): string | null {
  const candidates = [process.env.GATEHOUSE_PEERS_SCRIPT, join(repoRoot, "../shared/peers/synapse-peers.sh")].filter(Boolean) as string[];
  return candidates.find((c) => existsSync(c)) ?? null;
}

/** Why interop cannot run here, or null when it can. */
export function interopUnavailable(): string | null {
  if (process.getuid?.() !== 0) return "interop needs root (the Synapse peers run in a chroot)";
  if (!peersScript()) return "../shared/peers/synapse-peers.sh not found";
  return null;
}

/** Runs ../shared/peers/synapse-peers.sh with `args`; its stdout. */
export function peers(args: string[], timeoutMs = 600_000): string {
  return execFileSync("bash", [peersScript()!, ...args], { encoding: "utf8", timeout: timeoutMs, stdio: ["ignore", "pipe", "pipe"] });
}

export function installPeers(): void {
  const root = process.env.PEERS_ROOT ?? "/var/tmp/matrix-peers/sid";
  // Already installed: `start` mounts /proc for the chroot itself.
  if (existsSync(join(root, "usr/lib/python3/dist-packages/synapse"))) return;
  peers(["install"], 900_000);
}

/**
 * A Synapse in a named federation: its server name (a DNS name), the loopback address its
 * federation listener binds, its certificate (from the test CA) and the CA it trusts for outbound
 * federation (then `federation_verify_certificates: true`).
 */
export interface NamedSynapseOptions {
  serverName: string;
  federationAddress: string;
  tls: IssuedCert;
  caPem: string;
}

export function peersRoot(): string {
  return process.env.PEERS_ROOT ?? "/var/tmp/matrix-peers/sid";
}

export class SynapsePeer {
  readonly serverName: string;
  readonly clientUrl: string;
  constructor(
    readonly name: string,
    readonly clientPort: number,
    readonly federationPort: number,
    readonly named?: NamedSynapseOptions,
  ) {
    this.serverName = named?.serverName ?? `127.0.0.1:${federationPort}`;
    this.clientUrl = `http://127.0.0.1:${clientPort}`;
  }

  /** The data folder inside the chroot, and as seen from the host. */
  private dirs(): { inChroot: string; onHost: string } {
    return { inChroot: `/srv/${this.name}`, onHost: join(peersRoot(), "srv", this.name) };
  }

  start(): void {
    peers(["config", this.name, String(this.clientPort), String(this.federationPort)]);
    if (this.named) this.configureNamed(this.named);
    peers(["stop", this.name]);
    peers(["start", this.name, String(this.clientPort)], 120_000);
  }

  /**
   * Rewrites the homeserver.yaml synapse-peers.sh generated for a named server: server_name, the
   * federation listener on its own address, the CA-issued certificate, and outbound certificate
   * verification on against the test CA (federation_custom_ca_list).
   */
  private configureNamed(n: NamedSynapseOptions): void {
    const { inChroot, onHost } = this.dirs();
    const file = join(onHost, "homeserver.yaml");
    const config = YAML.parse(readFileSync(file, "utf8")) as Record<string, any>;
    config.server_name = n.serverName;
    const fed = (config.listeners as any[]).find((l) => l.tls === true);
    fed.bind_addresses = [n.federationAddress];
    fed.port = this.federationPort;
    writeFileSync(join(onHost, "tls-named.crt"), n.tls.cert);
    writeFileSync(join(onHost, "tls-named.key"), n.tls.key, { mode: 0o600 });
    writeFileSync(join(onHost, "federation-ca.pem"), n.caPem);
    config.tls_certificate_path = `${inChroot}/tls-named.crt`;
    config.tls_private_key_path = `${inChroot}/tls-named.key`;
    config.federation_verify_certificates = true;
    config.federation_custom_ca_list = [`${inChroot}/federation-ca.pem`];
    writeFileSync(file, YAML.stringify(config));
  }

  stop(): void {
    peers(["stop", this.name]);
  }

  /** Its homeserver.log, as seen from the host. */
  logFile(): string {
    return join(this.dirs().onHost, "homeserver.log");
  }

  /** Registers (or logs in, when the user exists) and returns an access token. */
  async user(localpart: string): Promise<SynapseUser> {
    const password = `pw-${localpart}-interop`;
    const login = await fetch(`${this.clientUrl}/_matrix/client/v3/login`, {
      method: "POST",
      body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: localpart }, password }),
    });
    if (login.ok) return new SynapseUser(this, `@${localpart}:${this.serverName}`, ((await login.json()) as { access_token: string }).access_token);
    const token = peers(["register", String(this.clientPort), localpart, password]).trim().split("\n").pop()!;
    return new SynapseUser(this, `@${localpart}:${this.serverName}`, token);
  }
}

export class SynapseUser {
  constructor(
    readonly hs: SynapsePeer,
    readonly userId: string,
    readonly token: string,
  ) {}

  call(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
    return jsonRequest(`${this.hs.clientUrl}${path}`, method, this.token, body);
  }

  knock(roomId: string, via: string, reason?: string) {
    return this.call("POST", `/_matrix/client/v3/knock/${encodeURIComponent(roomId)}?server_name=${encodeURIComponent(via)}`, reason ? { reason } : {});
  }

  join(roomId: string, via: string) {
    return this.call("POST", `/_matrix/client/v3/join/${encodeURIComponent(roomId)}?server_name=${encodeURIComponent(via)}`, {});
  }

  leave(roomId: string) {
    return this.call("POST", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/leave`, {});
  }

  state(roomId: string, type: string, stateKey = "") {
    return this.call("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/${encodeURIComponent(type)}/${encodeURIComponent(stateKey)}`);
  }

  /**
   * Membership as Synapse's client API sees it. Synapse caches an initial /sync response for two
   * minutes per (user, filter), so every call uses a filter that differs (an unused presence type).
   */
  async membershipIn(roomId: string): Promise<string | null> {
    const nonce = `nonce.${Date.now()}.${Math.random()}`;
    const filter = encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 1 } }, presence: { types: [nonce] } }));
    const r = await this.call("GET", `/_matrix/client/v3/sync?timeout=0&filter=${filter}`);
    const rooms = r.body?.rooms ?? {};
    if (rooms.join?.[roomId]) return "join";
    if (rooms.invite?.[roomId]) return "invite";
    if (rooms.knock?.[roomId]) return "knock";
    if (rooms.leave?.[roomId]) return "leave";
    return null;
  }
}

export { waitFor } from "../../src/dev/wait.js";
