/**
 * Acting as fake remote servers from the bench process: deterministic keys (shared with the
 * sink farm), X-Matrix-signed raw requests for the load generator, signed events, and the
 * make_/send_ membership handshakes over the load generator's connections.
 */
import { createHash } from "node:crypto";
import { makeSigningKey, type SigningKey } from "../../src/protocol/signing-key.js";
import { signRequest } from "../../src/protocol/x-matrix.js";
import { buildEvent, type EventTemplate } from "../../src/protocol/event-signing.js";
import { getRoomVersion } from "../../src/protocol/room-versions.js";
import type { Pdu } from "../../src/protocol/pdu.js";
import { buildRequest, type Conn } from "./loadgen.js";

export const enc = encodeURIComponent;

export function sinkKey(base: string, index: number): SigningKey {
  const seed = createHash("sha256").update(`${base}:${index}`).digest();
  return makeSigningKey("ed25519:bench", seed);
}

export interface FakeServer {
  serverName: string;
  key: SigningKey;
}

/** A raw request signed by `from` for `destination` (X-Matrix over the exact path and body). */
export function signedRequest(from: FakeServer, destination: string, method: string, path: string, body?: unknown): Buffer {
  const auth = signRequest({ method, uri: path, origin: from.serverName, destination, content: body, key: from.key });
  return buildRequest(method, path, destination, { Authorization: auth }, body === undefined ? undefined : JSON.stringify(body));
}

export function signEvent(from: FakeServer, template: Record<string, unknown>, versionId: string): { pdu: Pdu; eventId: string } {
  const { hashes: _h, signatures: _s, unsigned: _u, event_id: _e, ...fields } = template;
  const built = buildEvent(fields as EventTemplate, { roomVersion: getRoomVersion(versionId)!, serverName: from.serverName, key: from.key, clock: Date.now });
  return { pdu: built.pdu, eventId: built.eventId };
}

export class HandshakeError extends Error {
  constructor(
    readonly step: string,
    readonly status: number,
    readonly body: string,
  ) {
    super(`${step}: HTTP ${status} ${body.slice(0, 200)}`);
  }
}

/** make_{kind} + send_{kind} as `from` for `userId`, over `conn`. Returns the event ID. */
export async function handshake(
  conn: Conn,
  from: FakeServer,
  destination: string,
  kind: "knock" | "join" | "leave",
  roomId: string,
  userId: string,
  content: Record<string, unknown> = {},
): Promise<{ eventId: string; pdu: Pdu; response: unknown }> {
  const ver = ["12", "11", "10", "9", "8", "7"].map((v) => `ver=${v}`).join("&");
  const makePath = `/_matrix/federation/v1/make_${kind}/${enc(roomId)}/${enc(userId)}?${ver}`;
  const made = await conn.request(signedRequest(from, destination, "GET", makePath));
  if (made.status !== 200) throw new HandshakeError(`make_${kind}`, made.status, made.body.toString());
  const m = JSON.parse(made.body.toString()) as { room_version: string; event: Record<string, unknown> };
  const ev = m.event;
  const { pdu, eventId } = signEvent(from, { ...ev, content: { ...(ev.content as object), ...content } }, m.room_version);
  const sendPath = kind === "knock" ? `/_matrix/federation/v1/send_knock/${enc(roomId)}/${enc(eventId)}` : `/_matrix/federation/v2/send_${kind}/${enc(roomId)}/${enc(eventId)}`;
  const sent = await conn.request(signedRequest(from, destination, "PUT", sendPath, pdu));
  if (sent.status !== 200) throw new HandshakeError(`send_${kind}`, sent.status, sent.body.toString());
  return { eventId, pdu, response: JSON.parse(sent.body.toString()) };
}
