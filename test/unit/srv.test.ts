/**
 * SRV lookups with their TTL (src/net/srv.ts), against a small DNS responder on an ephemeral UDP
 * port (dns-packet): records and the smallest TTL, NXDOMAIN, a failing server followed by a good one.
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import packet from "dns-packet";
import { parseNameserver, resolveSrvWithTtl } from "../../src/net/srv.js";

describe("parseNameserver (dns.getServers() forms)", () => {
  for (const [s, want, why] of [
    ["127.0.0.53", { host: "127.0.0.53", port: 53 }, "IPv4, default port"],
    ["127.0.0.1:5353", { host: "127.0.0.1", port: 5353 }, "IPv4 with port"],
    ["::1", { host: "::1", port: 53 }, "IPv6, default port"],
    ["[::1]:5353", { host: "::1", port: 5353 }, "IPv6 with port"],
  ] as const) {
    test(`${s}: ${why}`, () => assert.deepEqual(parseNameserver(s), want));
  }
});

describe("resolveSrvWithTtl", () => {
  let good: dgram.Socket;
  let bad: dgram.Socket;
  const asked: string[] = [];
  const port = (s: dgram.Socket) => s.address().port;

  before(async () => {
    good = dgram.createSocket("udp4");
    good.on("message", (msg, rinfo) => {
      const q = packet.decode(msg);
      const name = q.questions![0]!.name;
      asked.push(name);
      const answers: packet.Answer[] =
        name === "_matrix-fed._tcp.srv.test"
          ? [
              { type: "SRV", name, ttl: 300, data: { target: "a.srv.test", port: 8448, priority: 10, weight: 5 } },
              { type: "SRV", name, ttl: 120, data: { target: "b.srv.test", port: 8449, priority: 20, weight: 0 } },
            ]
          : [];
      const rcode = name === "_matrix-fed._tcp.srv.test" ? 0 : 3; // NXDOMAIN otherwise
      const res = packet.encode({ type: "response", id: q.id, flags: packet.RECURSION_AVAILABLE | rcode, questions: q.questions, answers });
      good.send(res, rinfo.port, rinfo.address);
    });
    bad = dgram.createSocket("udp4");
    bad.on("message", (msg, rinfo) => {
      const q = packet.decode(msg);
      bad.send(packet.encode({ type: "response", id: q.id, flags: 2 /* SERVFAIL */, questions: q.questions }), rinfo.port, rinfo.address);
    });
    await new Promise<void>((r) => good.bind(0, "127.0.0.1", r));
    await new Promise<void>((r) => bad.bind(0, "127.0.0.1", r));
  });
  after(() => {
    good.close();
    bad.close();
  });

  test("records with the smallest TTL of the answer", async () => {
    const r = await resolveSrvWithTtl("_matrix-fed._tcp.srv.test", { servers: [`127.0.0.1:${port(good)}`] });
    assert.deepEqual(r, {
      records: [
        { name: "a.srv.test", port: 8448, priority: 10, weight: 5 },
        { name: "b.srv.test", port: 8449, priority: 20, weight: 0 },
      ],
      ttlSeconds: 120,
    });
  });
  test("NXDOMAIN: no records (not an error)", async () => {
    assert.deepEqual(await resolveSrvWithTtl("_matrix-fed._tcp.none.test", { servers: [`127.0.0.1:${port(good)}`] }), { records: [], ttlSeconds: 0 });
  });
  test("a SERVFAIL from the first nameserver: the next one is asked", async () => {
    const r = await resolveSrvWithTtl("_matrix-fed._tcp.srv.test", { servers: [`127.0.0.1:${port(bad)}`, `127.0.0.1:${port(good)}`] });
    assert.equal(r.records.length, 2);
  });
  test("every nameserver failing or silent: rejected with the last error", async () => {
    const silent = dgram.createSocket("udp4");
    await new Promise<void>((r) => silent.bind(0, "127.0.0.1", r));
    try {
      await assert.rejects(resolveSrvWithTtl("_matrix-fed._tcp.srv.test", { servers: [`127.0.0.1:${port(bad)}`, `127.0.0.1:${port(silent)}`], timeoutMs: 200 }), /timed out/);
      await assert.rejects(resolveSrvWithTtl("_matrix-fed._tcp.srv.test", { servers: [`127.0.0.1:${port(bad)}`], timeoutMs: 200 }), /SERVFAIL/);
    } finally {
      silent.close();
    }
  });
});
