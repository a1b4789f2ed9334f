/**
 * The private-address guard of outbound federation: which resolved addresses Gatehouse refuses to
 * connect to, so that a remote server name (or its .well-known, SRV record or an HTTP redirect)
 * cannot point Gatehouse at the operator's own network. Pure (no I/O): address parsing and range
 * checks only.
 *
 * The blocked ranges are Synapse's default `ip_range_blacklist` plus 0.0.0.0/8, 240.0.0.0/4 and
 * ::/128. An IPv6 address that carries an IPv4 address (IPv4-mapped ::ffff:a.b.c.d,
 * IPv4-compatible ::a.b.c.d, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16) is also
 * checked by that IPv4 address, as Synapse does for its IPv4 ranges. An allow-list (Synapse's
 * `ip_range_whitelist`) overrides the blocked ranges.
 */
import { BlockList, isIP } from "node:net";

/** Synapse's DEFAULT_IP_RANGE_BLOCKLIST (synapse/config/server.py), plus "this network" and 240/4. */
export const DEFAULT_BLOCKED_RANGES: readonly string[] = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.0.0.0/24",
  "192.0.2.0/24",
  "192.88.99.0/24",
  "192.168.0.0/16",
  "198.18.0.0/15",
  "198.51.100.0/24",
  "203.0.113.0/24",
  "224.0.0.0/4",
  "240.0.0.0/4",
  "::/128",
  "::1/128",
  "fe80::/10",
  "fc00::/7",
  "2001:db8::/32",
  "ff00::/8",
  "fec0::/10",
];

/** Parses "a.b.c.d/n" or "v6::/n" (a bare address is a /32 or /128); null when malformed. */
export function parseCidr(cidr: string): { address: string; prefix: number; family: "ipv4" | "ipv6" } | null {
  const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(cidr.trim());
  if (!m) return null;
  const family = isIP(m[1]!);
  if (family === 0) return null;
  const max = family === 4 ? 32 : 128;
  const prefix = m[2] === undefined ? max : Number(m[2]);
  if (prefix > max) return null;
  return { address: m[1]!, prefix, family: family === 4 ? "ipv4" : "ipv6" };
}

/** The eight 16-bit groups of an IPv6 address (with or without a trailing dotted IPv4 part). */
export function ipv6Groups(ip: string): number[] | null {
  if (isIP(ip) !== 6) return null;
  let s = ip.replace(/%.*$/, "").toLowerCase();
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const o = v4[1]!.split(".").map(Number);
    s = s.slice(0, -v4[1]!.length) + `${((o[0]! << 8) | o[1]!).toString(16)}:${((o[2]! << 8) | o[3]!).toString(16)}`;
  }
  const [head, tail] = s.split("::") as [string, string | undefined];
  const part = (x: string | undefined) => (x ? x.split(":").filter((g) => g !== "").map((g) => parseInt(g, 16)) : []);
  const h = part(head);
  const t = part(tail);
  const fill = tail === undefined ? 0 : 8 - h.length - t.length;
  const groups = [...h, ...new Array<number>(fill).fill(0), ...t];
  return groups.length === 8 ? groups : null;
}

function v4From(hi: number, lo: number): string {
  return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
}

/**
 * The IPv4 address an IPv6 address carries, and the form that carries it; null when none.
 * IPv4-compatible (::a.b.c.d, deprecated) excludes :: and ::1, which are IPv6 addresses of their own.
 */
export function embeddedIPv4(ip: string): { form: "ipv4-mapped" | "ipv4-compatible" | "nat64" | "6to4"; ipv4: string } | null {
  const g = ipv6Groups(ip);
  if (!g) return null;
  const zeros = (from: number, to: number) => g.slice(from, to).every((x) => x === 0);
  if (zeros(0, 5) && g[5] === 0xffff) return { form: "ipv4-mapped", ipv4: v4From(g[6]!, g[7]!) };
  if (zeros(0, 6) && (g[6] !== 0 || g[7]! > 1)) return { form: "ipv4-compatible", ipv4: v4From(g[6]!, g[7]!) };
  // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052) and the local-use prefix 64:ff9b:1::/48 (RFC 8215, /96 form).
  if (g[0] === 0x64 && g[1] === 0xff9b && (zeros(2, 6) || (g[2] === 1 && zeros(3, 6)))) return { form: "nat64", ipv4: v4From(g[6]!, g[7]!) };
  if (g[0] === 0x2002) return { form: "6to4", ipv4: v4From(g[1]!, g[2]!) };
  return null;
}

function blockListOf(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const c of cidrs) {
    const p = parseCidr(c);
    if (!p) throw new Error(`not a CIDR range: ${JSON.stringify(c)}`);
    list.addSubnet(p.address, p.prefix, p.family);
  }
  return list;
}

function inList(list: BlockList, ip: string): boolean {
  const family = isIP(ip);
  if (family === 4) return list.check(ip, "ipv4");
  if (family !== 6) return false;
  if (list.check(ip.replace(/%.*$/, ""), "ipv6")) return true;
  const embedded = embeddedIPv4(ip);
  return embedded !== null && list.check(embedded.ipv4, "ipv4");
}

export type AddressVerdict = { allowed: true } | { allowed: false; why: string };

/** Decides, for each resolved address, whether outbound federation may connect to it. */
export class AddressGuard {
  private readonly blocked: BlockList;
  private readonly allowed: BlockList;

  constructor(
    opts: {
      /** Everything allowed (GATEHOUSE_FEDERATION_ALLOW_PRIVATE_ADDRESSES=true). */
      allowAll?: boolean;
      /** CIDRs allowed although blocked (GATEHOUSE_FEDERATION_IP_RANGE_ALLOWLIST). */
      allowRanges?: readonly string[];
      blockedRanges?: readonly string[];
    } = {},
  ) {
    this.allowAll = opts.allowAll ?? false;
    this.blocked = blockListOf(opts.blockedRanges ?? DEFAULT_BLOCKED_RANGES);
    this.allowed = blockListOf(opts.allowRanges ?? []);
  }

  readonly allowAll: boolean;

  /** Whether `ip` (an IP literal) may be connected to; a non-IP is refused. */
  check(ip: string): AddressVerdict {
    if (isIP(ip) === 0) return { allowed: false, why: `${JSON.stringify(ip)} is not an IP address` };
    if (this.allowAll || inList(this.allowed, ip)) return { allowed: true };
    if (!inList(this.blocked, ip)) return { allowed: true };
    const embedded = isIP(ip) === 6 ? embeddedIPv4(ip) : null;
    const via = embedded && this.blocked.check(embedded.ipv4, "ipv4") ? ` (${embedded.form} form of ${embedded.ipv4})` : "";
    return { allowed: false, why: `${ip}${via} is in a private or reserved range` };
  }

  isBlocked(ip: string): boolean {
    return !this.check(ip).allowed;
  }
}
