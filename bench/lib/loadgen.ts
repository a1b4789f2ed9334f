/**
 * A small closed-loop HTTP/1.1 load generator over raw keep-alive TLS (or TCP) sockets: each
 * connection has one request in flight; requests are pre-built byte buffers, so the generator
 * costs little CPU per request (it runs on its own core, see procs.ts). Certificates are not
 * checked (127.0.0.1 only, self-signed servers).
 */
import tls from "node:tls";
import net from "node:net";

export interface HttpResponse {
  status: number;
  body: Buffer;
}

export function buildRequest(method: string, path: string, host: string, headers: Record<string, string> = {}, body?: string | Buffer): Buffer {
  const payload = body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(body);
  let head = `${method} ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: keep-alive\r\n`;
  for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
  if (payload) head += `Content-Type: application/json\r\nContent-Length: ${payload.length}\r\n`;
  head += "\r\n";
  return payload ? Buffer.concat([Buffer.from(head), payload]) : Buffer.from(head);
}

export class Conn {
  private socket: net.Socket | null = null;
  // Received bytes not consumed yet: `buf` is the first `used` bytes of `store`, which grows by
  // doubling. Appending by Buffer.concat copied everything received so far on every TLS record
  // (~16 kB): a 58 MB send_join answer cost the client ~100 GB of copying, and the bench timed
  // that (82 s at 100,000 members) instead of the server.
  private store: Buffer = Buffer.alloc(0);
  private used = 0;
  private get buf(): Buffer {
    return this.store.subarray(0, this.used);
  }
  private pending: { resolve: (r: HttpResponse) => void; reject: (e: Error) => void } | null = null;
  private connecting: Promise<void> | null = null;

  constructor(
    readonly host: string,
    readonly port: number,
    readonly useTls = true,
  ) {}

  private connect(): Promise<void> {
    this.connecting ??= new Promise<void>((resolve, reject) => {
      const s = this.useTls
        ? tls.connect({ host: this.host, port: this.port, rejectUnauthorized: false, servername: undefined })
        : net.connect({ host: this.host, port: this.port });
      s.setNoDelay(true);
      const onError = (e: Error) => {
        this.connecting = null;
        reject(e);
      };
      s.once("error", onError);
      s.once(this.useTls ? "secureConnect" : "connect", () => {
        s.off("error", onError);
        this.socket = s;
        this.used = 0;
        s.on("data", (d: Buffer) => this.onData(d));
        const dead = (e?: Error) => {
          if (this.socket === s) this.socket = null;
          this.connecting = null;
          const p = this.pending;
          this.pending = null;
          p?.reject(e ?? new Error("connection closed"));
        };
        s.on("error", dead);
        s.on("close", () => dead());
        resolve();
      });
    });
    return this.connecting;
  }

  async request(req: Buffer): Promise<HttpResponse> {
    if (!this.socket) await this.connect();
    return new Promise<HttpResponse>((resolve, reject) => {
      this.pending = { resolve, reject };
      this.socket!.write(req);
    });
  }

