/**
 * The private-address guard of outbound federation (src/net/ip-ranges.ts): Synapse's default
 * ip_range_blacklist, the IPv4 carried inside IPv6 forms, and the allow-list.
 */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { AddressGuard, embeddedIPv4, ipv6Groups, parseCidr } from "../../src/net/ip-ranges.js";

const guard = new AddressGuard();

describe("private address guard: blocked", () => {
  for (const [ip, why] of [
    ["0.0.0.0", "0/8: 'this network' (connects to the local host on Linux)"],
    ["10.1.2.3", "10/8 private"],
    ["100.64.0.1", "100.64/10 carrier-grade NAT"],
    ["127.0.0.1", "127/8 loopback"],
    ["127.255.255.254", "127/8 loopback, not only .1"],
    ["169.254.169.254", "169.254/16 link-local (cloud metadata)"],
    ["172.16.0.1", "172.16/12 private, low end"],
    ["172.31.255.255", "172.16/12 private, high end"],
    ["192.0.0.8", "192.0.0/24 IETF protocol assignments"],
    ["192.0.2.1", "192.0.2/24 TEST-NET-1 (measured as connected to on 2026-12-04)"],
    ["192.88.99.1", "192.88.99/24 former 6to4 relay anycast"],
    ["192.168.1.1", "192.168/16 private"],
    ["198.18.0.1", "198.18/15 benchmarking"],
    ["198.19.255.255", "198.18/15 benchmarking, high end"],
    ["198.51.100.7", "198.51.100/24 TEST-NET-2"],
    ["203.0.113.9", "203.0.113/24 TEST-NET-3"],
    ["224.0.0.1", "224/4 multicast"],
    ["239.255.255.250", "224/4 multicast, high end"],
    ["240.0.0.1", "240/4 reserved"],
    ["255.255.255.255", "240/4 broadcast"],
    ["::", "unspecified"],
    ["::1", "IPv6 loopback"],
    ["fe80::1", "fe80::/10 link-local"],
    ["fe80::1%lo", "link-local with a zone index"],
    ["fc00::1", "fc00::/7 unique local"],
    ["fd12:3456::1", "fc00::/7 unique local (fd)"],
    ["2001:db8::1", "2001:db8::/32 documentation"],
    ["ff02::1", "ff00::/8 multicast"],
    ["fec0::1", "fec0::/10 site-local"],
    ["::ffff:127.0.0.1", "IPv4-mapped loopback"],
    ["::ffff:7f00:1", "IPv4-mapped loopback in hex"],
    ["::ffff:10.0.0.1", "IPv4-mapped private"],
    ["::127.0.0.1", "IPv4-compatible loopback (measured as connected to on 2026-12-04)"],
    ["::a00:1", "IPv4-compatible 10.0.0.1 in hex"],
    ["64:ff9b::7f00:1", "NAT64 of 127.0.0.1 (measured as connected to on 2026-12-04)"],
    ["64:ff9b::192.168.0.1", "NAT64 of 192.168.0.1, dotted"],
    ["64:ff9b:1::a00:1", "local-use NAT64 prefix (RFC 8215) of 10.0.0.1"],
    ["2002:7f00:1::", "6to4 of 127.0.0.1 (measured as connected to on 2026-12-04)"],
    ["2002:c0a8:101::1", "6to4 of 192.168.1.1"],
    ["2002:a9fe:a9fe:1::5", "6to4 of 169.254.169.254 with a subnet and host part"],
  ] as const) {
    test(`${ip} is refused: ${why}`, () => {
      const v = guard.check(ip);
      assert.equal(v.allowed, false);
      assert.ok(!v.allowed && v.why.includes(ip), "the reason names the address");
    });
  }
});

describe("private address guard: allowed", () => {
  for (const [ip, why] of [
    ["8.8.8.8", "public IPv4"],
    ["1.1.1.1", "public IPv4"],
    ["172.32.0.1", "just above 172.16/12"],
    ["100.128.0.1", "just above 100.64/10"],
    ["192.0.3.1", "just above 192.0.2/24"],
    ["198.20.0.1", "just above 198.18/15"],
    ["223.255.255.255", "just below multicast"],
    ["2001:4860:4860::8888", "public IPv6"],
    ["2606:4700::1111", "public IPv6"],
    ["::ffff:8.8.8.8", "IPv4-mapped public"],
    ["::8.8.8.8", "IPv4-compatible public"],
    ["64:ff9b::808:808", "NAT64 of a public address"],
    ["2002:808:808::1", "6to4 of a public address"],
    ["64:ff9b:2::a00:1", "not a NAT64 prefix (64:ff9b:2::)"],
  ] as const) {
    test(`${ip} is allowed: ${why}`, () => assert.deepEqual(guard.check(ip), { allowed: true }));
  }
  test("a host name is never 'allowed' (only resolved addresses are checked)", () => assert.equal(guard.check("example.org").allowed, false));
});

