/**
 * Verify keys of remote servers: fetched from the origin's /_matrix/key/v2/server, checked
 * (server_name, self-signature), cached in Redis and in memory (as ready-to-use verifiers, since
 * importing a key costs as much as a verification), with notary fallback via
 * POST /_matrix/key/v2/query on the configured trusted key servers.
 *
 * Validity (spec: room versions 5+, "Signing key validity period"): a key is usable for a request
 * while its (clamped) valid_until_ts is in the future, and for an event when the clamped
 * valid_until_ts is ≥ the event's origin_server_ts. The clamp is min(valid_until_ts, fetched + 7 days).
 */
import type { Redis } from "ioredis";
import { decodeBase64 } from "../protocol/base64.js";
import { defaultEd25519, type Ed25519, type Ed25519Verifier } from "../protocol/ed25519.js";
import { verifySignedJson } from "../protocol/json-signing.js";
import type { RedisKeys } from "../store/redis-keys.js";
import type { FederationClient } from "../net/federation-client.js";
import type { Logger } from "../logger.js";

const SEVEN_DAYS_MS = 7 * 24 * 3600_000;
/** How long a failed fetch is remembered before trying the same server again. */
const FAILURE_COOLDOWN_MS = 30_000;
/**
 * Least time between two successful fetches of one server: requests naming unknown key IDs must
 * not make Gatehouse re-download a server's keys on every request (a rotation is still picked up
 * within this time).
 */
const MIN_REFETCH_MS = 10_000;
/** Own-key verifiers kept at most (RemoteKeys.ownVerifiers). */
const OWN_VERIFIERS_MAX = 16;

export interface CachedKey {
  key: string;
  validUntilTs: number;
  /** Present for keys from old_verify_keys. */
  expiredTs?: number;
  fetchedTs: number;
}

export interface KeyLookupResult {
  verifier: Ed25519Verifier;
  record: CachedKey;
}

export type KeyFetchOutcome = "hit" | "miss" | "error" | "notary";

export interface RemoteKeysOptions {
  redis: Redis;
  keys: RedisKeys;
  client: FederationClient;
  trustedKeyServers: readonly string[];
  ownServerName: string;
  /** Our own verify keys, answered without a fetch. */
  ownKeys: () => Record<string, CachedKey>;
  logger: Logger;
  now?: () => number;
  ed25519?: Ed25519;
  onFetch?: (outcome: KeyFetchOutcome) => void;
  /**
   * Bounds of one key request (a server's own document, or one notary query): the whole answer
   * within `timeoutMs`, at most `maxBytes` read (a key document is under 1 kB; an unbounded one
   * used to be read up to 64 MiB). Defaults: 10 s and 1 MiB.
   */
  fetchLimits?: { timeoutMs: number; maxBytes: number };
}

/** Parses and checks a key document from `serverName`; returns its keys or a reason. */
export function parseKeyDocument(
  doc: unknown,
  serverName: string,
  fetchedTs: number,
  ed: Ed25519 = defaultEd25519,
): { ok: true; keys: Record<string, CachedKey> } | { ok: false; reason: string } {
  if (typeof doc !== "object" || doc === null) return { ok: false, reason: "not an object" };
  const d = doc as Record<string, unknown>;
  if (d.server_name !== serverName) return { ok: false, reason: `server_name ${JSON.stringify(d.server_name)} is not ${serverName}` };
  if (typeof d.valid_until_ts !== "number" || !Number.isInteger(d.valid_until_ts)) return { ok: false, reason: "valid_until_ts missing" };
  const validUntilTs = d.valid_until_ts;
  const verifyKeys = d.verify_keys;
  if (typeof verifyKeys !== "object" || verifyKeys === null) return { ok: false, reason: "verify_keys missing" };
  const keys: Record<string, CachedKey> = {};
  const verifiers = new Map<string, Ed25519Verifier>();
  for (const [keyId, v] of Object.entries(verifyKeys as Record<string, unknown>)) {
    const k = (v as { key?: unknown } | null)?.key;
    if (!keyId.startsWith("ed25519:") || typeof k !== "string") continue;
    const raw = decodeBase64(k);
    if (!raw || raw.length !== 32) continue;
    keys[keyId] = { key: k, validUntilTs, fetchedTs };
    verifiers.set(keyId, ed.verifier(raw));
  }
  // The document must be signed by the server itself with one of the keys it lists.
  const check = verifySignedJson(d, serverName, (entity, keyId) => (entity === serverName ? verifiers.get(keyId) : undefined));
  if (!check.ok) return { ok: false, reason: `key document signature: ${check.reason}` };
  const old = d.old_verify_keys;
  if (typeof old === "object" && old !== null) {
    for (const [keyId, v] of Object.entries(old as Record<string, unknown>)) {
      const o = v as { key?: unknown; expired_ts?: unknown } | null;
      if (!keyId.startsWith("ed25519:") || typeof o?.key !== "string" || typeof o.expired_ts !== "number") continue;
      if (keys[keyId]) continue;
      const raw = decodeBase64(o.key);
      if (!raw || raw.length !== 32) continue;
      keys[keyId] = { key: o.key, validUntilTs: o.expired_ts, expiredTs: o.expired_ts, fetchedTs };
    }
  }
  return { ok: true, keys };
}

