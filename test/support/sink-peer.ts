/**
 * A minimal remote homeserver that receives Gatehouse's transactions, for sender tests.
 *
 * - HTTPS on 127.0.0.1 (self-signed; server name `127.0.0.1:<port>`), its own signing key and
 *   key document at /_matrix/key/v2/server;
 * - PUT /_matrix/federation/v1/send/{txnId}: verifies the X-Matrix signature with Gatehouse's
 *   public key (401 and `badSignatures++` otherwise), records every attempt, and behaves like a
 *   receiver: a transaction is processed once (its PDUs appended to `delivered`) and a repeated
 *   txnId gets the stored answer;
 * - on command it answers with an HTTP error (500, 429, 400…), refuses the transactions that
 *   hold a given PDU (`rejectTransaction`), delays its answer, or hangs
 *   (a delayed or hung transaction is processed on receipt, like Synapse, so a sender that dies
 *   while waiting and re-sends the same txnId is de-duplicated);
 * - tracks concurrent /send requests per X-Matrix destination (`maxConcurrent`).
 */
import https from "node:https";
import type http from "node:http";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import type { AddressInfo } from "node:net";
import { generateSelfSignedCertificate } from "../../src/tls.js";
import { makeSigningKey, type SigningKey } from "../../src/protocol/signing-key.js";
import { OwnKeys } from "../../src/keys/own-keys.js";
import { authenticateRequest } from "../../src/protocol/x-matrix.js";
import { defaultEd25519 } from "../../src/protocol/ed25519.js";
import { canonicalJson } from "../../src/protocol/canonical-json.js";

export interface SinkAttempt {
  txnId: string;
  origin: string;
  destination: string;
  rawBody: string;
  body: { origin: string; origin_server_ts: number; pdus: Record<string, unknown>[]; edus?: Record<string, unknown>[] };
  receivedAt: number;
  /** HTTP status answered (null while hanging / when the connection died first). */
  answered: number | null;
}

export type Answer = { status: number; body?: unknown } | { delayMs: number } | { hang: true };

let tlsPromise: Promise<{ cert: string; key: string }> | null = null;
function sinkTls(): Promise<{ cert: string; key: string }> {
  tlsPromise ??= (async () => {
    const dir = join(tmpdir(), "gatehouse-sink-tls");
    mkdirSync(dir, { recursive: true });
    const certFile = join(dir, "tls.crt");
    const keyFile = join(dir, "tls.key");
    if (!existsSync(certFile) || !existsSync(keyFile)) await generateSelfSignedCertificate(certFile, keyFile, "127.0.0.1");
    return { cert: readFileSync(certFile, "utf8"), key: readFileSync(keyFile, "utf8") };
  })();
  return tlsPromise;
}

export class SinkPeer {
  readonly attempts: SinkAttempt[] = [];
  /** PDUs of processed transactions, in the order processed. */
  readonly delivered: Record<string, unknown>[] = [];
  readonly deliveredEdus: Record<string, unknown>[] = [];
  /** txnId → stored 200 answer. */
  readonly processed = new Map<string, unknown>();
  badSignatures = 0;
  maxConcurrent = 0;
  /** Answers used before `defaultAnswer`, one per attempt. */
  script: Answer[] = [];
  defaultAnswer: Answer = { status: 200 };
  /** PDUs for which the 200 answer carries an `error`. */
  rejectPdu: (pdu: Record<string, unknown>) => string | null = () => null;
  /**
   * Transactions refused whole (before any is processed), e.g. by a peer whose JSON parser has
   * a nesting limit: the answer for a transaction holding an offending PDU or EDU, else null.
   */
  rejectTransaction: (body: SinkAttempt["body"]) => { status: number; body: unknown } | null = () => null;
  private inFlight = 0;
  private readonly key: SigningKey;
  private readonly hung = new Set<http.ServerResponse>();
  private waiters: (() => void)[] = [];

  private constructor(
    private readonly server: https.Server,
    readonly serverName: string,
    private readonly gatehouse: { serverName: string; keyId: string; publicKey: Uint8Array },
    key: SigningKey,
  ) {
    this.key = key;
  }

  static async start(gatehouse: { serverName: string; keyId: string; publicKey: Uint8Array }): Promise<SinkPeer> {
    const tls = await sinkTls();
    const server = https.createServer({ cert: tls.cert, key: tls.key });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    const sink = new SinkPeer(server, `127.0.0.1:${port}`, gatehouse, makeSigningKey("ed25519:sink", randomBytes(32)));
    server.on("request", (req, res) => sink.handle(req, res));
    return sink;
  }

