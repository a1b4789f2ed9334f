/**
 * Outbound federation in a named federation (DNS by dnsmasq, certificates from a private
 * CA, verification on, only 127.0.0.0/8 allow-listed): each is refused with a log line naming the
 * reason and counted in gatehouse_federation_outbound_refused_total{reason}.
 *
 *   wrong-name.test        serves a certificate for other.test            → certificate_name
 *   expired.test           serves an expired certificate                  → certificate_expired
 *   wk-name.test           .well-known → internal.test:8448 (A 10.20.30.40) → private_address
 *   wk-literal.test        .well-known → 192.168.77.1:8448                → private_address
 *   srv-private.test       SRV → internal.test:8448                       → private_address
 *   redirect-private.test  .well-known redirects to https://192.168.1.1/… → private_address
 *   redirect-loop.test     .well-known redirects a → b → a                → redirect_loop
 *   redirect-chain.test    .well-known redirects 6 times                  → too_many_redirects
 *   v6-private.test        AAAA fd00::36 and A 10.9.9.9                   → private_address
 *   nat64/sixtofour/compat.test  AAAA of 10.0.0.1 / 192.168.1.1 in NAT64, 6to4, IPv4-compatible form → private_address
 *   testnet.test           A 192.0.2.1 (TEST-NET-1)                       → private_address
 *
 * and reached: dual.test (A 127.0.0.35 + AAAA fd00::35: the private IPv6 is dropped, IPv4 used),
 * v6.test (AAAA ::1 only, allow-listed), and one server name per step of the spec's table, each
 * with the Host header, SNI and certificate name the table requires.
 *
 * Runs inside the network namespace of `npm run test:interop` (no route but lo: the private
 * targets are refused before any connection, and could not be reached anyway).
 */
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { startLoopbackGatehouse, type LoopbackGatehouse } from "../../src/dev/loopback.js";
import { namedUnavailable, TestCa, TestDns, TestHttpsServer, writeTempFiles } from "../../src/dev/named-federation.js";
import { join } from "node:path";
import { rmSync } from "node:fs";

const unavailable = namedUnavailable();

