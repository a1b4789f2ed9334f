/**
 * SRV lookups that return the answer's TTL (Node's resolveSrv does not), so discovery can cache SRV
 * answers for as long as DNS says. One UDP query (dns-packet wire format) to each of the system's
 * nameservers (`dns.getServers()`, i.e. /etc/resolv.conf) in turn; a truncated answer is asked again
 * through Node's resolver (c-ares, which retries over TCP) and then cached for the minimum period.
 */
import dgram from "node:dgram";
import dns from "node:dns";
import { isIP } from "node:net";
import { randomInt } from "node:crypto";
import packet from "dns-packet";
import type { SrvRecord } from "./discovery.js";

export interface SrvAnswer {
  records: SrvRecord[];
  ttlSeconds: number;
}

/** "1.2.3.4", "1.2.3.4:53", "::1", "[::1]:5353" (dns.getServers() forms) → host and port. */
export function parseNameserver(s: string): { host: string; port: number } {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (v6) return { host: v6[1]!, port: v6[2] ? Number(v6[2]) : 53 };
  if (isIP(s) === 6) return { host: s, port: 53 };
  const [host, port] = s.split(":");
  return { host: host!, port: port ? Number(port) : 53 };
}

function queryOnce(server: { host: string; port: number }, name: string, timeoutMs: number): Promise<packet.DecodedPacket> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket(isIP(server.host) === 6 ? "udp6" : "udp4");
    const id = randomInt(0, 65536);
    const done = (err: Error | null, res?: packet.DecodedPacket) => {
      clearTimeout(timer);
      socket.close();
      if (err) reject(err);
      else resolve(res!);
    };
    const timer = setTimeout(() => done(new Error(`DNS query for ${name} to ${server.host}:${server.port} timed out`)), timeoutMs);
    socket.on("error", (e) => done(e));
    socket.on("message", (msg, rinfo) => {
      if (rinfo.port !== server.port) return;
      let res: packet.DecodedPacket;
      try {
        res = packet.decode(msg);
      } catch {
        return;
      }
      if (res.id !== id || res.type !== "response") return;
      done(null, res);
    });
    const query = packet.encode({ type: "query", id, flags: packet.RECURSION_DESIRED, questions: [{ type: "SRV", name, class: "IN" }] });
    socket.send(query, server.port, server.host);
  });
}

export async function resolveSrvWithTtl(name: string, opts: { servers?: string[]; timeoutMs?: number } = {}): Promise<SrvAnswer> {
  const servers = (opts.servers ?? dns.getServers()).map(parseNameserver);
  let lastError: Error = new Error("no nameservers configured");
  for (const server of servers) {
    let res: packet.DecodedPacket;
    try {
      res = await queryOnce(server, name, opts.timeoutMs ?? 2000);
    } catch (e) {
      lastError = e as Error;
      continue;
    }
    const rcode = (res as unknown as { rcode?: string }).rcode;
    if (rcode === "NXDOMAIN") return { records: [], ttlSeconds: 0 };
    if (rcode !== "NOERROR") {
      lastError = new Error(`DNS ${rcode} for ${name} from ${server.host}`);
      continue;
    }
    if (res.flag_tc) {
      const records = await dns.promises.resolveSrv(name).catch(() => []);
      return { records, ttlSeconds: 0 };
    }
    const srv = (res.answers ?? []).filter((a): a is packet.SrvAnswer => a.type === "SRV");
    return {
      records: srv.map((a) => ({ name: a.data.target, port: a.data.port, priority: a.data.priority ?? 0, weight: a.data.weight ?? 0 })),
      ttlSeconds: srv.length ? Math.min(...srv.map((a) => a.ttl ?? 0)) : 0,
    };
  }
  throw lastError;
}
