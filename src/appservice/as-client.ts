/**
 * Requests from Gatehouse to an application service (Application Service API): user and alias
 * queries, pings, and pushed transactions. Authenticated with `Authorization: Bearer <hs_token>`
 * (and, with GATEHOUSE_APPSERVICE_LEGACY_AUTHORIZATION, also the `access_token` query parameter
 * that spec versions before 1.4 used).
 */
import type { AppserviceRegistration } from "./registration.js";
import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { parseResponseBody, readBody } from "../net/federation-client.js";

/**
 * The largest answer body read from an application service. Its answers are small (`{}` for a
 * transaction, a ping or a query); a service that streams more is cut off and the request fails
 * (the sender retries a transaction as for any failure), so a broken or hostile service cannot
 * fill Gatehouse's memory.
 */
export const APPSERVICE_MAX_RESPONSE_BYTES = 1_048_576;

export class AppserviceRequestError extends Error {
  constructor(
    message: string,
    /** The service's HTTP status; undefined when it could not be reached or timed out. */
    readonly status: number | undefined,
    readonly body: unknown,
    readonly timedOut = false,
  ) {
    super(message);
    this.name = "AppserviceRequestError";
  }
}

export interface AppserviceClientOptions {
  timeoutMs: number;
  legacyAuthorization: boolean;
}

export class AppserviceClient {
  constructor(private readonly opts: AppserviceClientOptions) {}

  /** The URL of `path` (`/_matrix/app/v1/...`) at the service, or null when it has no url. */
  url(reg: AppserviceRegistration, path: string): string | null {
    if (!reg.url) return null;
    const u = new URL(reg.url + path);
    if (this.opts.legacyAuthorization) u.searchParams.set("access_token", reg.hsToken);
    return u.toString();
  }

  /** One request; resolves with status and parsed body for any HTTP answer, throws when unreachable. */
  async request(reg: AppserviceRegistration, method: "GET" | "PUT" | "POST", path: string, body?: string | Buffer): Promise<{ status: number; body: unknown; rawBody: string }> {
    const url = this.url(reg, path);
    if (!url) throw new AppserviceRequestError(`application service ${reg.id} has no url`, undefined, undefined);
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: { Authorization: `Bearer ${reg.hsToken}`, ...(body !== undefined ? { "Content-Type": "application/json" } : {}) },
        ...(body !== undefined ? { body } : {}),
        signal: AbortSignal.timeout(this.opts.timeoutMs),
        redirect: "error",
      });
    } catch (err) {
      const e = err as Error & { cause?: Error };
      const timedOut = e.name === "TimeoutError" || e.name === "AbortError";
      throw new AppserviceRequestError(`${reg.id}: ${timedOut ? "timed out" : (e.cause?.message ?? e.message)}`, undefined, undefined, timedOut);
    }
    let bytes: Buffer;
    try {
      // The same capped read as other servers' answers (federation-client.ts readBody).
      bytes = res.body ? await readBody(Readable.fromWeb(res.body as WebReadableStream<Uint8Array>), APPSERVICE_MAX_RESPONSE_BYTES) : Buffer.alloc(0);
    } catch (err) {
      throw new AppserviceRequestError(`${reg.id}: answered ${res.status} with ${(err as Error).message}`, res.status, undefined);
    }
    // The rules every answer from another server follows: strict UTF-8, bounded nesting.
    const parsed = parseResponseBody(bytes);
    if (!parsed.ok) throw new AppserviceRequestError(`${reg.id}: answered ${res.status} with ${parsed.why}`, res.status, undefined);
    // An empty body counts as `{}`; text that is not JSON is kept as text (shown by /ping).
    const answer = parsed.rawBody === "" ? {} : parsed.body === undefined ? parsed.rawBody : parsed.body;
    return { status: res.status, body: answer, rawBody: parsed.rawBody };
  }

  /** Asks whether the service has a user (`GET /_matrix/app/v1/users/{userId}`): true on 200. */
  async queryUser(reg: AppserviceRegistration, userId: string): Promise<boolean> {
    try {
      return (await this.request(reg, "GET", `/_matrix/app/v1/users/${encodeURIComponent(userId)}`)).status === 200;
    } catch {
      return false;
    }
  }

  /** Asks the service to create a room for an alias (`GET /_matrix/app/v1/rooms/{alias}`): true on 200. */
  async queryAlias(reg: AppserviceRegistration, alias: string): Promise<boolean> {
    try {
      return (await this.request(reg, "GET", `/_matrix/app/v1/rooms/${encodeURIComponent(alias)}`)).status === 200;
    } catch {
      return false;
    }
  }
}

