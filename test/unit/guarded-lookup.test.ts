/**
 * The outbound agent's lookup (guardedLookup): every answer shape Node asks for (all: true for
 * Happy Eyeballs / autoSelectFamily, all: false otherwise), IPv4 and IPv6, private addresses
 * dropped, refusal when none is left; with an injected resolver, then through a real socket.
 */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import net, { type LookupFunction } from "node:net";
import { guardedLookup, OutboundRefusedError, refusalOf, type AddressResolver } from "../../src/net/federation-client.js";
import { AddressGuard } from "../../src/net/ip-ranges.js";

type Answer = { address: string; family: number }[];

function fakeResolver(table: Record<string, Answer | Error>): AddressResolver & { calls: { host: string; family: number }[] } {
  const calls: { host: string; family: number }[] = [];
  const fn = (async (host: string, options: { family: number }) => {
    calls.push({ host, family: options.family });
    const a = table[host];
    if (a === undefined) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: "ENOTFOUND" });
    if (a instanceof Error) throw a;
    return a.filter((x) => options.family === 0 || x.family === options.family);
  }) as AddressResolver & { calls: typeof calls };
  fn.calls = calls;
  return fn;
}

function call(lookup: LookupFunction, host: string, options: { all?: boolean; family?: number }): Promise<{ err: Error | null; address?: unknown; family?: number }> {
  return new Promise((resolve) =>
    lookup(host, options as never, ((err: Error | null, address?: unknown, family?: number) => resolve({ err, address, family })) as never),
  );
}

const v4 = (address: string) => ({ address, family: 4 });
const v6 = (address: string) => ({ address, family: 6 });
const table = {
  "public.test": [v4("93.184.216.34")],
  "dual.test": [v6("2606:2800:220:1::1"), v4("93.184.216.34")],
  "v6only.test": [v6("2606:2800:220:1::1")],
  "mixed.test": [v4("10.0.0.5"), v6("fd00::5"), v4("93.184.216.34"), v6("::ffff:127.0.0.1"), v6("2606:2800:220:1::1")],
  "private.test": [v4("127.0.0.1"), v6("::1"), v4("192.168.1.1")],
  "embedded.test": [v6("64:ff9b::a00:1"), v6("2002:7f00:1::"), v6("::127.0.0.1"), v6("::ffff:169.254.169.254")],
  "empty.test": [],
};

