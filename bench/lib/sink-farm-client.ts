/** The parent side of sink-farm.ts: forks the farm (inheriting this process's core) and talks to it over IPC. */
import { fork, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { randomBytes } from "node:crypto";
import { generateSelfSignedCertificate } from "../../src/tls.js";
import { sinkKey, type FakeServer } from "./fed.js";
import type { SinkMode } from "./sink-farm.js";
import { repoRoot } from "./procs.js";

export interface FarmStats {
  perDest: { serverName: string; attempts: number; txns: number; uniqueEvents: number; received: number; dupAcrossTxns: number; badSignatures: number; mode: string }[];
  latencies: number[];
  pdusPerTxn: number[];
  firstAt: number;
  lastAt: number;
}

export async function benchTls(): Promise<{ certFile: string; keyFile: string }> {
  const dir = join(tmpdir(), "gatehouse-bench-tls");
  mkdirSync(dir, { recursive: true });
  const certFile = join(dir, "tls.crt");
  const keyFile = join(dir, "tls.key");
  if (!existsSync(certFile) || !existsSync(keyFile)) await generateSelfSignedCertificate(certFile, keyFile, "127.0.0.1");
  return { certFile, keyFile };
}

export class SinkFarm {
  private seq = 0;
  private readonly waiting = new Map<number, { resolve: (m: any) => void; reject: (e: Error) => void }>();
  servers: string[] = [];
  readonly base = randomBytes(8).toString("hex");

  private constructor(private readonly child: ChildProcess) {
    child.on("message", (m: any) => {
      const w = this.waiting.get(m.id);
      if (!w) return;
      this.waiting.delete(m.id);
      if (m.ok) w.resolve(m);
      else w.reject(new Error(m.error));
    });
    child.on("exit", () => {
      for (const w of this.waiting.values()) w.reject(new Error("sink farm exited"));
      this.waiting.clear();
    });
  }

  static async start(count: number, roomVersion = "12"): Promise<SinkFarm> {
    const child = fork(join(repoRoot, "bench/lib/sink-farm.ts"), [], { execArgv: ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"] });
    const farm = new SinkFarm(child);
    const tls = await benchTls();
    const r = await farm.call({ cmd: "start", count, base: farm.base, roomVersion, ...tls });
    farm.servers = r.servers;
    return farm;
  }

  get pid(): number {
    return this.child.pid!;
  }

  call(msg: Record<string, unknown>): Promise<any> {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.child.send({ ...msg, id });
    });
  }

  server(i: number): FakeServer {
    return { serverName: this.servers[i]!, key: sinkKey(this.base, i) };
  }

  verifyAs(identity: { serverName: string; keyId: string; publicKeyBase64: string } | null) {
    return this.call({ cmd: "verify", ...(identity ? { serverName: identity.serverName, keyId: identity.keyId, publicKey: identity.publicKeyBase64 } : { serverName: null }) });
  }

  mode(indices: number[], mode: SinkMode, opts: { delayMs?: number; release?: "answer" | "destroy" } = {}) {
    return this.call({ cmd: "mode", indices, mode, ...opts });
  }

  /** Makes the farm the origin of events in `roomId` (see sink-farm.ts): the state it was sent on joining. */
  originRoom(roomId: string, version: string, state: unknown[], authChain: unknown[]) {
    return this.call({ cmd: "originRoom", roomId, version, state, authChain });
  }

  /** Events the origin built in `roomId`, in order, which the farm then serves to whoever asks. */
  originEvents(roomId: string, events: [string, unknown][]) {
    return this.call({ cmd: "originEvents", roomId, events });
  }

  /** Per origin endpoint: requests, events answered, 404s. */
  async served(): Promise<Record<string, { requests: number; events: number; notFound: number }>> {
    return (await this.call({ cmd: "served" })).served;
  }

  reset() {
    return this.call({ cmd: "reset" });
  }

  async stats(latencies = false): Promise<FarmStats> {
    return (await this.call({ cmd: "stats", latencies })).stats;
  }

  async has(indices: number[], ids: string[]): Promise<number[]> {
    return (await this.call({ cmd: "has", indices, ids })).counts;
  }

  /** When the last sink received each of `ids` (null: some sink lacks it); first receipt after `after` ms. */
  async receipts(ids: string[], after?: number): Promise<{ lastReceipt: (number | null)[]; firstAfter: number | null }> {
    const r = await this.call({ cmd: "receipts", ids, after });
    return { lastReceipt: r.lastReceipt, firstAfter: r.firstAfter };
  }

  async check(expected: Record<string, string[]>): Promise<Record<string, { missing: string[]; extra: number; dupAcrossTxns: number }>> {
    return (await this.call({ cmd: "check", expected })).report;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    await this.call({ cmd: "stop" }).catch(() => undefined);
    await new Promise<void>((r) => (this.child.exitCode !== null ? r() : this.child.once("exit", () => r())));
  }
}
