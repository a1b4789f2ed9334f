/**
 * Server-name resolution for outbound federation (spec: Server-Server API, "Resolving server names").
 * DNS and the well-known fetch are injected so that the resolution order is testable without a
 * network.
 *
 * Caches, with Synapse's bounds (synapse/http/federation/well_known_resolver.py, srv_resolver.py):
 * - `.well-known`: by the answer's Cache-Control max-age / Expires, clamped to 5 min … 48 h;
 *   24 h (±10 %) when it has neither; `no-store` is not cached. Refetched in the last 20 % of that
 *   period, keeping the old answer while the server is unreachable.
 * - `.well-known` failures: 1 h (±10 %) for a domain that never had one (most servers: they use SRV
 *   or 8448); for a domain that had a valid one in the last period + 2 h, 2 min, doubling for each
 *   further failure up to 1 h (the spec's "exponentially back off").
 * - SRV answers: by their DNS TTL (at least 30 s); an empty answer or a DNS error for 60 s (Synapse
 *   does not cache these, so every request would look both SRV names up again), keeping a stale
 *   answer over a DNS error.
 * Concurrent resolutions of one name share one lookup.
 */
import { isIP } from "node:net";
import { parseServerName } from "../protocol/ids.js";

export interface ResolvedServer {
  /** Where the TCP connection goes (hostname or IP). */
  connectHost: string;
  port: number;
  /** Host header value. */
  hostHeader: string;
  /** TLS server name for SNI and certificate checks; undefined for IP literals (no SNI, certificate for the IP). */
  tlsServerName: string | undefined;
}

/** What a `/.well-known/matrix/server` fetch found. */
export type WellKnownAnswer =
  /** A 200 with JSON: `server` is its `m.server` (validated by the resolver); `cacheSeconds` from the headers (null: none). */
  | { kind: "ok"; server: unknown; cacheSeconds: number | null }
  /** A definite answer without delegation: non-200 other than 5xx, not JSON. */
  | { kind: "invalid"; why: string }
  /** Could not be fetched (connection, TLS, timeout, 5xx, refused target): maybe temporary. */
  | { kind: "unavailable"; why: string };

export interface SrvRecord {
  name: string;
  port: number;
  priority: number;
  weight: number;
}

export interface DiscoveryDeps {
  /** GET https://<host>/.well-known/matrix/server (following redirects). */
  fetchWellKnown(host: string): Promise<WellKnownAnswer>;
  /** SRV lookup: the records and the answer's TTL (seconds); no records when there is none. Rejects on DNS failure. */
  resolveSrv(name: string): Promise<{ records: SrvRecord[]; ttlSeconds: number }>;
  now(): number;
  /** Jitter factor in [0, 1) (default Math.random); tests pin it. */
  random?(): number;
}

const DEFAULT_PORT = 8448;
const S = 1000;
export const WELL_KNOWN_DEFAULT_CACHE_MS = 24 * 3600 * S;
export const WELL_KNOWN_MIN_CACHE_MS = 5 * 60 * S;
export const WELL_KNOWN_MAX_CACHE_MS = 48 * 3600 * S;
export const WELL_KNOWN_INVALID_CACHE_MS = 3600 * S;
export const WELL_KNOWN_DOWN_CACHE_MS = 2 * 60 * S;
const WELL_KNOWN_REMEMBER_VALID_MS = 2 * 3600 * S;
const WELL_KNOWN_JITTER = 0.1;
const WELL_KNOWN_GRACE_FACTOR = 0.2;
export const SRV_MIN_CACHE_MS = 30 * S;
export const SRV_NEGATIVE_CACHE_MS = 60 * S;

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

/**
 * Seconds a response may be cached from its Cache-Control / Expires headers (as Synapse reads
 * them): 0 for `no-store`, `max-age` when present, else Expires − now (0 when unparseable); null
 * when neither header says anything.
 */