  /** Resolves when `predicate` holds (checked after every request), or rejects after `timeoutMs`. */
  async waitFor(predicate: () => boolean, timeoutMs = 10_000, what = "condition"): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      if (Date.now() > deadline) throw new Error(`sink ${this.serverName}: timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 50);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Answers hung requests now (with 200) and stops hanging new ones. */
  releaseHung(): void {
    this.defaultAnswer = { status: 200 };
    for (const res of this.hung) this.finish(res, 200, { pdus: {} });
    this.hung.clear();
  }

  async close(): Promise<void> {
    for (const res of this.hung) res.destroy();
    this.hung.clear();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private finish(res: http.ServerResponse, status: number, body: unknown, attempt?: SinkAttempt): void {
    if (res.destroyed || res.writableEnded) return;
    if (attempt) attempt.answered = status;
    res.writeHead(status, { "Content-Type": "application/json" });
    res.end(JSON.stringify(body));
    this.notify();
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks).toString("utf8");
      const url = req.url ?? "/";
      if (req.method === "GET" && url === "/_matrix/key/v2/server") {
        const doc = new OwnKeys(this.serverName, [this.key], [], 86_400_000).keyDocument(Date.now());
        res.writeHead(200, { "Content-Type": "application/json" });
        res.end(doc.body);
        return;
      }
      const m = /^\/_matrix\/federation\/v1\/send\/([^/?]+)$/.exec(url);
      if (req.method !== "PUT" || !m) return this.finish(res, 404, { errcode: "M_UNRECOGNIZED", error: "sink: unknown endpoint" });
      this.onSend(decodeURIComponent(m[1]!), url, raw, req, res);
    });
  }

  private onSend(txnId: string, uri: string, raw: string, req: http.IncomingMessage, res: http.ServerResponse): void {
    let body: SinkAttempt["body"];
    try {
      body = JSON.parse(raw) as SinkAttempt["body"];
    } catch {
      return this.finish(res, 400, { errcode: "M_NOT_JSON", error: "not JSON" });
    }
    const gh = this.gatehouse;
    const verifier = defaultEd25519.verifier(gh.publicKey);
    const check = authenticateRequest(
      req.headers.authorization,
      { method: "PUT", uri, content: body },
      (entity, keyId) => (entity === gh.serverName && keyId === gh.keyId ? verifier : undefined),
      this.serverName,
    );
    if (!check.ok) {
      this.badSignatures++;
      return this.finish(res, 401, { errcode: "M_UNAUTHORIZED", error: check.reason });
    }
    const destination = this.serverName;
    const attempt: SinkAttempt = { txnId, origin: check.origin, destination, rawBody: raw, body, receivedAt: Date.now(), answered: null };
    this.attempts.push(attempt);
    this.inFlight++;
    this.maxConcurrent = Math.max(this.maxConcurrent, this.inFlight);
    res.on("close", () => {
      this.inFlight--;
      this.notify();
    });

    const refused = this.rejectTransaction(body);
    if (refused) return this.finish(res, refused.status, refused.body, attempt);
    const answer = this.script.shift() ?? this.defaultAnswer;
    if ("status" in answer && answer.status !== 200) {
      return this.finish(res, answer.status, answer.body ?? { errcode: "M_UNKNOWN", error: `sink answers ${answer.status}` }, attempt);
    }
    // Process on receipt (once per txnId), answer now, later, or never.
    let response = this.processed.get(txnId);
    if (!response) {
      const results: Record<string, unknown> = {};
      for (const pdu of body.pdus) {
        const error = this.rejectPdu(pdu);
        results[eventIdOf(pdu)] = error ? { error } : {};
        this.delivered.push(pdu);
      }
      for (const edu of body.edus ?? []) this.deliveredEdus.push(edu);
      response = { pdus: results };
      this.processed.set(txnId, response);
    }
    this.notify();
    if ("hang" in answer) {
      this.hung.add(res);
      res.on("close", () => this.hung.delete(res));
      return;
    }
    if ("delayMs" in answer) {
      const t = setTimeout(() => this.finish(res, 200, response, attempt), answer.delayMs);
      res.on("close", () => clearTimeout(t));
      return;
    }
    this.finish(res, 200, response, attempt);
  }
}

/** A stand-in event ID (reference-hash-like) for the response map. */
export function eventIdOf(pdu: Record<string, unknown>): string {
  return "$" + createHash("sha256").update(canonicalJson(pdu)).digest("base64url");
}