describe("private address guard: allow-list and allow-all", () => {
  const lo = new AddressGuard({ allowRanges: ["127.0.0.0/8", "fd00::/8"] });
  for (const [ip, allowed, why] of [
    ["127.0.0.53", true, "in the allow-list"],
    ["::ffff:127.0.0.1", true, "IPv4-mapped form of an allowed address"],
    ["64:ff9b::7f00:1", true, "NAT64 form of an allowed address"],
    ["fd00::1", true, "IPv6 allow-list entry"],
    ["10.0.0.1", false, "blocked and not in the allow-list"],
    ["::1", false, "the allow-list names 127/8, not ::1"],
    ["8.8.8.8", true, "public addresses stay allowed"],
  ] as const) {
    test(`allow-list 127/8, fd00::/8: ${ip} ${allowed ? "allowed" : "refused"} (${why})`, () => assert.equal(lo.check(ip).allowed, allowed));
  }
  test("allowAll (GATEHOUSE_FEDERATION_ALLOW_PRIVATE_ADDRESSES) allows every address", () => {
    const all = new AddressGuard({ allowAll: true });
    for (const ip of ["127.0.0.1", "10.0.0.1", "::1", "2002:7f00:1::"]) assert.equal(all.check(ip).allowed, true, ip);
  });
  test("a malformed range is an error", () => assert.throws(() => new AddressGuard({ allowRanges: ["10.0.0.0/33"] })));
});

describe("address parsing", () => {
  for (const [ip, want, why] of [
    ["::", [0, 0, 0, 0, 0, 0, 0, 0], "all zeros"],
    ["::1", [0, 0, 0, 0, 0, 0, 0, 1], "loopback"],
    ["1::", [1, 0, 0, 0, 0, 0, 0, 0], "trailing ::"],
    ["1:2:3:4:5:6:7:8", [1, 2, 3, 4, 5, 6, 7, 8], "no ::"],
    ["::ffff:1.2.3.4", [0, 0, 0, 0, 0, 0xffff, 0x102, 0x304], "dotted tail"],
    ["fe80::1%eth0", [0xfe80, 0, 0, 0, 0, 0, 0, 1], "zone index dropped"],
  ] as const) {
    test(`ipv6Groups(${ip}): ${why}`, () => assert.deepEqual(ipv6Groups(ip), want));
  }
  for (const [ip, want, why] of [
    ["::ffff:1.2.3.4", { form: "ipv4-mapped", ipv4: "1.2.3.4" }, "mapped"],
    ["::1.2.3.4", { form: "ipv4-compatible", ipv4: "1.2.3.4" }, "compatible"],
    ["64:ff9b::102:304", { form: "nat64", ipv4: "1.2.3.4" }, "NAT64"],
    ["2002:102:304::", { form: "6to4", ipv4: "1.2.3.4" }, "6to4"],
    ["::1", null, "::1 is IPv6 loopback, not 0.0.0.1"],
    ["::", null, "unspecified, not 0.0.0.0"],
    ["2001:4860::1", null, "plain IPv6"],
    ["1.2.3.4", null, "not IPv6"],
  ] as const) {
    test(`embeddedIPv4(${ip}): ${why}`, () => assert.deepEqual(embeddedIPv4(ip), want));
  }
  for (const [cidr, ok, why] of [
    ["10.0.0.0/8", true, "IPv4 range"],
    ["fd00::/8", true, "IPv6 range"],
    ["127.0.0.1", true, "a bare address is a /32"],
    ["10.0.0.0/33", false, "prefix too long"],
    ["example.org/8", false, "not an address"],
    ["", false, "empty"],
  ] as const) {
    test(`parseCidr(${JSON.stringify(cidr)}): ${why}`, () => assert.equal(parseCidr(cidr) !== null, ok));
  }
});

describe("settings", () => {
  test("GATEHOUSE_FEDERATION_IP_RANGE_ALLOWLIST: comma-separated CIDRs; a bad entry names the variable", async () => {
    const { loadConfig, ConfigError } = await import("../../src/config.js");
    const base = { GATEHOUSE_DATA_DIR: "/tmp/gatehouse-config-test" };
    assert.deepEqual(loadConfig({ ...base }).outbound.ipRangeAllowlist, [], "default: empty");
    assert.deepEqual(loadConfig({ ...base, GATEHOUSE_FEDERATION_IP_RANGE_ALLOWLIST: "127.0.0.0/8, ::1" }).outbound.ipRangeAllowlist, ["127.0.0.0/8", "::1"]);
    assert.throws(() => loadConfig({ ...base, GATEHOUSE_FEDERATION_IP_RANGE_ALLOWLIST: "127.0.0.0/8,localhost" }), (e: unknown) => e instanceof ConfigError && /GATEHOUSE_FEDERATION_IP_RANGE_ALLOWLIST/.test(String((e as Error).message ?? e)));
    assert.equal(loadConfig({ ...base }).outbound.caFile, null, "no CA file by default");
    assert.equal(loadConfig({ ...base, GATEHOUSE_FEDERATION_CA_FILE: "ca.pem" }).outbound.caFile, "/tmp/gatehouse-config-test/ca.pem", "relative to the data folder");
  });
});
