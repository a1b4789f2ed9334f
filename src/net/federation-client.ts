/**
 * Outbound federation HTTP: server discovery, X-Matrix signing, TLS (verified by default),
 * bounded timeouts and response sizes, and no connections to private address ranges unless the
 * operator allows them (a remote server name must not turn Gatehouse into a proxy into the pod
 * network).
 */
import https from "node:https";
import http from "node:http";
import dns from "node:dns";
import { BlockList, isIP, type LookupFunction } from "node:net";
import { ServerResolver, type ResolvedServer } from "./discovery.js";
import { signRequest, signRequestCanonical } from "../protocol/x-matrix.js";
import type { SigningKey } from "../protocol/signing-key.js";

export interface FederationClientOptions {
  serverName: string;
  signingKey: SigningKey;
  insecureSkipTlsVerify: boolean;
  allowPrivateAddresses: boolean;
  timeoutMs: number;
  /** Largest response body read (bytes). */
  maxResponseBytes?: number;
  resolver?: ServerResolver;
  now?: () => number;
}

/**
 * A request body the caller has already encoded: sent byte for byte (a stored transaction must be
 * re-sent with the identical body). With `canonical`, `text` is the canonical JSON of the body,
 * so the X-Matrix signature is computed over it directly (no parse and re-encode of a large body);
 * otherwise the signature is computed over the canonical form of `JSON.parse(text)`.
 */
export class EncodedJsonBody {
  constructor(
    /** The JSON text, or its UTF-8 bytes (then not converted again for sending and signing). */
    readonly text: string | Buffer,
    readonly canonical: boolean,
  ) {}
}

export interface FederationResponse {
  status: number;
  body: unknown;
  rawBody: string;
}

export class FederationRequestError extends Error {
  constructor(
    readonly destination: string,
    message: string,
    /** HTTP status when the peer answered; undefined for network failures. */
    readonly status?: number,
    readonly body?: unknown,
  ) {
    super(message);
    this.name = "FederationRequestError";
  }
  get errcode(): string | undefined {
    const b = this.body as { errcode?: unknown } | undefined;
    return typeof b?.errcode === "string" ? b.errcode : undefined;
  }
  get remoteMessage(): string | undefined {
    const b = this.body as { error?: unknown } | undefined;
    return typeof b?.error === "string" ? b.error : undefined;
  }
}

const privateRanges = new BlockList();
for (const [net, prefix] of [
  ["0.0.0.0", 8], ["10.0.0.0", 8], ["100.64.0.0", 10], ["127.0.0.0", 8], ["169.254.0.0", 16],
  ["172.16.0.0", 12], ["192.0.0.0", 24], ["192.168.0.0", 16], ["198.18.0.0", 15], ["224.0.0.0", 4], ["240.0.0.0", 4],
] as const) privateRanges.addSubnet(net, prefix, "ipv4");
for (const [net, prefix] of [["::1", 128], ["::", 128], ["fc00::", 7], ["fe80::", 10], ["ff00::", 8]] as const)
  privateRanges.addSubnet(net, prefix, "ipv6");

export function isPrivateAddress(ip: string): boolean {
  const family = isIP(ip);
  if (family === 0) return false;
  if (family === 6) {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
    if (mapped) return privateRanges.check(mapped[1]!, "ipv4");
    return privateRanges.check(ip, "ipv6");
  }
  return privateRanges.check(ip, "ipv4");
}

function guardedLookup(allowPrivate: boolean): LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: false }, (err, address, family) => {
      if (err) return (callback as (e: Error | null, a?: string, f?: number) => void)(err);
      if (!allowPrivate && isPrivateAddress(address as string)) {
        return (callback as (e: Error | null) => void)(new Error(`refusing to connect to private address ${address} for ${hostname}`));
      }
      (callback as (e: null, a: string, f: number) => void)(null, address as string, family as number);
    });
  };
}

function readBody(res: http.IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on("data", (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        res.destroy(new Error(`response larger than ${limit} bytes`));
        return;
      }
      chunks.push(c);
    });
    res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    res.on("error", reject);
    res.on("aborted", () => reject(new Error("response aborted")));
  });
}

export class FederationClient {
  readonly resolver: ServerResolver;
  private readonly agent: https.Agent;
  private readonly maxResponseBytes: number;
  private readonly now: () => number;

  constructor(private readonly opts: FederationClientOptions) {
    this.now = opts.now ?? Date.now;
    this.maxResponseBytes = opts.maxResponseBytes ?? 64 * 1024 * 1024;
    this.agent = new https.Agent({
      keepAlive: true,
      maxSockets: 16,
      rejectUnauthorized: !opts.insecureSkipTlsVerify,
      lookup: guardedLookup(opts.allowPrivateAddresses),
    });
    this.resolver =
      opts.resolver ??
      new ServerResolver({
        now: this.now,
        fetchWellKnown: (host) => this.fetchWellKnown(host),
        resolveSrv: (name) => dns.promises.resolveSrv(name),
      });
  }

