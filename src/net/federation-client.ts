/**
 * Outbound federation HTTP: server discovery, X-Matrix signing, TLS (verified by default),
 * bounded timeouts and response sizes, and no connections to private address ranges unless the
 * operator allows them (a remote server name must not turn Gatehouse into a proxy into the pod
 * network).
 */
import https from "node:https";
import http from "node:http";
import dns from "node:dns";
import tls from "node:tls";
import { isIP, type LookupFunction } from "node:net";
import type { Readable } from "node:stream";
import { ServerResolver, cacheSecondsFromHeaders, type ResolvedServer, type WellKnownAnswer } from "./discovery.js";
import { AddressGuard } from "./ip-ranges.js";
import { resolveSrvWithTtl } from "./srv.js";
import { signRequest, signRequestCanonical } from "../protocol/x-matrix.js";
import type { SigningKey } from "../protocol/signing-key.js";
import { isUtf8 } from "node:buffer";
import { jsonTextDepth, MAX_BODY_NESTING } from "../protocol/json-nesting.js";

export interface FederationClientOptions {
  serverName: string;
  signingKey: SigningKey;
  insecureSkipTlsVerify: boolean;
  /** Connect to private and reserved ranges too (the guard is off). */
  allowPrivateAddresses: boolean;
  /** CIDRs connected to although in a blocked range (Synapse's ip_range_whitelist). */
  ipRangeAllowlist?: readonly string[];
  /** Extra CA certificates (PEM) trusted for peers, in addition to Node's bundled roots. */
  extraCaPem?: string;
  timeoutMs: number;
  /** Hostname → addresses; the system resolver by default (tests inject one). */
  lookup?: AddressResolver;
  /** Told of every refused connection (metric and log line). */
  onRefused?: (reason: RefusalReason, destination: string, message: string) => void;
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
  /** Set when Gatehouse itself refused the connection (private address, certificate, redirects). */
  refusal?: RefusalReason;
  /**
   * Set when the peer answered, but with a body Gatehouse does not take (parseResponseBody: too
   * large, not UTF-8, nested too deep; or a success answer that is not a JSON object).
   */
  malformed?: true;
  get errcode(): string | undefined {
    const b = this.body as { errcode?: unknown } | undefined;
    return typeof b?.errcode === "string" ? b.errcode : undefined;
  }
  get remoteMessage(): string | undefined {
    const b = this.body as { error?: unknown } | undefined;
    return typeof b?.error === "string" ? b.error : undefined;
  }
}

/** Why an outbound connection was refused (the `reason` label of gatehouse_federation_outbound_refused_total). */
export type RefusalReason =
  | "private_address"
  | "certificate_name"
  | "certificate_expired"
  | "certificate_untrusted"
  | "certificate_invalid"
  | "redirect_loop"
  | "too_many_redirects";

/** An outbound connection Gatehouse refused to make or to trust. */
export class OutboundRefusedError extends Error {
  readonly code = "ERR_GATEHOUSE_OUTBOUND_REFUSED";
  constructor(
    readonly reason: RefusalReason,
    message: string,
  ) {
    super(message);
    this.name = "OutboundRefusedError";
  }
}

const TLS_REASONS: Record<string, RefusalReason> = {
  ERR_TLS_CERT_ALTNAME_INVALID: "certificate_name",
  CERT_HAS_EXPIRED: "certificate_expired",
  CERT_NOT_YET_VALID: "certificate_invalid",
  DEPTH_ZERO_SELF_SIGNED_CERT: "certificate_untrusted",
  SELF_SIGNED_CERT_IN_CHAIN: "certificate_untrusted",
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "certificate_untrusted",
  UNABLE_TO_GET_ISSUER_CERT: "certificate_untrusted",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "certificate_untrusted",
  CERT_UNTRUSTED: "certificate_untrusted",
  CERT_REVOKED: "certificate_invalid",
  CERT_SIGNATURE_FAILURE: "certificate_invalid",
  INVALID_CA: "certificate_untrusted",
  INVALID_PURPOSE: "certificate_invalid",
};