export function cacheSecondsFromHeaders(headers: { "cache-control"?: string | string[]; expires?: string | string[] }, nowMs: number): number | null {
  const cc = ([] as string[]).concat(headers["cache-control"] ?? []).join(",");
  const directives = new Map<string, string | undefined>();
  for (const d of cc.split(",")) {
    const [k, v] = d.split("=", 2).map((x) => x.trim());
    if (k) directives.set(k.toLowerCase(), v?.replace(/^"|"$/g, ""));
  }
  if (directives.has("no-store")) return 0;
  const maxAge = directives.get("max-age");
  if (maxAge !== undefined && /^\d+$/.test(maxAge)) return Number(maxAge);
  const expires = ([] as string[]).concat(headers.expires ?? []).at(-1);
  if (expires !== undefined) {
    // An HTTP-date starts with a day name; anything else (e.g. "0") means already expired (RFC 7234).
    const t = /^[A-Za-z]{3}/.test(expires.trim()) ? Date.parse(expires) : NaN;
    return Number.isNaN(t) ? 0 : (t - nowMs) / 1000;
  }
  return null;
}

interface WellKnownEntry {
  value: string | null;
  expires: number;
  ttl: number;
}

export class ServerResolver {
  private readonly wellKnownCache = new Map<string, WellKnownEntry>();
  /** Domains whose well-known was valid recently: until when, and the failures since. */
  private readonly hadValidWellKnown = new Map<string, { until: number; failures: number }>();
  private readonly srvCache = new Map<string, { records: SrvRecord[]; expires: number }>();
  private readonly inflight = new Map<string, Promise<unknown>>();
  private readonly maxCacheEntries = 10_000;
  private readonly random: () => number;

  constructor(private readonly deps: DiscoveryDeps) {
    this.random = deps.random ?? Math.random;
  }

  async resolve(serverName: string): Promise<ResolvedServer> {
    const parsed = splitHostPort(serverName);
    if (!parsed) throw new Error(`invalid server name ${JSON.stringify(serverName)}`);
    const { host, port } = parsed;
    // 1. IP literal: no discovery; Host is the server name; no SNI, the certificate is for the IP.
    if (isIP(host)) return { connectHost: host, port: port ?? DEFAULT_PORT, hostHeader: serverName, tlsServerName: undefined };
    // 2. Explicit port: Host is the server name with its port; certificate for the hostname.
    if (port !== undefined) return { connectHost: host, port, hostHeader: serverName, tlsServerName: host };
    // 3. Well-known delegation.
    const delegated = await this.wellKnown(host);
    if (delegated) {
      const d = splitHostPort(delegated)!;
      // 3.1 IP literal: Host is the IP (with the port if given), no SNI.
      if (isIP(d.host)) return { connectHost: d.host, port: d.port ?? DEFAULT_PORT, hostHeader: hostWithPort(d.host, d.port), tlsServerName: undefined };
      // 3.2 hostname and port.
      if (d.port !== undefined) return { connectHost: d.host, port: d.port, hostHeader: hostWithPort(d.host, d.port), tlsServerName: d.host };
      // 3.3/3.4 SRV of the delegated hostname; 3.5 its port 8448. Host and certificate: the delegated hostname.
      const srv = await this.srv(d.host);
      if (srv) return { connectHost: srv.name, port: srv.port, hostHeader: d.host, tlsServerName: d.host };
      return { connectHost: d.host, port: DEFAULT_PORT, hostHeader: d.host, tlsServerName: d.host };
    }
    // 4/5. SRV of the server name; 6. its port 8448. Host and certificate: the server name.
    const srv = await this.srv(host);
    if (srv) return { connectHost: srv.name, port: srv.port, hostHeader: host, tlsServerName: host };
    return { connectHost: host, port: DEFAULT_PORT, hostHeader: host, tlsServerName: host };
  }

