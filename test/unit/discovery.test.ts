/**
 * Server-name resolution (spec: Server-Server API "Resolving server names") in the spec's order,
 * with DNS and well-known lookups injected; and the private-address guard of the outbound client.
 */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import {
  ServerResolver,
  splitHostPort,
  cacheSecondsFromHeaders,
  type DiscoveryDeps,
  type WellKnownAnswer,
  WELL_KNOWN_DEFAULT_CACHE_MS,
  WELL_KNOWN_MIN_CACHE_MS,
  WELL_KNOWN_MAX_CACHE_MS,
  WELL_KNOWN_INVALID_CACHE_MS,
  WELL_KNOWN_DOWN_CACHE_MS,
  SRV_NEGATIVE_CACHE_MS,
} from "../../src/net/discovery.js";

type WK = string | null | Error | WellKnownAnswer;
function resolver(wellKnown: Record<string, WK>, srv: Record<string, { name: string; port: number; priority?: number; weight?: number }[]>, now = { t: 0 }, ttl: Record<string, number> = {}) {
  const calls: string[] = [];
  const deps: DiscoveryDeps = {
    now: () => now.t,
    random: () => 0.5,
    async fetchWellKnown(host): Promise<WellKnownAnswer> {
      calls.push(`well-known ${host}`);
      const v = wellKnown[host];
      if (v instanceof Error) throw v;
      if (v === undefined || v === null) return { kind: "invalid", why: "HTTP 404" };
      if (typeof v === "string") return { kind: "ok", server: v, cacheSeconds: null };
      return v;
    },
    async resolveSrv(name) {
      calls.push(`srv ${name}`);
      return { records: (srv[name] ?? []).map((r) => ({ priority: 10, weight: 0, ...r })), ttlSeconds: ttl[name] ?? 300 };
    },
  };
  return { r: new ServerResolver(deps), calls, now };
}