/** The time until which a key may be trusted: valid_until_ts clamped to fetch time + 7 days. */
export function effectiveValidUntil(record: CachedKey): number {
  if (record.expiredTs !== undefined) return record.expiredTs;
  return Math.min(record.validUntilTs, record.fetchedTs + SEVEN_DAYS_MS);
}

export class RemoteKeys {
  private readonly now: () => number;
  private readonly ed: Ed25519;
  private readonly memory = new Map<string, { record: CachedKey; verifier: Ed25519Verifier }>();
  /**
   * Verifiers of this server's own keys, by the key (base64): the key import (a public-key
   * object) once per key, not per signature checked. A handful of entries (current and retired
   * own keys); emptied if it ever grows past OWN_VERIFIERS_MAX (many rotations).
   */
  private readonly ownVerifiers = new Map<string, Ed25519Verifier>();
  private readonly inflight = new Map<string, Promise<Record<string, CachedKey> | null>>();
  private readonly failures = new Map<string, number>();
  private readonly lastSuccess = new Map<string, number>();
  private readonly maxMemory = 50_000;

  constructor(private readonly o: RemoteKeysOptions) {
    this.now = o.now ?? Date.now;
    this.ed = o.ed25519 ?? defaultEd25519;
  }

  /**
   * A verifier for `serverName`'s key `keyId`, usable at `atTs` (now for requests, the event's
   * origin_server_ts for events). Fetches when the cached key is missing or no longer covers atTs.
   */
  async getVerifier(serverName: string, keyId: string, atTs?: number, forEvent = false): Promise<KeyLookupResult | undefined> {
    const at = atTs ?? this.now();
    if (serverName === this.o.ownServerName) {
      const own = this.o.ownKeys()[keyId];
      if (!own) return undefined;
      let verifier = this.ownVerifiers.get(own.key);
      if (!verifier) {
        const raw = decodeBase64(own.key);
        if (!raw) return undefined;
        if (this.ownVerifiers.size >= OWN_VERIFIERS_MAX) this.ownVerifiers.clear();
        verifier = this.ed.verifier(raw);
        this.ownVerifiers.set(own.key, verifier);
      }
      return { record: own, verifier };
    }
    const usable = (r: CachedKey) => (forEvent ? effectiveValidUntil(r) >= at : r.expiredTs === undefined && effectiveValidUntil(r) > this.now());

    const mem = this.memory.get(`${serverName}\u0000${keyId}`);
    if (mem && usable(mem.record)) {
      this.o.onFetch?.("hit");
      return mem;
    }
    const stored = await this.o.redis.hget(this.o.keys.serverKeys(serverName), keyId);
    if (stored) {
      const record = JSON.parse(stored) as CachedKey;
      if (usable(record)) {
        this.o.onFetch?.("hit");
        return this.remember(serverName, keyId, record);
      }
    }
    this.o.onFetch?.("miss");
    const fetched = await this.fetch(serverName, forEvent ? at : this.now());
    const record = fetched?.[keyId];
    if (!record || !usable(record)) return undefined;
    return this.remember(serverName, keyId, record);
  }

  private remember(serverName: string, keyId: string, record: CachedKey): KeyLookupResult | undefined {
    const raw = decodeBase64(record.key);
    if (!raw || raw.length !== 32) return undefined;
    const cacheKey = `${serverName}\u0000${keyId}`;
    const existing = this.memory.get(cacheKey);
    const verifier = existing && existing.record.key === record.key ? existing.verifier : this.ed.verifier(raw);
    if (this.memory.size >= this.maxMemory) this.memory.delete(this.memory.keys().next().value!);
    const entry = { record, verifier };
    this.memory.set(cacheKey, entry);
    return entry;
  }

  private fetchLimits(): { timeoutMs: number; maxResponseBytes: number } {
    const l = this.o.fetchLimits ?? { timeoutMs: 10_000, maxBytes: 1_048_576 };
    return { timeoutMs: l.timeoutMs, maxResponseBytes: l.maxBytes };
  }