  /** One lookup per key at a time: concurrent callers share it. */
  private once<T>(key: string, run: () => Promise<T>): Promise<T> {
    const running = this.inflight.get(key);
    if (running) return running as Promise<T>;
    const p = run().finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  private jitter(ms: number): number {
    return ms * (1 - WELL_KNOWN_JITTER + 2 * WELL_KNOWN_JITTER * this.random());
  }

  private remember<K, V>(map: Map<K, V>, key: K, value: V): void {
    if (map.size >= this.maxCacheEntries && !map.has(key)) map.delete(map.keys().next().value as K);
    map.set(key, value);
  }

  private async wellKnown(host: string): Promise<string | null> {
    const now = this.deps.now();
    const hit = this.wellKnownCache.get(host);
    // Fresh enough: until the last 20 % of its period (a valid answer is then refetched early).
    if (hit && now < hit.expires - (hit.value ? WELL_KNOWN_GRACE_FACTOR * hit.ttl : 0)) return hit.value;
    return this.once(`wk:${host}`, () => this.fetchWellKnown(host, hit));
  }

  private async fetchWellKnown(host: string, previous: WellKnownEntry | undefined): Promise<string | null> {
    let answer: WellKnownAnswer;
    try {
      answer = await this.deps.fetchWellKnown(host);
    } catch (e) {
      answer = { kind: "unavailable", why: (e as Error).message };
    }
    const now = this.deps.now();
    if (answer.kind === "ok") {
      const server = typeof answer.server === "string" && splitHostPort(answer.server) ? answer.server : null;
      if (server === null) answer = { kind: "invalid", why: `m.server is not a server name: ${JSON.stringify(answer.server)}` };
      else {
        const ttl =
          answer.cacheSeconds === null
            ? this.jitter(WELL_KNOWN_DEFAULT_CACHE_MS)
            : answer.cacheSeconds <= 0
              ? 0
              : Math.min(WELL_KNOWN_MAX_CACHE_MS, Math.max(WELL_KNOWN_MIN_CACHE_MS, answer.cacheSeconds * 1000));
        this.remember(this.hadValidWellKnown, host, { until: now + ttl + WELL_KNOWN_REMEMBER_VALID_MS, failures: 0 });
        if (ttl > 0) this.remember(this.wellKnownCache, host, { value: server, expires: now + ttl, ttl });
        else this.wellKnownCache.delete(host);
        return server;
      }
    }
    // A temporary failure keeps a previous valid answer (refetched again at the next request).
    if (answer.kind === "unavailable" && previous?.value) return previous.value;
    const had = this.hadValidWellKnown.get(host);
    let ttl = WELL_KNOWN_INVALID_CACHE_MS;
    if (had && had.until > now) {
      ttl = Math.min(WELL_KNOWN_INVALID_CACHE_MS, WELL_KNOWN_DOWN_CACHE_MS * 2 ** had.failures);
      had.failures++;
    }
    ttl = this.jitter(ttl);
    this.remember(this.wellKnownCache, host, { value: null, expires: now + ttl, ttl });
    return null;
  }

  /** `_matrix-fed._tcp` (v1.8+), then the deprecated `_matrix._tcp`; lowest priority, then weighted choice. */
  private async srv(host: string): Promise<{ name: string; port: number } | null> {
    for (const prefix of ["_matrix-fed._tcp.", "_matrix._tcp."]) {
      const records = (await this.srvRecords(prefix + host)).filter((r) => r.name && r.name !== ".");
      if (records.length > 0) return this.pickSrv(records);
    }
    return null;
  }

  private async srvRecords(name: string): Promise<SrvRecord[]> {
    const now = this.deps.now();
    const hit = this.srvCache.get(name);
    if (hit && hit.expires > now) return hit.records;
    return this.once(`srv:${name}`, async () => {
      try {
        const { records, ttlSeconds } = await this.deps.resolveSrv(name);
        const ttl = records.length ? Math.max(SRV_MIN_CACHE_MS, ttlSeconds * 1000) : SRV_NEGATIVE_CACHE_MS;
        this.remember(this.srvCache, name, { records, expires: this.deps.now() + ttl });
        return records;
      } catch {
        const records = hit?.records ?? [];
        this.remember(this.srvCache, name, { records, expires: this.deps.now() + SRV_NEGATIVE_CACHE_MS });
        return records;
      }
    });
  }

  /** RFC 2782: the lowest priority; among those, a choice weighted by `weight`. */
  private pickSrv(records: SrvRecord[]): { name: string; port: number } {
    const best = Math.min(...records.map((r) => r.priority));
    const group = records.filter((r) => r.priority === best);
    const total = group.reduce((s, r) => s + r.weight, 0);
    let chosen = group[0]!;
    if (total > 0) {
      let x = this.random() * total;
      for (const r of group) {
        x -= r.weight;
        if (x < 0) {
          chosen = r;
          break;
        }
      }
    }
    return { name: chosen.name.replace(/\.$/, ""), port: chosen.port };
  }
}