describe("server discovery", () => {
  test("1. IP literal: connect directly, default port 8448, Host is the server name, no SNI", async () => {
    const { r, calls } = resolver({}, {});
    assert.deepEqual(await r.resolve("1.2.3.4"), { connectHost: "1.2.3.4", port: 8448, hostHeader: "1.2.3.4", tlsServerName: undefined });
    assert.deepEqual(await r.resolve("[2001:db8::1]:8449"), { connectHost: "2001:db8::1", port: 8449, hostHeader: "[2001:db8::1]:8449", tlsServerName: undefined });
    assert.deepEqual(calls, [], "no well-known or SRV lookups for IP literals");
  });
  test("2. explicit port: connect to host:port, Host with port, SNI = host", async () => {
    const { r, calls } = resolver({}, {});
    assert.deepEqual(await r.resolve("matrix.example:8888"), { connectHost: "matrix.example", port: 8888, hostHeader: "matrix.example:8888", tlsServerName: "matrix.example" });
    assert.deepEqual(calls, []);
  });
  test("3. well-known delegation: to an IP, to host:port, to a host with SRV, to a bare host (8448)", async () => {
    const { r } = resolver(
      { "a.example": "10.0.0.5:9000", "b.example": "fed.b.example:443", "c.example": "fed.c.example", "d.example": "fed.d.example" },
      { "_matrix-fed._tcp.fed.c.example": [{ name: "srv.c.example", port: 8999 }] },
    );
    assert.deepEqual(await r.resolve("a.example"), { connectHost: "10.0.0.5", port: 9000, hostHeader: "10.0.0.5:9000", tlsServerName: undefined });
    assert.deepEqual(await r.resolve("b.example"), { connectHost: "fed.b.example", port: 443, hostHeader: "fed.b.example:443", tlsServerName: "fed.b.example" });
    assert.deepEqual(await r.resolve("c.example"), { connectHost: "srv.c.example", port: 8999, hostHeader: "fed.c.example", tlsServerName: "fed.c.example" });
    assert.deepEqual(await r.resolve("d.example"), { connectHost: "fed.d.example", port: 8448, hostHeader: "fed.d.example", tlsServerName: "fed.d.example" });
  });
  test("4–6. no well-known: _matrix-fed._tcp SRV, then the deprecated _matrix._tcp, then 8448", async () => {
    const { r, calls } = resolver(
      {},
      {
        "_matrix-fed._tcp.e.example": [
          { name: "low.e.example", port: 1, priority: 20 },
          { name: "best.e.example", port: 2, priority: 10, weight: 5 },
          { name: "other.e.example", port: 3, priority: 10, weight: 1 },
        ],
        "_matrix._tcp.f.example": [{ name: "old.f.example", port: 8447 }],
      },
    );
    assert.deepEqual(await r.resolve("e.example"), { connectHost: "best.e.example", port: 2, hostHeader: "e.example", tlsServerName: "e.example" });
    assert.deepEqual(await r.resolve("f.example"), { connectHost: "old.f.example", port: 8447, hostHeader: "f.example", tlsServerName: "f.example" });
    assert.deepEqual(await r.resolve("g.example"), { connectHost: "g.example", port: 8448, hostHeader: "g.example", tlsServerName: "g.example" });
    assert.ok(calls.indexOf("srv _matrix-fed._tcp.f.example") < calls.indexOf("srv _matrix._tcp.f.example"));
  });
  test("an SRV record of '.' means no service", async () => {
    const { r } = resolver({}, { "_matrix-fed._tcp.h.example": [{ name: ".", port: 0 }] });
    assert.equal((await r.resolve("h.example")).port, 8448);
  });
  test("malformed or failing well-known falls through to SRV; results are cached (24 h, errors 1 h)", async () => {
    const now = { t: 0 };
    const { r, calls } = resolver({ "i.example": "not a server name!", "j.example": new Error("timeout") }, {}, now);
    assert.equal((await r.resolve("i.example")).connectHost, "i.example");
    assert.equal((await r.resolve("j.example")).connectHost, "j.example");
    const before = calls.filter((c) => c.startsWith("well-known")).length;
    await r.resolve("j.example");
    assert.equal(calls.filter((c) => c.startsWith("well-known")).length, before, "cached failure");
    now.t = 3600_001;
    await r.resolve("j.example");
    assert.equal(calls.filter((c) => c.startsWith("well-known")).length, before + 1, "re-fetched after an hour");
  });
  test("invalid server names are refused", async () => {
    const { r } = resolver({}, {});
    await assert.rejects(r.resolve("bad name"));
    await assert.rejects(r.resolve("host:99999"));
    assert.equal(splitHostPort("[::1"), null);
  });
});


