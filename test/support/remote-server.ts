/**
 * A fake remote Matrix server for the HTTP tests. It has its own server name
 * (`127.0.0.1:<port>`) and ed25519 key, serves its signed key document over HTTPS (self-signed
 * certificate) so that Gatehouse's real key fetcher fetches it, signs requests and events, and
 * answers the few requests Gatehouse makes to it (`/v2/invite`, countersigning the event).
 * Every inbound request is recorded.
 */
import https from "node:https";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import type { AddressInfo } from "node:net";
import type { RequestListener } from "node:http";
import { makeSigningKey, newKeyVersion, type SigningKey } from "../../src/protocol/signing-key.js";
import { signJson } from "../../src/protocol/json-signing.js";
import { signRequest } from "../../src/protocol/x-matrix.js";
import { addEventSignature, buildEvent, type EventTemplate } from "../../src/protocol/event-signing.js";
import { getRoomVersion, type RoomVersion } from "../../src/protocol/room-versions.js";
import { generateSelfSignedCertificate } from "../../src/tls.js";
import type { Pdu } from "../../src/protocol/pdu.js";

export interface RecordedRequest {
  method: string;
  /** Raw request target. */
  url: string;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

/** How the fake answers PUT /_matrix/federation/v2/invite. */
export type InviteBehaviour = "countersign" | "refuse" | "no-signature" | "tamper";

// One certificate for the whole test process: RSA key generation is slow.
let certPromise: Promise<{ cert: Buffer; key: Buffer }> | null = null;
function certificate(): Promise<{ cert: Buffer; key: Buffer }> {
  certPromise ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), "gatehouse-remote-tls-"));
    try {
      await generateSelfSignedCertificate(join(dir, "tls.crt"), join(dir, "tls.key"), "127.0.0.1");
      return { cert: readFileSync(join(dir, "tls.crt")), key: readFileSync(join(dir, "tls.key")) };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  })();
  return certPromise;
}

export function roomVersion(id: string): RoomVersion {
  const v = getRoomVersion(id);
  if (!v) throw new Error(`unknown room version ${id}`);
  return v;
}

/** An answer sent byte for byte (not JSON-encoded): hostile or malformed bodies. */
/** An answer that never comes: the request is read and left open (a server that hangs). */
export const HANG: [number, unknown] = [0, null];

export class RawBody {
  constructor(readonly bytes: Buffer) {}
}

/** Every port a RemoteServer of this process has listened on (its server name). */
const USED_PORTS = new Set<number>();

export class RemoteServer {
  readonly key: SigningKey;
  readonly requests: RecordedRequest[] = [];
  inviteBehaviour: InviteBehaviour = "countersign";
  /** When false, the key endpoint answers 404 (the server "has no keys"). */
  serveKeys = true;
  /** valid_until_ts of the published key document, relative to now (negative: already expired). */
  keyValidityMs = 24 * 3600_000;
  /** Extra routes a test can add (e.g. acting as a notary); null falls through to the defaults. */
  extraRoutes: ((req: RecordedRequest) => [number, unknown] | null) | null = null;
  private server!: https.Server;
  private _port = 0;

  private constructor(key: SigningKey) {
    this.key = key;
  }