  close(): void {
    this.agent.destroy();
  }

  /**
   * A signed federation request to `destination`. Resolves for every HTTP answer (check `status`);
   * rejects with FederationRequestError for network failures and timeouts.
   */
  async request(
    method: string,
    destination: string,
    path: string,
    body?: unknown,
    options: { signed?: boolean; timeoutMs?: number; maxResponseBytes?: number } = {},
  ): Promise<FederationResponse> {
    let target: ResolvedServer;
    try {
      target = await this.resolver.resolve(destination);
    } catch (e) {
      throw new FederationRequestError(destination, `cannot resolve ${destination}: ${(e as Error).message}`);
    }
    if (!this.opts.allowPrivateAddresses && isIP(target.connectHost) && isPrivateAddress(target.connectHost)) {
      throw new FederationRequestError(destination, `refusing to connect to private address ${target.connectHost}`);
    }
    const encoded = body instanceof EncodedJsonBody ? body : undefined;
    const payload =
      body === undefined ? undefined : encoded ? (typeof encoded.text === "string" ? Buffer.from(encoded.text) : encoded.text) : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = { Host: target.hostHeader, "User-Agent": "Gatehouse" };
    if (payload) {
      headers["Content-Type"] = "application/json";
      headers["Content-Length"] = String(payload.length);
    }
    if (options.signed !== false) {
      const req = { method, uri: path, origin: this.opts.serverName, destination, key: this.opts.signingKey };
      headers.Authorization = encoded?.canonical
        ? signRequestCanonical(req, payload)
        : signRequest({ ...req, content: encoded ? JSON.parse(encoded.text.toString()) : body });
    }
    const timeoutMs = options.timeoutMs ?? this.opts.timeoutMs;
    return new Promise<FederationResponse>((resolve, reject) => {
      const req = https.request(
        {
          method,
          host: target.connectHost,
          port: target.port,
          path,
          headers,
          agent: this.agent,
          servername: target.tlsServerName ?? "",
          timeout: timeoutMs,
        },
        (res) => {
          readBody(res, options.maxResponseBytes ?? this.maxResponseBytes).then(
            (rawBody) => {
              let parsed: unknown = undefined;
              if (rawBody.length > 0) {
                try {
                  parsed = JSON.parse(rawBody);
                } catch {
                  parsed = undefined;
                }
              }
              resolve({ status: res.statusCode ?? 0, body: parsed, rawBody });
            },
            (err: Error) => reject(new FederationRequestError(destination, err.message)),
          );
        },
      );
      const timer = setTimeout(() => req.destroy(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
      req.on("close", () => clearTimeout(timer));
      req.on("timeout", () => req.destroy(new Error(`timed out after ${timeoutMs} ms`)));
      req.on("error", (err) => reject(new FederationRequestError(destination, `${method} ${path} to ${destination}: ${err.message}`)));
      req.end(payload);
    });
  }

  /** Like request(), but a non-2xx answer rejects with FederationRequestError carrying the body. */
  async call<T = unknown>(method: string, destination: string, path: string, body?: unknown, options?: { signed?: boolean; timeoutMs?: number }): Promise<T> {
    const res = await this.request(method, destination, path, body, options);
    if (res.status < 200 || res.status >= 300) {
      const b = res.body as { errcode?: string; error?: string } | undefined;
      throw new FederationRequestError(
        destination,
        `${method} ${path.split("?")[0]} on ${destination} answered ${res.status}${b?.errcode ? ` ${b.errcode}` : ""}${b?.error ? `: ${b.error}` : ""}`,
        res.status,
        res.body,
      );
    }
    return res.body as T;
  }

  private fetchWellKnown(host: string, redirects = 0): Promise<string | null> {
    return new Promise((resolve) => {
      const req = https.get(
        {
          host,
          port: 443,
          path: "/.well-known/matrix/server",
          agent: this.agent,
          servername: isIP(host) ? "" : host,
          timeout: Math.min(this.opts.timeoutMs, 10_000),
        },
        (res) => {
          const status = res.statusCode ?? 0;
          if (status >= 300 && status < 400 && res.headers.location && redirects < 5) {
            res.resume();
            try {
              const next = new URL(res.headers.location, `https://${host}`);
              if (next.protocol === "https:" && next.pathname === "/.well-known/matrix/server") {
                return resolve(this.fetchWellKnown(next.host, redirects + 1));
              }
            } catch {
              /* fall through */
            }
            return resolve(null);
          }
          if (status !== 200) {
            res.resume();
            return resolve(null);
          }
          readBody(res, 64 * 1024).then(
            (text) => {
              try {
                const v = (JSON.parse(text) as { "m.server"?: unknown })["m.server"];
                resolve(typeof v === "string" ? v : null);
              } catch {
                resolve(null);
              }
            },
            () => resolve(null),
          );
        },
      );
      req.on("timeout", () => req.destroy(new Error("timeout")));
      req.on("error", () => resolve(null));
    });
  }
}