/** The refusal an error from a connection attempt stands for, if any (private address, or a TLS certificate check). */
export function refusalOf(err: unknown): { reason: RefusalReason; message: string } | null {
  if (err instanceof OutboundRefusedError) return { reason: err.reason, message: err.message };
  const code = (err as { code?: unknown } | null)?.code;
  if (code === "ERR_GATEHOUSE_OUTBOUND_REFUSED") return { reason: (err as OutboundRefusedError).reason, message: (err as Error).message };
  if (typeof code === "string" && TLS_REASONS[code]) return { reason: TLS_REASONS[code]!, message: `TLS certificate refused (${code}): ${(err as Error).message}` };
  return null;
}

/** Resolves a hostname to every address (A and AAAA, or one family); the system resolver by default. */
export type AddressResolver = (hostname: string, options: { family: number; hints?: number }) => Promise<{ address: string; family: number }[]>;

export const systemResolver: AddressResolver = (hostname, options) =>
  dns.promises.lookup(hostname, { all: true, family: options.family, hints: options.hints, order: "verbatim" } as dns.LookupAllOptions);

/**
 * The `lookup` of the outbound agent: resolves every address of a hostname, drops those the guard
 * refuses, and answers in the shape the caller asked for: an array for `all: true` (Node's Happy
 * Eyeballs, autoSelectFamily, then tries each in turn), else the first address. Refuses
 * (OutboundRefusedError "private_address") when no address is left.
 */
export function guardedLookup(guard: AddressGuard, resolve: AddressResolver = systemResolver): LookupFunction {
  return (hostname, options, callback) => {
    const cb = callback as (err: NodeJS.ErrnoException | null, address?: string | dns.LookupAddress[], family?: number) => void;
    const family = typeof options.family === "number" ? options.family : options.family === "IPv6" ? 6 : options.family === "IPv4" ? 4 : 0;
    resolve(hostname, { family, hints: options.hints }).then(
      (addresses) => {
        const usable = addresses.filter((a) => guard.check(a.address).allowed);
        if (usable.length === 0) {
          const why = addresses.length ? addresses.map((a) => guard.check(a.address)).map((v) => (v.allowed ? "" : v.why)).join("; ") : "no address";
          return cb(new OutboundRefusedError("private_address", `refusing to connect to ${hostname}: ${why}`));
        }
        if (options.all) return cb(null, usable.map((a) => ({ address: a.address, family: a.family })));
        cb(null, usable[0]!.address, usable[0]!.family);
      },
      (err: NodeJS.ErrnoException) => cb(err),
    );
  };
}

/**
 * A response body, parsed with the rules inbound request bodies follow (http/body.ts): strict
 * UTF-8 (never decoded to U+FFFD) and at most MAX_BODY_NESTING levels, checked on the bytes
 * before JSON.parse, so that nothing after it (canonical JSON, signatures, JSON.stringify when the
 * answer is stored or shown) can overflow the stack on a hostile peer's answer. The size cap is
 * readBody's. Text that is not JSON gives `body: undefined` (proxies answer errors in HTML);
 * call() refuses that for a success answer.
 */
export function parseResponseBody(bytes: Buffer): { ok: true; body: unknown; rawBody: string } | { ok: false; why: string } {
  if (bytes.length === 0) return { ok: true, body: undefined, rawBody: "" };
  if (!isUtf8(bytes)) return { ok: false, why: "a response body that is not valid UTF-8" };
  if (jsonTextDepth(bytes, MAX_BODY_NESTING) > MAX_BODY_NESTING) return { ok: false, why: `a response body nesting deeper than ${MAX_BODY_NESTING} levels` };
  const rawBody = bytes.toString("utf8");
  let body: unknown = undefined;
  try {
    body = JSON.parse(rawBody);
  } catch {
    body = undefined;
  }
  return { ok: true, body, rawBody };
}

/** The whole body of `res`; past `limit` bytes the stream is destroyed (the rest is not read) and the error is `malformed`. */
export function readBody(res: Readable, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on("data", (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        res.destroy(Object.assign(new Error(`a response body larger than ${limit} bytes`), { malformed: true }));
        return;
      }
      chunks.push(c);
    });
    res.on("end", () => resolve(Buffer.concat(chunks)));
    res.on("error", reject);
    res.on("aborted", () => reject(new Error("response aborted")));
  });
}

