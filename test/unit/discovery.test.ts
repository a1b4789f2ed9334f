/**
 * Server-name resolution (spec: Server-Server API "Resolving server names") in the spec's order,
 * with DNS and well-known lookups injected; and the private-address guard of the outbound client.
 */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { ServerResolver, splitHostPort, type DiscoveryDeps } from "../../src/net/discovery.js";
import { isPrivateAddress } from "../../src/net/federation-client.js";

function resolver(wellKnown: Record<string, string | null | Error>, srv: Record<string, { name: string; port: number; priority?: number; weight?: number }[]>, now = { t: 0 }) {
  const calls: string[] = [];
  const deps: DiscoveryDeps = {
    now: () => now.t,
    async fetchWellKnown(host) {
      calls.push(`well-known ${host}`);
      const v = wellKnown[host];
      if (v instanceof Error) throw v;
      return v ?? null;
    },
    async resolveSrv(name) {
      calls.push(`srv ${name}`);
      return (srv[name] ?? []).map((r) => ({ priority: 10, weight: 0, ...r }));
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

describe("private address guard", () => {
  for (const ip of ["127.0.0.1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.1.1", "100.64.0.1", "0.0.0.0", "::1", "fc00::1", "fe80::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1"]) {
    test(`${ip} is private`, () => assert.equal(isPrivateAddress(ip), true));
  }
  for (const ip of ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2001:4860:4860::8888", "::ffff:8.8.8.8", "not-an-ip"]) {
    test(`${ip} is not private`, () => assert.equal(isPrivateAddress(ip), false));
  }
});