  private onData(d: Buffer): void {
    this.append(d);
    const headEnd = this.buf.indexOf("\r\n\r\n");
    if (headEnd < 0) return;
    const head = this.buf.subarray(0, headEnd).toString("latin1");
    const status = Number(head.slice(9, 12));
    const lower = head.toLowerCase();
    const cl = /\r\ncontent-length:\s*(\d+)/.exec(lower);
    let body: Buffer;
    let consumed: number;
    if (cl) {
      const len = Number(cl[1]);
      if (this.buf.length < headEnd + 4 + len) return;
      body = this.buf.subarray(headEnd + 4, headEnd + 4 + len);
      consumed = headEnd + 4 + len;
    } else if (lower.includes("transfer-encoding: chunked")) {
      const parts: Buffer[] = [];
      let pos = headEnd + 4;
      for (;;) {
        const lineEnd = this.buf.indexOf("\r\n", pos);
        if (lineEnd < 0) return;
        const size = parseInt(this.buf.subarray(pos, lineEnd).toString("latin1"), 16);
        if (this.buf.length < lineEnd + 2 + size + 2) return;
        if (size === 0) {
          consumed = lineEnd + 4;
          break;
        }
        parts.push(this.buf.subarray(lineEnd + 2, lineEnd + 2 + size));
        pos = lineEnd + 2 + size + 2;
      }
      body = Buffer.concat(parts);
    } else {
      body = Buffer.alloc(0);
      consumed = headEnd + 4;
    }
    // Copied out before the bytes after it move to the front of the store.
    const answer = Buffer.from(body);
    this.store.copy(this.store, 0, consumed, this.used);
    this.used -= consumed;
    const p = this.pending;
    this.pending = null;
    if (lower.includes("\r\nconnection: close")) {
      this.socket?.destroy();
      this.socket = null;
    }
    p?.resolve({ status, body: answer });
  }

  private append(d: Buffer): void {
    if (this.used + d.length > this.store.length) {
      const grown = Buffer.allocUnsafe(Math.max(64 * 1024, 2 * this.store.length, this.used + d.length));
      this.store.copy(grown, 0, 0, this.used);
      this.store = grown;
    }
    d.copy(this.store, this.used);
    this.used += d.length;
  }

  close(): void {
    this.socket?.destroy();
    this.socket = null;
  }
}

export interface LoadResult {
  ops: number;
  errors: number;
  seconds: number;
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  statuses: Record<string, number>;
  firstError?: string;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/**
 * Runs `op` on `connections` connections in a closed loop for `seconds` (after `warmupSeconds`,
 * not measured) or until `maxOps` operations were started. `op` returns "ok" or an error string.
 */
export async function closedLoop(opts: {
  host: string;
  port: number;
  tls?: boolean;
  connections: number;
  seconds: number;
  warmupSeconds?: number;
  maxOps?: number;
  op: (conn: Conn, worker: number, n: number) => Promise<true | string>;
}): Promise<LoadResult> {
  const conns = Array.from({ length: opts.connections }, () => new Conn(opts.host, opts.port, opts.tls ?? true));
  const latencies: number[] = [];
  let errors = 0;
  let started = 0;
  let firstError: string | undefined;
  const statuses: Record<string, number> = {};
  const warmupEnd = performance.now() + (opts.warmupSeconds ?? 0) * 1000;
  let measureStart = 0;
  let end = Infinity;
  let ops = 0;
  const worker = async (w: number) => {
    for (;;) {
      const now = performance.now();
      if (now >= end) return;
      if (opts.maxOps !== undefined && started >= opts.maxOps) return;
      const n = started++;
      const t0 = performance.now();
      let outcome: true | string;
      try {
        outcome = await opts.op(conns[w]!, w, n);
      } catch (e) {
        outcome = (e as Error).message;
      }
      const t1 = performance.now();
      if (t0 >= measureStart && measureStart > 0 && t1 <= end) {
        if (outcome === true) {
          latencies.push(t1 - t0);
          ops++;
        } else {
          errors++;
          statuses[outcome] = (statuses[outcome] ?? 0) + 1;
          firstError ??= outcome;
        }
      }
    }
  };
  const running = Array.from({ length: opts.connections }, (_, w) => worker(w));
  const startMeasure = () => {
    measureStart = performance.now();
    end = measureStart + opts.seconds * 1000;
  };
  if (opts.warmupSeconds) setTimeout(startMeasure, Math.max(0, warmupEnd - performance.now()));
  else startMeasure();
  await Promise.all(running);
  const seconds = (Math.min(performance.now(), end) - measureStart) / 1000;
  for (const c of conns) c.close();
  latencies.sort((a, b) => a - b);
  return {
    ops,
    errors,
    seconds,
    opsPerSec: ops / seconds,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    statuses,
    ...(firstError ? { firstError } : {}),
  };
}