describe("named federation: outbound refusals (log line and metric), and the spec's discovery table", { skip: unavailable ?? false }, () => {
  let ca: TestCa;
  let dns: TestDns;
  const servers: TestHttpsServer[] = [];
  let lb: LoopbackGatehouse;
  let dir: string;
  const logLines: { msg?: string; reason?: string; destination?: string }[] = [];

  before(async () => {
    ca = await TestCa.create();
    dns = new TestDns({
      hosts: {
        "gate.test": "127.0.0.10",
        "wrong-name.test": "127.0.0.20",
        "expired.test": "127.0.0.21",
        "wk-name.test": "127.0.0.22",
        "wk-literal.test": "127.0.0.23",
        "redirect-private.test": "127.0.0.24",
        "redirect-loop.test": "127.0.0.25",
        "internal.test": "10.20.30.40",
        "plain.test": "127.0.0.30",
        "wk-good.test": "127.0.0.31",
        "fed-wk.test": "127.0.0.32",
        "fed-srv.test": "127.0.0.33",
        "redirect-chain.test": "127.0.0.26",
        "v6-private.test": ["fd00::36", "10.9.9.9"],
        "dual.test": ["127.0.0.35", "fd00::35"],
        "v6.test": "::1",
        "nat64.test": "64:ff9b::a00:1",
        "sixtofour.test": "2002:c0a8:101::1",
        "compat.test": "::a00:1",
        "testnet.test": "192.0.2.1",
      },
      srv: [
        { service: "_matrix-fed._tcp.srv-private.test", target: "internal.test", port: 8448 },
        { service: "_matrix-fed._tcp.srv-good.test", target: "fed-srv.test", port: 8453 },
        { service: "_matrix._tcp.old-srv.test", target: "fed-srv.test", port: 8454 },
      ],
    });
    await dns.start();
    const wk = "/.well-known/matrix/server";
    const add = async (address: string, port: number, names: string[], routes: ConstructorParameters<typeof TestHttpsServer>[3], expired = false) => {
      const s = new TestHttpsServer(address, port, await ca.issue(names, { expired }), routes);
      await s.start();
      servers.push(s);
      return s;
    };
    const version = { "/_matrix/federation/v1/version": { json: { server: { name: "test", version: "0" } } } };
    await add("127.0.0.20", 8448, ["other.test"], version);
    await add("127.0.0.21", 8448, ["expired.test"], version, true);
    await add("127.0.0.22", 443, ["wk-name.test"], { [wk]: { json: { "m.server": "internal.test:8448" } } });
    await add("127.0.0.23", 443, ["wk-literal.test"], { [wk]: { json: { "m.server": "192.168.77.1:8448" } } });
    await add("127.0.0.24", 443, ["redirect-private.test"], { [wk]: { redirect: "https://192.168.1.1/.well-known/matrix/server" } });
    await add("127.0.0.25", 443, ["redirect-loop.test"], { [wk]: { redirect: "/loop-b" }, "/loop-b": { redirect: wk, status: 301 } });
    const chain: ConstructorParameters<typeof TestHttpsServer>[3] = { [wk]: { redirect: "/r1" } };
    for (let i = 1; i <= 6; i++) chain[`/r${i}`] = { redirect: `/r${i + 1}` };
    await add("127.0.0.26", 443, ["redirect-chain.test"], chain);
    await add("127.0.0.35", 8448, ["dual.test"], {});
    await add("::1", 8455, ["v6.test"], {});
    // Reached without refusal, each with the certificate name the spec's table requires.
    await add("127.0.0.30", 8448, ["plain.test"], {});
    await add("127.0.0.30", 8450, ["plain.test"], {});
    await add("127.0.0.31", 443, ["wk-good.test"], { [wk]: { json: { "m.server": "fed-wk.test:8451" } } });
    await add("127.0.0.32", 8451, ["fed-wk.test"], {});
    await add("127.0.0.33", 8453, ["srv-good.test"], {});
    await add("127.0.0.33", 8454, ["old-srv.test"], {});
    await add("127.0.0.34", 8452, ["127.0.0.34"], {});

    const tls = await ca.issue(["gate.test"]);
    dir = writeTempFiles("gatehouse-refusals-", { "tls.crt": tls.cert, "tls.key": tls.key, "ca.pem": ca.cert });
    const logs = new PassThrough();
    logs.on("data", (chunk: Buffer) => {
      for (const line of chunk.toString().split("\n")) if (line.trim()) logLines.push(JSON.parse(line));
    });
    lb = await startLoopbackGatehouse({
      label: "refusals",
      logLevel: "warn",
      logDestination: logs,
      env: {
        REDIS_URL: process.env.REDIS_URL,
        GATEHOUSE_METRICS_LISTEN: "127.0.0.1:0",
        GATEHOUSE_SERVER_NAME: "gate.test",
        GATEHOUSE_FEDERATION_LISTEN: "127.0.0.10:8448",
        GATEHOUSE_TLS: "files",
        GATEHOUSE_TLS_CERT: join(dir, "tls.crt"),
        GATEHOUSE_TLS_KEY: join(dir, "tls.key"),
        GATEHOUSE_FEDERATION_INSECURE_SKIP_TLS_VERIFY: "false",
        GATEHOUSE_FEDERATION_ALLOW_PRIVATE_ADDRESSES: "false",
        GATEHOUSE_FEDERATION_IP_RANGE_ALLOWLIST: "127.0.0.0/8,::1/128",
        GATEHOUSE_FEDERATION_CA_FILE: join(dir, "ca.pem"),
        GATEHOUSE_FEDERATION_TIMEOUT_MS: "5000",
      },
    });
  });

  after(async () => {
    await lb?.stop();
    for (const s of servers) await s.stop();
    await dns?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function refusedCount(reason: string): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${lb.gh.metricsPort}/metrics`)).text();
    const m = new RegExp(`^gatehouse_federation_outbound_refused_total\\{reason="${reason}"\\} (\\d+)`, "m").exec(text);
    return m ? Number(m[1]) : 0;
  }

  /** A remote knock via `server`: Gatehouse's make_knock (after its discovery) must fail. */
  async function knockVia(server: string) {
    return lb.admin("POST", "/remote/knock", { user_id: "@alice:gate.test", room_id: `!room:${server}`, via: [server] });
  }

  const cases = [
    { server: "wrong-name.test", reason: "certificate_name", why: "the peer's certificate is for another name (other.test)" },
    { server: "expired.test", reason: "certificate_expired", why: "the peer's certificate expired yesterday" },
    { server: "wk-name.test", reason: "private_address", why: ".well-known delegates to a name that resolves to 10.20.30.40" },
    { server: "wk-literal.test", reason: "private_address", why: ".well-known delegates to the private literal 192.168.77.1:8448" },
    { server: "srv-private.test", reason: "private_address", why: "the SRV record points at a name that resolves to 10.20.30.40" },
    { server: "redirect-private.test", reason: "private_address", why: "the .well-known redirects to a private IPv4 literal (measured as followed on 2026-12-04)" },
    { server: "redirect-loop.test", reason: "redirect_loop", why: "the .well-known redirects in a loop" },
    { server: "redirect-chain.test", reason: "too_many_redirects", why: "the .well-known redirects more than 5 times" },
    { server: "v6-private.test:8448", reason: "private_address", why: "every address (AAAA fd00::36, A 10.9.9.9) is private" },
    { server: "nat64.test:8448", reason: "private_address", why: "AAAA 64:ff9b::a00:1, the NAT64 form of 10.0.0.1 (measured as connected to on 2026-12-04)" },
    { server: "sixtofour.test:8448", reason: "private_address", why: "AAAA 2002:c0a8:101::1, a 6to4 address of 192.168.1.1 (measured as connected to on 2026-12-04)" },
    { server: "compat.test:8448", reason: "private_address", why: "AAAA ::a00:1, the IPv4-compatible form of 10.0.0.1 (measured as connected to on 2026-12-04)" },
    { server: "testnet.test:8448", reason: "private_address", why: "A 192.0.2.1, TEST-NET-1 (measured as connected to on 2026-12-04)" },
  ];
  for (const c of cases) {
    test(`${c.server}: refused, ${c.reason} (${c.why})`, async () => {
      const before = await refusedCount(c.reason);
      const linesBefore = logLines.length;
      const r = await knockVia(c.server);
      assert.notEqual(r.status, 200, JSON.stringify(r.body));
      assert.equal(await refusedCount(c.reason), before + 1, "counted once under its reason");
      const line = logLines.slice(linesBefore).find((l) => l.reason === c.reason);
      assert.ok(line, `a log line with reason ${c.reason}: ${JSON.stringify(logLines.slice(linesBefore))}`);
      assert.equal(line.destination, c.server);
      assert.match(line.msg ?? "", /^outbound federation refused: /);
      console.log(`# ${c.server}: ${r.status} ${JSON.stringify(r.body.error ?? r.body)}\n#   log: ${line.msg}`);
    });
  }

  const table = [
    { server: "plain.test", at: "127.0.0.30:8448", host: "plain.test", sni: "plain.test", why: "spec step 6, no .well-known, no SRV: port 8448; Host and certificate: the server name" },
    { server: "plain.test:8450", at: "127.0.0.30:8450", host: "plain.test:8450", sni: "plain.test", why: "spec step 2, explicit port: no discovery; Host with the port; certificate for the hostname" },
    { server: "wk-good.test", at: "127.0.0.32:8451", host: "fed-wk.test:8451", sni: "fed-wk.test", why: "spec step 3.2, .well-known to host:port: Host and certificate for the delegated host" },
    { server: "srv-good.test", at: "127.0.0.33:8453", host: "srv-good.test", sni: "srv-good.test", why: "spec step 4, SRV _matrix-fed._tcp: connect to the target; Host and certificate for the server name" },
    { server: "old-srv.test", at: "127.0.0.33:8454", host: "old-srv.test", sni: "old-srv.test", why: "spec step 5, deprecated SRV _matrix._tcp: as 4" },
    { server: "127.0.0.34:8452", at: "127.0.0.34:8452", host: "127.0.0.34:8452", sni: false as const, why: "spec step 1, IP literal: no SNI, the certificate is for the IP; Host is the server name" },
    { server: "dual.test:8448", at: "127.0.0.35:8448", host: "dual.test:8448", sni: "dual.test", why: "A and AAAA, the AAAA private (fd00::35): dropped, the IPv4 used" },
    { server: "v6.test:8455", at: "::1:8455", host: "v6.test:8455", sni: "v6.test", why: "AAAA only (::1, allow-listed): reached over IPv6" },
  ];
  for (const c of table) {
    test(`reached: ${c.why}`, async () => {
      const address = c.at.slice(0, c.at.lastIndexOf(":"));
      const port = Number(c.at.slice(c.at.lastIndexOf(":") + 1));
      const target = servers.find((s) => s.address === address && s.port === port)!;
      const refusedBefore = await refusedCount("private_address");
      const before = target.requests.length;
      const r = await knockVia(c.server);
      // The peer answers 404 (it is no homeserver): reached, and no refusal.
      assert.notEqual(r.status, 200);
      assert.doesNotMatch(JSON.stringify(r.body), /refus|certificate/i, JSON.stringify(r.body));
      const req = target.requests.slice(before).find((x) => x.path.startsWith("/_matrix/federation/v1/make_knock/"));
      assert.ok(req, `make_knock reached ${c.at}: ${JSON.stringify(r.body)}`);
      assert.equal(req.host, c.host, "Host header");
      assert.equal(req.sni, c.sni, "TLS server name (SNI)");
      assert.equal(await refusedCount("private_address"), refusedBefore, "no refusal counted while an address was left");
    });
  }

  test("the .well-known redirect target was never connected to: the redirecting server saw one request, and nothing else was asked", () => {
    const redirecting = servers.find((s) => s.address === "127.0.0.24")!;
    assert.equal(redirecting.hits["/.well-known/matrix/server"], 1);
    const loop = servers.find((s) => s.address === "127.0.0.25")!;
    assert.equal(loop.hits["/.well-known/matrix/server"], 1, "the loop is noticed when it comes back, not followed again");
    assert.equal(loop.hits["/loop-b"], 1);
  });

  test("the discovery caches: a second request to the SRV-delegated server asks DNS nothing new", async () => {
    const q = () => dns.queries().filter((x) => x.includes("srv-private.test")).length;
    const before = q();
    await knockVia("srv-private.test");
    assert.equal(q(), before, `no new DNS query for srv-private.test: ${dns.queries().join(", ")}`);
  });
});