describe("guardedLookup answer shapes", () => {
  const guard = new AddressGuard();
  const cases: { host: string; options: { all?: boolean; family?: number }; want: { all?: Answer; one?: { address: string; family: number }; refused?: true }; why: string }[] = [
    { host: "public.test", options: { all: true }, want: { all: [v4("93.184.216.34")] }, why: "all: true answers an array (Node 20's autoSelectFamily asks for it)" },
    { host: "public.test", options: { all: false }, want: { one: v4("93.184.216.34") }, why: "all: false answers one address and its family" },
    { host: "public.test", options: {}, want: { one: v4("93.184.216.34") }, why: "no `all` is all: false" },
    { host: "dual.test", options: { all: true }, want: { all: [v6("2606:2800:220:1::1"), v4("93.184.216.34")] }, why: "IPv6 and IPv4, in the resolver's order, for Happy Eyeballs" },
    { host: "dual.test", options: { all: false }, want: { one: v6("2606:2800:220:1::1") }, why: "all: false takes the first, IPv6 here" },
    { host: "dual.test", options: { all: true, family: 4 }, want: { all: [v4("93.184.216.34")] }, why: "family 4 is passed on to the resolver" },
    { host: "v6only.test", options: { all: false, family: 6 }, want: { one: v6("2606:2800:220:1::1") }, why: "IPv6 only" },
    { host: "mixed.test", options: { all: true }, want: { all: [v4("93.184.216.34"), v6("2606:2800:220:1::1")] }, why: "mixed answer: the private ones (10/8, fc00::/7, IPv4-mapped loopback) are dropped" },
    { host: "mixed.test", options: { all: false }, want: { one: v4("93.184.216.34") }, why: "mixed answer, one address: the first public one, not the first one" },
    { host: "private.test", options: { all: true }, want: { refused: true }, why: "every address private: refused" },
    { host: "private.test", options: { all: false }, want: { refused: true }, why: "every address private, all: false: refused" },
    { host: "embedded.test", options: { all: true }, want: { refused: true }, why: "NAT64, 6to4, IPv4-compatible and IPv4-mapped forms of private IPv4 addresses: refused" },
    { host: "empty.test", options: { all: true }, want: { refused: true }, why: "no address at all: refused, not an empty array" },
  ];
  for (const c of cases) {
    test(`${c.host} ${JSON.stringify(c.options)}: ${c.why}`, async () => {
      const resolver = fakeResolver(table);
      const r = await call(guardedLookup(guard, resolver), c.host, c.options);
      assert.equal(resolver.calls.length, 1);
      if (c.want.refused) {
        assert.ok(r.err instanceof OutboundRefusedError, `refused, got ${r.err}`);
        assert.equal(refusalOf(r.err)?.reason, "private_address");
        assert.match(r.err!.message, new RegExp(`refusing to connect to ${c.host.replace(".", "\\.")}`));
        return;
      }
      assert.equal(r.err, null);
      if (c.want.all) assert.deepEqual(r.address, c.want.all);
      else {
        assert.equal(r.address, c.want.one!.address);
        assert.equal(r.family, c.want.one!.family);
      }
    });
  }
  test("a resolver error is passed on unchanged (ENOTFOUND), not counted as a refusal", async () => {
    const r = await call(guardedLookup(guard, fakeResolver(table)), "nxdomain.test", { all: true });
    assert.equal((r.err as NodeJS.ErrnoException).code, "ENOTFOUND");
    assert.equal(refusalOf(r.err), null);
  });
  test("the allow-list lets the listed private ranges through", async () => {
    const r = await call(guardedLookup(new AddressGuard({ allowRanges: ["192.168.0.0/16"] }), fakeResolver(table)), "private.test", { all: true });
    assert.deepEqual(r.address, [v4("192.168.1.1")]);
  });
});

describe("guardedLookup on a real socket", () => {
  test("Happy Eyeballs (autoSelectFamily) skips a dead address and connects to the next allowed one", async () => {
    const server = net.createServer((s) => s.end("hello"));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as net.AddressInfo).port;
    // 127.0.0.2 allowed, nothing listening there; 10.0.0.1 private and dropped (never connected to); then 127.0.0.1.
    const lookup = guardedLookup(
      new AddressGuard({ allowRanges: ["127.0.0.0/8"] }),
      fakeResolver({ "peer.test": [v4("10.0.0.1"), v4("127.0.0.2"), v4("127.0.0.1")] }),
    );
    try {
      const text = await new Promise<string>((resolve, reject) => {
        const s = net.connect({ host: "peer.test", port, lookup, autoSelectFamily: true, autoSelectFamilyAttemptTimeout: 250 });
        let got = "";
        s.on("data", (d) => (got += d));
        s.on("end", () => resolve(got));
        s.on("error", reject);
      });
      assert.equal(text, "hello");
    } finally {
      server.close();
    }
  });
  test("a connection to a name with only private addresses fails with the refusal, before any connect", async () => {
    const lookup = guardedLookup(new AddressGuard(), fakeResolver(table));
    for (const autoSelectFamily of [true, false]) {
      const err = await new Promise<Error>((resolve) => {
        const s = net.connect({ host: "private.test", port: 1, lookup, autoSelectFamily });
        s.on("error", resolve);
        s.on("connect", () => resolve(new Error("connected")));
      });
      assert.equal(refusalOf(err)?.reason, "private_address", `autoSelectFamily=${autoSelectFamily}: ${err.message}`);
    }
  });
});
