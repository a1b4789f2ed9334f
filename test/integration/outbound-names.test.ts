/**
 * The bug of issue 11, as a new user met it: a peer whose server name is a host name
 * (`localhost:PORT`, resolved through the system resolver, /etc/hosts) was unreachable ("Invalid IP
 * address: undefined": Node's Happy Eyeballs asks the lookup for every address). Here the outbound
 * client reaches it with certificate verification on (a private CA through extraCaPem, the
 * GATEHOUSE_FEDERATION_CA_FILE path), loopback allowed by the allow-list; and refuses it, counted,
 * without the allow-list, or when the certificate is not trusted.
 */
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { FederationClient, type RefusalReason } from "../../src/net/federation-client.js";
import { makeSigningKey } from "../../src/protocol/signing-key.js";
import { TestCa, TestHttpsServer } from "../../src/dev/named-federation.js";

describe("outbound federation to a host name through the system resolver", () => {
  let ca: TestCa;
  let server: TestHttpsServer;
  let name: string;
  const key = makeSigningKey("ed25519:t", randomBytes(32));
  const clients: FederationClient[] = [];
  const refusals: { reason: RefusalReason; destination: string }[] = [];
  const client = (opts: Partial<ConstructorParameters<typeof FederationClient>[0]>) => {
    const c = new FederationClient({
      serverName: "gatehouse.test",
      signingKey: key,
      insecureSkipTlsVerify: false,
      allowPrivateAddresses: false,
      timeoutMs: 5000,
      onRefused: (reason, destination) => refusals.push({ reason, destination }),
      ...opts,
    });
    clients.push(c);
    return c;
  };

  before(async () => {
    ca = await TestCa.create();
    server = new TestHttpsServer("127.0.0.1", 0, await ca.issue(["localhost"]), {
      "/_matrix/federation/v1/version": { json: { server: { name: "peer", version: "1" } } },
    });
    await server.start();
    name = `localhost:${server.boundPort}`;
  });
  after(async () => {
    for (const c of clients) c.close();
    await server.stop();
  });

  test("reached: verified against the private CA, loopback allow-listed (IPv4 and IPv6 loopback)", async () => {
    const res = await client({ extraCaPem: ca.cert, ipRangeAllowlist: ["127.0.0.0/8", "::1/128"] }).request("GET", name, "/_matrix/federation/v1/version", undefined, { signed: false });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { server: { name: "peer", version: "1" } });
    const last = server.requests.at(-1)!;
    assert.equal(last.host, name, "Host is the server name with its port");
    assert.equal(last.sni, "localhost", "SNI is the host name");
  });

  test("refused: the default guard (loopback is private), counted once with its reason", async () => {
    const before = refusals.length;
    await assert.rejects(
      client({ extraCaPem: ca.cert }).request("GET", name, "/_matrix/federation/v1/version", undefined, { signed: false }),
      (e: Error & { refusal?: string }) => e.refusal === "private_address" && /refusing to connect to localhost/.test(e.message),
    );
    assert.deepEqual(refusals.slice(before), [{ reason: "private_address", destination: name }]);
  });

  test("refused: the CA is not trusted (verification on, no CA file)", async () => {
    const before = refusals.length;
    await assert.rejects(
      client({ ipRangeAllowlist: ["127.0.0.0/8", "::1/128"] }).request("GET", name, "/_matrix/federation/v1/version", undefined, { signed: false }),
      (e: Error & { refusal?: string }) => e.refusal === "certificate_untrusted",
    );
    assert.deepEqual(refusals.slice(before), [{ reason: "certificate_untrusted", destination: name }]);
  });

  test("GATEHOUSE_FEDERATION_ALLOW_PRIVATE_ADDRESSES keeps working: every address allowed", async () => {
    const res = await client({ extraCaPem: ca.cert, allowPrivateAddresses: true }).request("GET", name, "/_matrix/federation/v1/version", undefined, { signed: false });
    assert.equal(res.status, 200);
  });
});