  /** Fetches and caches all keys of a server (direct, then notaries); one fetch at a time per server. */
  fetch(serverName: string, minimumValidUntilTs: number): Promise<Record<string, CachedKey> | null> {
    const running = this.inflight.get(serverName);
    if (running) return running;
    const lastFailure = this.failures.get(serverName);
    if (lastFailure !== undefined && this.now() - lastFailure < FAILURE_COOLDOWN_MS) return Promise.resolve(null);
    const lastSuccess = this.lastSuccess.get(serverName);
    if (lastSuccess !== undefined && this.now() - lastSuccess < MIN_REFETCH_MS) return this.cached(serverName);
    const p = this.doFetch(serverName, minimumValidUntilTs).finally(() => this.inflight.delete(serverName));
    this.inflight.set(serverName, p);
    return p;
  }

  private async doFetch(serverName: string, minimumValidUntilTs: number): Promise<Record<string, CachedKey> | null> {
    const fetchedTs = this.now();
    let keys: Record<string, CachedKey> | null = null;
    try {
      const res = await this.o.client.request("GET", serverName, "/_matrix/key/v2/server", undefined, { signed: false, ...this.fetchLimits() });
      if (res.status === 200) {
        const parsed = parseKeyDocument(res.body, serverName, fetchedTs, this.ed);
        if (parsed.ok) keys = parsed.keys;
        else this.o.logger.warn({ server: serverName, reason: parsed.reason }, "rejected key document");
      } else {
        this.o.logger.warn({ server: serverName, status: res.status }, "key fetch answered non-200");
      }
    } catch (e) {
      this.o.logger.warn({ server: serverName, err: (e as Error).message }, "key fetch failed");
    }
    if (!keys) {
      keys = await this.fetchFromNotaries(serverName, minimumValidUntilTs, fetchedTs);
      if (keys) this.o.onFetch?.("notary");
    }
    if (!keys) {
      this.o.onFetch?.("error");
      this.failures.set(serverName, this.now());
      if (this.failures.size > 10_000) this.failures.clear();
      return null;
    }
    this.failures.delete(serverName);
    this.lastSuccess.set(serverName, this.now());
    if (this.lastSuccess.size > 10_000) this.lastSuccess.clear();
    const redisKey = this.o.keys.serverKeys(serverName);
    const fields: string[] = [];
    for (const [keyId, record] of Object.entries(keys)) fields.push(keyId, JSON.stringify(record));
    if (fields.length > 0) {
      await this.o.redis.multi().hset(redisKey, ...fields).pexpire(redisKey, 30 * 24 * 3600_000).exec();
    }
    // Old keys already cached stay (a server may drop a key from old_verify_keys).
    return this.cached(serverName);
  }

  private async cached(serverName: string): Promise<Record<string, CachedKey>> {
    const all = await this.o.redis.hgetall(this.o.keys.serverKeys(serverName));
    const merged: Record<string, CachedKey> = {};
    for (const [k, v] of Object.entries(all)) merged[k] = JSON.parse(v) as CachedKey;
    return merged;
  }

  private async fetchFromNotaries(serverName: string, minimumValidUntilTs: number, fetchedTs: number): Promise<Record<string, CachedKey> | null> {
    for (const notary of this.o.trustedKeyServers) {
      try {
        const res = await this.o.client.request(
          "POST",
          notary,
          "/_matrix/key/v2/query",
          { server_keys: { [serverName]: {} } },
          this.fetchLimits(),
        );
        if (res.status !== 200) continue;
        const list = (res.body as { server_keys?: unknown })?.server_keys;
        if (!Array.isArray(list)) continue;
        const notaryVerifiers = await this.notaryVerifiers(notary);
        for (const doc of list) {
          if ((doc as { server_name?: unknown })?.server_name !== serverName) continue;
          // The notary must have signed what it relays.
          const bynotary = verifySignedJson(doc as Record<string, unknown>, notary, (entity, keyId) =>
            entity === notary ? notaryVerifiers.get(keyId) : undefined,
          );
          if (!bynotary.ok) continue;
          const parsed = parseKeyDocument(doc, serverName, fetchedTs, this.ed);
          if (parsed.ok && Object.values(parsed.keys).some((k) => k.validUntilTs >= minimumValidUntilTs || k.expiredTs !== undefined)) {
            return parsed.keys;
          }
        }
      } catch (e) {
        this.o.logger.warn({ notary, server: serverName, err: (e as Error).message }, "notary key query failed");
      }
    }
    return null;
  }

  private async notaryVerifiers(notary: string): Promise<Map<string, Ed25519Verifier>> {
    const out = new Map<string, Ed25519Verifier>();
    const keys = await this.fetch(notary, this.now());
    for (const [keyId, record] of Object.entries(keys ?? {})) {
      const raw = decodeBase64(record.key);
      if (raw && raw.length === 32 && record.expiredTs === undefined) out.set(keyId, this.ed.verifier(raw));
    }
    return out;
  }
}