function malformedAnswer(destination: string, message: string): FederationRequestError {
  const e = new FederationRequestError(destination, message);
  e.malformed = true;
  return e;
}

function isJsonObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export class FederationClient {
  readonly resolver: ServerResolver;
  readonly guard: AddressGuard;
  private readonly agent: https.Agent;
  private readonly maxResponseBytes: number;
  private readonly now: () => number;

  constructor(private readonly opts: FederationClientOptions) {
    this.now = opts.now ?? Date.now;
    this.maxResponseBytes = opts.maxResponseBytes ?? 64 * 1024 * 1024;
    this.guard = new AddressGuard({ allowAll: opts.allowPrivateAddresses, allowRanges: opts.ipRangeAllowlist ?? [] });
    this.agent = new https.Agent({
      keepAlive: true,
      maxSockets: 16,
      rejectUnauthorized: !opts.insecureSkipTlsVerify,
      // One TLS context (OpenSSL SSL_CTX with its certificate store) for every outbound
      // connection. Without it, tls.connect builds a new context per connection: a new SSL_CTX for
      // each reconnect to each destination, which costs CPU and native memory with connection
      // churn (bench/README.md, "Memory, 2026-12-05": in a plain https loop, 12,000 reconnects grew
      // memory outside the V8 heap by 26 MB with a context per connection, 12 MB with one). Certificate checks are
      // unchanged: the CA list is the context's, the name check and rejectUnauthorized are per
      // connection.
      secureContext: tls.createSecureContext(opts.extraCaPem ? { ca: [...tls.rootCertificates, opts.extraCaPem] } : {}),
      lookup: guardedLookup(this.guard, opts.lookup),
    });
    this.resolver =
      opts.resolver ??
      new ServerResolver({
        now: this.now,
        fetchWellKnown: (host) => this.fetchWellKnown(host),
        resolveSrv: (name) => resolveSrvWithTtl(name),
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
    try {
      this.checkLiteral(target.connectHost);
    } catch (e) {
      throw this.refused(destination, e as OutboundRefusedError);
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
          const what = `${method} ${path.split("?")[0]} on ${destination} answered ${res.statusCode ?? 0} with`;
          readBody(res, options.maxResponseBytes ?? this.maxResponseBytes).then(
            (bytes) => {
              const parsed = parseResponseBody(bytes);
              if (!parsed.ok) return reject(malformedAnswer(destination, `${what} ${parsed.why}`));
              resolve({ status: res.statusCode ?? 0, body: parsed.body, rawBody: parsed.rawBody });
            },
            (err: Error & { malformed?: boolean }) => reject(err.malformed ? malformedAnswer(destination, `${what} ${err.message}`) : new FederationRequestError(destination, err.message)),
          );
        },
      );
      const timer = setTimeout(() => req.destroy(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
      req.on("close", () => clearTimeout(timer));
      req.on("timeout", () => req.destroy(new Error(`timed out after ${timeoutMs} ms`)));
      req.on("error", (err) => {
        const refusal = refusalOf(err);
        if (refusal) return reject(this.refused(destination, new OutboundRefusedError(refusal.reason, `${method} ${path.split("?")[0]} to ${destination}: ${refusal.message}`)));
        reject(new FederationRequestError(destination, `${method} ${path} to ${destination}: ${err.message}`));
      });
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
    // Every federation answer Gatehouse reads is a JSON object (make_*, send_*, invite, keys...).
    if (!isJsonObject(res.body)) throw malformedAnswer(destination, `${method} ${path.split("?")[0]} on ${destination} answered ${res.status} with a body that is not a JSON object`);
    return res.body as T;
  }

  /** An IP-literal target (which no lookup sees) is checked by the guard here. */
  private checkLiteral(host: string): void {
    if (isIP(host) === 0) return;
    const v = this.guard.check(host);
    if (!v.allowed) throw new OutboundRefusedError("private_address", `refusing to connect to ${host}: ${v.why}`);
  }

  /** Reports a refusal (metric, log) and turns it into the request's error. */
  private refused(destination: string, err: OutboundRefusedError): FederationRequestError {
    this.opts.onRefused?.(err.reason, destination, err.message);
    const e = new FederationRequestError(destination, err.message);
    e.refusal = err.reason;
    return e;
  }

  /**
   * GET https://<host>/.well-known/matrix/server, following up to 5 redirects (https only, each
   * target checked by the address guard; a loop is refused). Certificate for `host` (SNI `host`).
   */
  private async fetchWellKnown(host: string): Promise<WellKnownAnswer> {
    const seen = new Set<string>();
    let url = new URL(`https://${isIP(host) === 6 ? `[${host}]` : host}/.well-known/matrix/server`);
    for (let hop = 0; ; hop++) {
      seen.add(url.href);
      let res: { status: number; location?: string; headers: http.IncomingHttpHeaders; body?: Buffer };
      try {
        const hostname = url.hostname.replace(/^\[|\]$/g, "");
        this.checkLiteral(hostname);
        res = await this.getOnce(url, hostname);
      } catch (e) {
        const refusal = refusalOf(e);
        if (refusal) {
          this.opts.onRefused?.(refusal.reason, host, `.well-known of ${host}: ${refusal.message}`);
          return { kind: "unavailable", why: refusal.message };
        }
        return { kind: "unavailable", why: (e as Error).message };
      }
      if (res.status >= 300 && res.status < 400 && res.location) {
        let next: URL;
        try {
          next = new URL(res.location, url);
        } catch {
          return { kind: "invalid", why: `redirect to an invalid URL ${JSON.stringify(res.location)}` };
        }
        if (next.protocol !== "https:") return { kind: "invalid", why: `redirect to a non-https URL ${next.href}` };
        const loop = seen.has(next.href);
        if (loop || hop >= 5) {
          const reason: RefusalReason = loop ? "redirect_loop" : "too_many_redirects";
          const why = loop ? `redirect loop at ${next.href}` : `more than 5 redirects (last to ${next.href})`;
          this.opts.onRefused?.(reason, host, `.well-known of ${host}: ${why}`);
          return { kind: "unavailable", why };
        }
        url = next;
        continue;
      }
      if (res.status >= 500) return { kind: "unavailable", why: `HTTP ${res.status}` };
      if (res.status !== 200) return { kind: "invalid", why: `HTTP ${res.status}` };
      // The same bounded parse as every other answer (strict UTF-8, nesting).
      const answer = parseResponseBody(res.body ?? Buffer.alloc(0));
      if (!answer.ok) return { kind: "invalid", why: answer.why };
      if (answer.body === undefined) return { kind: "invalid", why: "not JSON" };
      const parsed = answer.body;
      const server = parsed && typeof parsed === "object" ? (parsed as Record<string, unknown>)["m.server"] : undefined;
      return { kind: "ok", server, cacheSeconds: cacheSecondsFromHeaders(res.headers, this.now()) };
    }
  }

  private getOnce(url: URL, hostname: string): Promise<{ status: number; location?: string; headers: http.IncomingHttpHeaders; body?: Buffer }> {
    return new Promise((resolve, reject) => {
      const timeoutMs = Math.min(this.opts.timeoutMs, 10_000);
      const req = https.get(
        {
          host: hostname,
          port: url.port ? Number(url.port) : 443,
          path: url.pathname + url.search,
          agent: this.agent,
          servername: isIP(hostname) ? "" : hostname,
          headers: { "User-Agent": "Gatehouse" },
          timeout: timeoutMs,
        },
        (res) => {
          const status = res.statusCode ?? 0;
          if (status !== 200) {
            res.resume();
            return resolve({ status, location: res.headers.location, headers: res.headers });
          }
          readBody(res, WELL_KNOWN_MAX_BYTES).then((body) => resolve({ status, headers: res.headers, body }), reject);
        },
      );
      const timer = setTimeout(() => req.destroy(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
      req.on("close", () => clearTimeout(timer));
      req.on("timeout", () => req.destroy(new Error(`timed out after ${timeoutMs} ms`)));
      req.on("error", reject);
    });
  }
}

/** Synapse's limit for a .well-known body. */
const WELL_KNOWN_MAX_BYTES = 50 * 1024;
