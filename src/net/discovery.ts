/**
 * Server-name resolution for outbound federation (spec: Server-Server API, "Resolving server names").
 * DNS and the well-known fetch are injected so that the resolution order is testable without a
 * network; results are cached (well-known: 24 h on success, 1 h on failure, per the spec).
 */
import { isIP } from "node:net";
import { parseServerName } from "../protocol/ids.js";

export interface ResolvedServer {
  /** Where the TCP connection goes (hostname or IP). */
  connectHost: string;
  port: number;
  /** Host header value. */
  hostHeader: string;
  /** TLS server name for SNI and certificate checks; undefined for IP literals (no SNI). */
  tlsServerName: string | undefined;
}

export interface DiscoveryDeps {
  /** GET https://<host>/.well-known/matrix/server; resolves to the `m.server` value or null. */
  fetchWellKnown(host: string): Promise<string | null>;
  /** SRV lookup; [] when there is none. */
  resolveSrv(name: string): Promise<{ name: string; port: number; priority: number; weight: number }[]>;
  now(): number;
}

const DEFAULT_PORT = 8448;
const WELL_KNOWN_TTL_MS = 24 * 3600_000;
const WELL_KNOWN_ERROR_TTL_MS = 3600_000;

/**
 * Splits a server name (or a well-known `m.server` value) into host and port, using the
 * protocol's server-name grammar; IPv6 brackets are removed from the host. Null when malformed.
 */
export function splitHostPort(name: string): { host: string; port: number | undefined } | null {
  const parsed = parseServerName(name);
  if (!parsed) return null;
  return { host: parsed.kind === "ipv6" ? parsed.host.replace(/^\[|\]$/g, "") : parsed.host, port: parsed.port };
}

function hostWithPort(host: string, port: number | undefined): string {
  const h = isIP(host) === 6 ? `[${host}]` : host;
  return port === undefined ? h : `${h}:${port}`;
}

export class ServerResolver {
  private wellKnownCache = new Map<string, { value: string | null; expires: number }>();
  private readonly maxCacheEntries = 10_000;

  constructor(private readonly deps: DiscoveryDeps) {}

  async resolve(serverName: string): Promise<ResolvedServer> {
    const parsed = splitHostPort(serverName);
    if (!parsed) throw new Error(`invalid server name ${JSON.stringify(serverName)}`);
    const { host, port } = parsed;
    // 1. IP literal: no discovery, no SNI.
    if (isIP(host)) return { connectHost: host, port: port ?? DEFAULT_PORT, hostHeader: serverName, tlsServerName: undefined };
    // 2. Explicit port.
    if (port !== undefined) return { connectHost: host, port, hostHeader: serverName, tlsServerName: host };
    // 3. Well-known delegation.
    const delegated = await this.wellKnown(host);
    if (delegated) {
      const d = splitHostPort(delegated);
      if (d) {
        if (isIP(d.host)) return { connectHost: d.host, port: d.port ?? DEFAULT_PORT, hostHeader: hostWithPort(d.host, d.port), tlsServerName: undefined };
        if (d.port !== undefined) return { connectHost: d.host, port: d.port, hostHeader: hostWithPort(d.host, d.port), tlsServerName: d.host };
        const srv = await this.srv(d.host);
        if (srv) return { connectHost: srv.name, port: srv.port, hostHeader: d.host, tlsServerName: d.host };
        return { connectHost: d.host, port: DEFAULT_PORT, hostHeader: d.host, tlsServerName: d.host };
      }
    }
    // 4–6. SRV on the server name, then port 8448.
    const srv = await this.srv(host);
    if (srv) return { connectHost: srv.name, port: srv.port, hostHeader: host, tlsServerName: host };
    return { connectHost: host, port: DEFAULT_PORT, hostHeader: host, tlsServerName: host };
  }

  private async wellKnown(host: string): Promise<string | null> {
    const now = this.deps.now();
    const hit = this.wellKnownCache.get(host);
    if (hit && hit.expires > now) return hit.value;
    let value: string | null = null;
    try {
      value = await this.deps.fetchWellKnown(host);
    } catch {
      value = null;
    }
    if (value !== null && !splitHostPort(value)) value = null;
    if (this.wellKnownCache.size >= this.maxCacheEntries) this.wellKnownCache.clear();
    this.wellKnownCache.set(host, { value, expires: now + (value ? WELL_KNOWN_TTL_MS : WELL_KNOWN_ERROR_TTL_MS) });
    return value;
  }

  /** `_matrix-fed._tcp` (v1.8+), then the deprecated `_matrix._tcp`; lowest priority, highest weight. */
  private async srv(host: string): Promise<{ name: string; port: number } | null> {
    for (const prefix of ["_matrix-fed._tcp.", "_matrix._tcp."]) {
      let records: Awaited<ReturnType<DiscoveryDeps["resolveSrv"]>> = [];
      try {
        records = await this.deps.resolveSrv(prefix + host);
      } catch {
        records = [];
      }
      const usable = records.filter((r) => r.name && r.name !== ".");
      if (usable.length > 0) {
        usable.sort((a, b) => a.priority - b.priority || b.weight - a.weight);
        return { name: usable[0]!.name, port: usable[0]!.port };
      }
    }
    return null;
  }
}