describe("discovery caches (Synapse's bounds)", () => {
  const count = (calls: string[], prefix: string) => calls.filter((c) => c.startsWith(prefix)).length;

  for (const c of [
    { headers: {}, want: null, why: "no caching headers: the caller uses the default" },
    { headers: { "cache-control": "max-age=600" }, want: 600, why: "max-age in seconds" },
    { headers: { "cache-control": "public, Max-Age=\"90\"" }, want: 90, why: "directive names are case-insensitive, quoted values allowed" },
    { headers: { "cache-control": "no-store, max-age=600" }, want: 0, why: "no-store wins: not cached" },
    { headers: { expires: "Thu, 01 Jan 1970 00:20:00 GMT" }, want: 1200, why: "Expires minus now (now = 0)" },
    { headers: { expires: "0" }, want: 0, why: "an invalid Expires means already expired (RFC 7234)" },
    { headers: { "cache-control": "max-age=60", expires: "Thu, 01 Jan 1970 10:00:00 GMT" }, want: 60, why: "max-age wins over Expires" },
  ]) {
    test(`cache headers: ${c.why}`, () => assert.equal(cacheSecondsFromHeaders(c.headers, 0), c.want));
  }

  const periods: { answer: WellKnownAnswer; wantMs: number; why: string }[] = [
    { answer: { kind: "ok", server: "x.example:1", cacheSeconds: null }, wantMs: WELL_KNOWN_DEFAULT_CACHE_MS, why: "no headers: 24 h (jitter pinned to ×1)" },
    { answer: { kind: "ok", server: "x.example:1", cacheSeconds: 10 }, wantMs: WELL_KNOWN_MIN_CACHE_MS, why: "a short max-age is raised to 5 min" },
    { answer: { kind: "ok", server: "x.example:1", cacheSeconds: 7 * 24 * 3600 }, wantMs: WELL_KNOWN_MAX_CACHE_MS, why: "a long max-age is capped at 48 h" },
    { answer: { kind: "ok", server: "x.example:1", cacheSeconds: 3 * 3600 }, wantMs: 3 * 3600_000, why: "a max-age within bounds is used as is" },
    { answer: { kind: "invalid", why: "HTTP 404" }, wantMs: WELL_KNOWN_INVALID_CACHE_MS, why: "no well-known: 1 h" },
    { answer: { kind: "ok", server: 42, cacheSeconds: 600 }, wantMs: WELL_KNOWN_INVALID_CACHE_MS, why: "m.server not a string: invalid, 1 h" },
    { answer: { kind: "unavailable", why: "ECONNREFUSED" }, wantMs: WELL_KNOWN_INVALID_CACHE_MS, why: "unreachable, never had one: 1 h" },
  ];
  for (const c of periods) {
    test(`well-known cache period: ${c.why}`, async () => {
      const now = { t: 0 };
      const { r, calls } = resolver({ "x.example": c.answer }, {}, now);
      await r.resolve("x.example");
      // A valid answer is refetched in the last 20 % of its period; a failure only once it expires.
      const refetchAt = c.answer.kind === "ok" && typeof c.answer.server === "string" ? c.wantMs * 0.8 : c.wantMs;
      now.t = refetchAt - 1;
      await r.resolve("x.example");
      assert.equal(count(calls, "well-known"), 1, "still cached");
      now.t = refetchAt + 1;
      await r.resolve("x.example");
      assert.equal(count(calls, "well-known"), 2, "fetched again");
    });
  }

  test("no-store: the well-known answer is used but not cached", async () => {
    const { r, calls } = resolver({ "x.example": { kind: "ok", server: "fed.x.example:9", cacheSeconds: 0 } }, {});
    assert.equal((await r.resolve("x.example")).port, 9);
    await r.resolve("x.example");
    assert.equal(count(calls, "well-known"), 2);
  });

  test("a server that goes down keeps its cached delegation; one that lost it backs off from 2 min, doubling up to 1 h", async () => {
    const now = { t: 0 };
    const wk: Record<string, WK> = { "x.example": { kind: "ok", server: "fed.x.example:9", cacheSeconds: 3600 } };
    const { r, calls } = resolver(wk, {}, now);
    assert.equal((await r.resolve("x.example")).connectHost, "fed.x.example");
    wk["x.example"] = { kind: "unavailable", why: "ECONNREFUSED" };
    now.t = 3600_000 * 0.9; // in the grace period: refetch, fails, old answer kept
    assert.equal((await r.resolve("x.example")).connectHost, "fed.x.example", "temporary failure keeps the old answer");
    wk["x.example"] = { kind: "invalid", why: "HTTP 404" };
    // Step through time a minute at a time, noting when the well-known is fetched again.
    const fetchedAt: number[] = [];
    for (now.t = 3600_000 + 1; now.t < 4 * 3600_000; now.t += 60_000) {
      const before = count(calls, "well-known");
      assert.equal((await r.resolve("x.example")).connectHost, "x.example", "no delegation any more");
      if (count(calls, "well-known") > before) fetchedAt.push(now.t);
    }
    const steps = fetchedAt.slice(1).map((t, k) => Math.round((t - fetchedAt[k]!) / 60_000));
    // 2, 4, 8, 16, 32 min, then capped at 1 h.
    assert.deepEqual(steps.slice(0, 6), [2, 4, 8, 16, 32, 60], `backoff steps ${steps}`);
    assert.ok(WELL_KNOWN_DOWN_CACHE_MS === 2 * 60_000);
  });

  test("SRV answers are cached by their TTL; an empty answer for 60 s (no second pair of lookups per request)", async () => {
    const now = { t: 0 };
    const { r, calls } = resolver({}, { "_matrix-fed._tcp.s.example": [{ name: "fed.s.example", port: 8500 }] }, now, { "_matrix-fed._tcp.s.example": 120 });
    for (let i = 0; i < 5; i++) assert.equal((await r.resolve("s.example")).port, 8500);
    assert.equal(count(calls, "srv _matrix-fed._tcp.s.example"), 1, "one SRV lookup for five requests");
    now.t = 119_000;
    await r.resolve("s.example");
    assert.equal(count(calls, "srv _matrix-fed._tcp.s.example"), 1);
    now.t = 121_000;
    await r.resolve("s.example");
    assert.equal(count(calls, "srv _matrix-fed._tcp.s.example"), 2, "looked up again after the TTL");

    await r.resolve("plain.example");
    await r.resolve("plain.example");
    assert.equal(count(calls, "srv _matrix-fed._tcp.plain.example"), 1);
    assert.equal(count(calls, "srv _matrix._tcp.plain.example"), 1, "the negative answer of both names is cached");
    now.t += SRV_NEGATIVE_CACHE_MS + 1;
    await r.resolve("plain.example");
    assert.equal(count(calls, "srv _matrix-fed._tcp.plain.example"), 2);
  });

  test("a DNS failure keeps the previous SRV answer", async () => {
    const now = { t: 0 };
    let fail = false;
    const calls: string[] = [];
    const r = new ServerResolver({
      now: () => now.t,
      random: () => 0.5,
      fetchWellKnown: async () => ({ kind: "invalid", why: "404" }),
      resolveSrv: async (name) => {
        calls.push(name);
        if (fail) throw new Error("SERVFAIL");
        return name.startsWith("_matrix-fed") ? { records: [{ name: "fed.t.example", port: 1, priority: 0, weight: 0 }], ttlSeconds: 60 } : { records: [], ttlSeconds: 0 };
      },
    });
    assert.equal((await r.resolve("t.example")).connectHost, "fed.t.example");
    fail = true;
    now.t = 61_000;
    assert.equal((await r.resolve("t.example")).connectHost, "fed.t.example");
  });

  test("concurrent resolutions share one well-known fetch and one SRV lookup", async () => {
    const { r, calls } = resolver({ "c.example": "fed.c.example" }, { "_matrix-fed._tcp.fed.c.example": [{ name: "srv.c.example", port: 1 }] });
    await Promise.all(Array.from({ length: 10 }, () => r.resolve("c.example")));
    assert.deepEqual(calls, ["well-known c.example", "srv _matrix-fed._tcp.fed.c.example"]);
  });

  test("SRV weights: a choice weighted among the lowest priority", async () => {
    let x = 0;
    const r = new ServerResolver({
      now: () => 0,
      random: () => x,
      fetchWellKnown: async () => ({ kind: "invalid", why: "404" }),
      resolveSrv: async () => ({
        records: [
          { name: "a.example.", port: 1, priority: 10, weight: 1 },
          { name: "b.example.", port: 2, priority: 10, weight: 3 },
          { name: "c.example.", port: 3, priority: 20, weight: 100 },
        ],
        ttlSeconds: 300,
      }),
    });
    x = 0.1; // 0.4 of 4 → a (weight 1)
    assert.equal((await r.resolve("w.example")).connectHost, "a.example", "trailing dot removed");
    x = 0.5; // 2 of 4 → b
    assert.equal((await r.resolve("w.example")).connectHost, "b.example");
  });
});