  /** Starts a fake server on 127.0.0.1 with a random ed25519 key. */
  static async start(): Promise<RemoteServer> {
    const remote = new RemoteServer(makeSigningKey(`ed25519:${newKeyVersion(randomBytes(4))}`, randomBytes(32)));
    const { cert, key } = await certificate();
    remote.server = https.createServer({ cert, key }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let body: unknown = undefined;
        try {
          body = text ? JSON.parse(text) : undefined;
        } catch {
          body = text;
        }
        const recorded: RecordedRequest = { method: req.method ?? "", url: req.url ?? "", headers: { ...req.headers }, body };
        remote.requests.push(recorded);
        const [status, answer] = remote.answer(recorded);
        // HANG: a server that takes the request and never answers (closeAllConnections ends it).
        if (status === HANG[0]) return;
        const out = answer instanceof RawBody ? answer.bytes : Buffer.from(JSON.stringify(answer));
        res.writeHead(status, { "Content-Type": "application/json", "Content-Length": String(out.length) });
        res.end(out);
      });
    });
    // The port is the server's name: a port an earlier RemoteServer of this process had would
    // make a second server with another key under the same name, which Gatehouse's key cache
    // (one fetch per server per 10 s) rightly refuses. Such a port is given back and another taken.
    const held: https.Server[] = [];
    for (;;) {
      await new Promise<void>((resolve, reject) => {
        remote.server.once("error", reject);
        remote.server.listen(0, "127.0.0.1", () => resolve());
      });
      const port = (remote.server.address() as AddressInfo).port;
      if (!USED_PORTS.has(port)) {
        USED_PORTS.add(port);
        remote._port = port;
        break;
      }
      // Keep the used port bound while another is chosen, so it is not handed out again at once.
      const taken = remote.server;
      held.push(taken);
      remote.server = https.createServer({ cert, key }, taken.listeners("request")[0] as RequestListener);
    }
    await Promise.all(held.map((h) => new Promise((r) => h.close(r))));
    return remote;
  }

  get port(): number {
    return this._port;
  }

  get serverName(): string {
    return `127.0.0.1:${this._port}`;
  }

  userId(localpart: string): string {
    return `@${localpart}:${this.serverName}`;
  }

  /** The signed key document this server publishes. */
  keyDocument(validForMs = this.keyValidityMs): Record<string, unknown> {
    return signJson(
      {
        server_name: this.serverName,
        verify_keys: { [this.key.keyId]: { key: this.key.publicKeyBase64 } },
        old_verify_keys: {},
        valid_until_ts: Date.now() + validForMs,
      },
      this.serverName,
      this.key,
    );
  }

  private answer(req: RecordedRequest): [number, unknown] {
    const path = req.url.split("?")[0]!;
    const extra = this.extraRoutes?.(req);
    if (extra) return extra;
    if (req.method === "GET" && (path === "/_matrix/key/v2/server" || path.startsWith("/_matrix/key/v2/server/"))) {
      if (!this.serveKeys) return [404, { errcode: "M_UNRECOGNIZED", error: "no keys here" }];
      return [200, this.keyDocument()];
    }
    if (req.method === "PUT" && path.startsWith("/_matrix/federation/v2/invite/")) {
      const b = req.body as { room_version?: string; event?: Pdu };
      if (!b?.event || !b.room_version) return [400, { errcode: "M_MISSING_PARAM", error: "event and room_version are required" }];
      const version = roomVersion(b.room_version);
      switch (this.inviteBehaviour) {
        case "refuse":
          return [403, { errcode: "M_FORBIDDEN", error: "This user does not accept invites" }];
        case "no-signature":
          return [200, { event: b.event }];
        case "tamper":
          // Signs a different event (a field the signature covers changed): the signature does not
          // verify over Gatehouse's invite. (Changing only content.reason would not do: event
          // signatures cover the redacted event, and a member event's redaction drops the reason.)
          return [200, { event: addEventSignature({ ...b.event, origin_server_ts: b.event.origin_server_ts + 1 }, this.serverName, this.key, version) }];
        case "countersign":
          return [200, { event: addEventSignature(b.event, this.serverName, this.key, version) }];
      }
    }
    return [404, { errcode: "M_UNRECOGNIZED", error: `Unrecognized request ${req.method} ${path}` }];
  }

  /** Inbound requests whose path starts with `prefix`. */
  requestsTo(prefix: string): RecordedRequest[] {
    return this.requests.filter((r) => r.url.startsWith(prefix));
  }

  /** The X-Matrix header for a request from this server (optionally signed with another key). */
  authHeader(method: string, uri: string, destination: string, content?: unknown, key: SigningKey = this.key): string {
    return signRequest({ method, uri, origin: this.serverName, destination, content, key });
  }

  /**
   * Hashes and signs an event by one of this server's users. `template` is a make_* template (as
   * returned, unsigned) or any event template; returns the PDU and its event ID.
   */
  signEvent(template: Record<string, unknown>, versionId: string, key: SigningKey = this.key): { pdu: Pdu; eventId: string } {
    const { hashes: _h, signatures: _s, unsigned: _u, event_id: _e, ...fields } = template;
    const built = buildEvent(fields as EventTemplate, {
      roomVersion: roomVersion(versionId),
      serverName: this.serverName,
      key,
      clock: Date.now,
    });
    return { pdu: built.pdu, eventId: built.eventId };
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** A signing key with a random seed, e.g. to forge a signature under a real key ID. */
export function randomKey(keyId = `ed25519:${newKeyVersion(randomBytes(4))}`): SigningKey {
  return makeSigningKey(keyId, randomBytes(32));
}
