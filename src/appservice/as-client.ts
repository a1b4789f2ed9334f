/**
 * Requests from Gatehouse to an application service (Application Service API): user and alias
 * queries, pings, and pushed transactions. Authenticated with `Authorization: Bearer <hs_token>`
 * (and, with GATEHOUSE_APPSERVICE_LEGACY_AUTHORIZATION, also the `access_token` query parameter
 * that spec versions before 1.4 used).
 */
import type { AppserviceRegistration } from "./registration.js";

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
    const text = await res.text().catch(() => "");
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch {
      /* not JSON: keep the text */
    }
    return { status: res.status, body: parsed, rawBody: text };
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
