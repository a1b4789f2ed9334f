/**
 * Signing and checking PDUs (spec: Server-Server API "Signing events", "Validating hashes and
 * signatures on received events"; digest signing.md §5).
 *
 * Order matters and is easy to get wrong: hash the full event, redact, sign the redacted copy,
 * copy the signature back. Verification mirrors it: redact, check signatures, then the content
 * hash. All functions return new objects and never mutate their input.
 */
import { CanonicalJsonError } from "./canonical-json.js";
import { signatureOf, signedBytes, verifySignaturesOver, verifySignedJson, type Signatures, type VerifierLookup } from "./json-signing.js";
import type { SigningKey } from "./signing-key.js";
import type { RoomVersion } from "./room-versions.js";
import { redactEvent, RedactionError, type RedactOptions } from "./redaction.js";
import { checkContentHash, computeEventId, eventIdOf, eventIdOfReferenceHash, sha256, withContentHash, EventIdError } from "./event-hashing.js";
import { isPlainObject, isValidEventReferences, serverNameOf, type EventReference, type Pdu } from "./pdu.js";

function addSignature(signatures: unknown, serverName: string, keyId: string, signature: string): Signatures {
  const existing = (isPlainObject(signatures) ? signatures : {}) as Signatures;
  return { ...existing, [serverName]: { ...(existing[serverName] ?? {}), [keyId]: signature } };
}

/**
 * Adds `serverName`'s signature to an event that is already hashed, leaving `hashes` alone.
 * This is co-signing (e.g. a resident server signing a restricted join, or re-signing with a new
 * key): recomputing the hash would be wrong if we hold only a redacted copy.
 */
export function addEventSignature<T extends Record<string, unknown>>(
  event: T,
  serverName: string,
  key: SigningKey,
  roomVersion: RoomVersion,
  options?: RedactOptions,
): T & { signatures: Signatures } {
  const signature = signatureOf(redactEvent(event, roomVersion, options), key);
  return { ...event, signatures: addSignature(event.signatures, serverName, key.keyId, signature) };
}

/**
 * Hashes and signs an event we originate: sets `hashes.sha256` from the full event, then signs
 * the redacted copy. Existing signatures (ours under other key IDs, or other servers') are kept.
 */
export function signEvent<T extends Record<string, unknown>>(
  event: T,
  serverName: string,
  key: SigningKey,
  roomVersion: RoomVersion,
  options?: RedactOptions,
): T & { hashes: { sha256: string }; signatures: Signatures } {
  return addEventSignature(withContentHash(event), serverName, key, roomVersion, options);
}

export type RequiredServers = { ok: true; servers: string[] } | { ok: false; reason: string };

/**
 * The servers whose signatures an event must carry:
 *  - the sender's server, except for an invite created from a third-party invite (spec: the
 *    sender matches the 3pid invite but another server may have produced the event);
 *  - v1–v2: the server named in `event_id` (IDs are server-chosen there, so the domain vouches);
 *  - rooms with restricted joins (v8+): for a join with `join_authorised_via_users_server`, that
 *    user's server, which authorised the join. The spec lists this under restricted joins rather
 *    than in the signature-check section; Synapse and ruma both enforce it here.
 *
 * Consequences callers must know: a third-party-invite invite can require *no* signature at all
 * (then the auth rules' check of `third_party_invite.signed` is its only authentication), and a
 * restricted join arriving at `send_join` is not yet signed by us, so check it with
 * verifyEventSignedBy(sender's server) before co-signing, not with verifyEventSignatures.
 */
export function requiredSigningServers(event: Record<string, unknown>, roomVersion: RoomVersion): RequiredServers {
  const servers = new Set<string>();
  const content = isPlainObject(event.content) ? event.content : {};
  const membership = event.type === "m.room.member" ? content.membership : undefined;

  const thirdPartyInvite = membership === "invite" && Object.hasOwn(content, "third_party_invite");
  if (!thirdPartyInvite) {
    if (typeof event.sender !== "string") return { ok: false, reason: "sender is not a string" };
    const server = serverNameOf(event.sender);
    if (!server) return { ok: false, reason: `sender ${event.sender} has no server name` };
    servers.add(server);
  }
  if (roomVersion.eventIdFormat === "server-chosen") {
    if (typeof event.event_id !== "string") return { ok: false, reason: "event_id is missing" };
    const server = serverNameOf(event.event_id);
    if (!server) return { ok: false, reason: `event_id ${event.event_id} has no server name` };
    servers.add(server);
  }
  if (roomVersion.restrictedJoins && membership === "join" && typeof content.join_authorised_via_users_server === "string") {
    const server = serverNameOf(content.join_authorised_via_users_server);
    if (!server) return { ok: false, reason: "join_authorised_via_users_server has no server name" };
    servers.add(server);
  }
  return { ok: true, servers: [...servers] };
}

export type EventSignatureCheck = { ok: true; servers: string[] } | { ok: false; reason: string };

function expectedFailure(e: unknown): string {
  if (e instanceof RedactionError || e instanceof CanonicalJsonError || e instanceof EventIdError) return e.message;
  throw e;
}

/**
 * Checks that one given server signed the event (against the redacted copy). For callers that
 * need a specific signature, e.g. the resident server's own on a returned join, and for test
 * vectors that are not complete PDUs (the spec's minimal events have no event_id or sender).
 */
export function verifyEventSignedBy(
  event: Record<string, unknown>,
  roomVersion: RoomVersion,
  serverName: string,
  lookup: VerifierLookup,
  options?: RedactOptions,
): EventSignatureCheck {
  try {
    const check = verifySignedJson(redactEvent(event, roomVersion, options), serverName, lookup);
    return check.ok ? { ok: true, servers: [serverName] } : { ok: false, reason: check.reason };
  } catch (e) {
    return { ok: false, reason: expectedFailure(e) };
  }
}

/**
 * Checks every required server's signature against the redacted copy, so it succeeds whether we
 * were sent the full event or a redacted one. Malformed events (no content, non-canonical values)
 * fail with a reason instead of throwing: they come from the network.
 */
export function verifyEventSignatures(
  event: Record<string, unknown>,
  roomVersion: RoomVersion,
  lookup: VerifierLookup,
  options?: RedactOptions,
): EventSignatureCheck {
  let redacted: Record<string, unknown> | undefined;
  const redactedOnce = () => (redacted ??= redactEvent(event, roomVersion, options));
  return signaturesOfRedacted(event, roomVersion, redactedOnce, () => signedBytes(redactedOnce()), lookup);
}

/**
 * The signature check of verifyEventSignatures over a redacted copy and its signed bytes the
 * caller may already hold (checkEvent encodes them once for the signatures and the event ID).
 * `redacted` may throw (a redaction error is a failed check).
 */
function signaturesOfRedacted(
  event: Record<string, unknown>,
  roomVersion: RoomVersion,
  redacted: () => Record<string, unknown>,
  bytes: () => Buffer,
  lookup: VerifierLookup,
): EventSignatureCheck {
  const required = requiredSigningServers(event, roomVersion);
  if (!required.ok) return required;
  try {
    const signatures = redacted().signatures;
    for (const server of required.servers) {
      const check = verifySignaturesOver(bytes, signatures, server, lookup);
      if (!check.ok) return { ok: false, reason: check.reason };
    }
  } catch (e) {
    return { ok: false, reason: expectedFailure(e) };
  }
  return required;
}

export interface EventCheckResult {
  /** The event's ID (derived in v3+, `event_id` in v1–v2); null when it cannot be determined. */
  eventId: string | null;
  /** False ⇒ drop the event. */
  signaturesOk: boolean;
  /** Why the signature check failed, when it did. */
  signatureError?: string;
  /** False ⇒ the content does not match `hashes.sha256`; use `redactedIfHashBad` instead. */
  hashOk: boolean;
  /** The redacted copy to keep in place of the event when the hash is bad (spec), else null. */
  redactedIfHashBad: Record<string, unknown> | null;
}

/**
 * The full inbound check as a value: event ID, signatures, content hash, and what to keep.
 * `contentInput`: the event's contentHashInput (event-hashing.ts) when the caller has encoded it.
 */
export function checkEvent(
  event: Record<string, unknown>,
  roomVersion: RoomVersion,
  lookup: VerifierLookup,
  options?: RedactOptions,
  contentInput?: Buffer,
): EventCheckResult {
  // The redacted event's canonical JSON without `signatures` and `unsigned` is both what the
  // signatures cover and what the reference hash (the v3+ event ID) hashes: redacted and
  // encoded once for both (verifyEventSignatures and eventIdOf would each do it again).
  let redacted: Record<string, unknown> | undefined;
  let redactionError: unknown;
  try {
    redacted = redactEvent(event, roomVersion, options);
  } catch (e) {
    expectedFailure(e);
    redactionError = e;
  }
  let bytes: Buffer | undefined;
  const referenceBytes = (): Buffer => (bytes ??= signedBytes(redacted!));
  const sig = signaturesOfRedacted(
    event,
    roomVersion,
    () => {
      if (redacted === undefined) throw redactionError;
      return redacted;
    },
    referenceBytes,
    lookup,
  );
  let eventId: string | null = null;
  let hashOk = false;
  let redactedIfHashBad: Record<string, unknown> | null = null;
  try {
    if (roomVersion.eventIdFormat === "server-chosen") eventId = eventIdOf(event, roomVersion, options);
    else if (redacted === undefined) throw redactionError;
    else eventId = eventIdOfReferenceHash(sha256(referenceBytes()), roomVersion);
  } catch (e) {
    expectedFailure(e);
  }
  try {
    hashOk = checkContentHash(event, contentInput);
    if (!hashOk) redactedIfHashBad = redacted ?? redactEvent(event, roomVersion, options);
  } catch (e) {
    expectedFailure(e);
  }
  return sig.ok
    ? { eventId, signaturesOk: true, hashOk, redactedIfHashBad }
    : { eventId, signaturesOk: false, signatureError: sig.reason, hashOk, redactedIfHashBad };
}

export class EventBuildError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "EventBuildError";
  }
}

/** The fields a caller supplies; hashes and signatures are computed, `unsigned` is never sent. */
export interface EventTemplate {
  type: string;
  sender: string;
  /** Required except on a v12 `m.room.create` event, where it must be absent. */
  room_id?: string;
  state_key?: string;
  content: Record<string, unknown>;
  prev_events: EventReference[];
  auth_events: EventReference[];
  depth: number;
  /** Taken from `clock` when absent. */
  origin_server_ts?: number;
  /** v1–v2 only (server-chosen `$opaque:serverName`); must be absent in v3+. */
  event_id?: string;
  [key: string]: unknown;
}

export interface BuildEventOptions {
  roomVersion: RoomVersion;
  /** Our server name; the sender (and in v1–v2 the event ID) must belong to it. */
  serverName: string;
  key: SigningKey;
  /** Milliseconds since the epoch; injected so that tests and replays are deterministic. */
  clock: () => number;
}

export interface BuiltEvent {
  pdu: Pdu;
  eventId: string;
  /** The room the event belongs to; for a v12 create event, the room ID it defines. */
  roomId: string;
}

function isV12Create(template: EventTemplate, roomVersion: RoomVersion): boolean {
  return roomVersion.roomIdIsCreateEventHash && template.type === "m.room.create" && template.state_key === "";
}

/** Hashes and signs a PDU built from a template, returning it with its event ID (and room ID). */
export function buildEvent(template: EventTemplate, options: BuildEventOptions): BuiltEvent {
  const { roomVersion, serverName, key, clock } = options;
  const fail = (message: string): never => {
    throw new EventBuildError(message);
  };
  if (typeof template.type !== "string") fail("type must be a string");
  if (typeof template.sender !== "string" || serverNameOf(template.sender) !== serverName)
    fail(`sender must be a user on ${serverName}`);
  if (!isPlainObject(template.content)) fail("content must be an object");
  if (template.state_key !== undefined && typeof template.state_key !== "string") fail("state_key must be a string");
  if (!Number.isSafeInteger(template.depth) || template.depth < 0) fail("depth must be a non-negative integer");
  for (const field of ["prev_events", "auth_events"] as const)
    if (!isValidEventReferences(template[field], roomVersion))
      fail(`${field} must be ${roomVersion.eventRefsAreIds ? "event IDs" : "[event_id, hashes] pairs"} in room version ${roomVersion.id}`);

  const v12Create = isV12Create(template, roomVersion);
  if (v12Create && template.room_id !== undefined) fail("a v12 create event must not have a room_id");
  if (!v12Create && typeof template.room_id !== "string") fail("room_id must be a string");

  if (roomVersion.eventIdFormat === "server-chosen") {
    if (typeof template.event_id !== "string" || serverNameOf(template.event_id) !== serverName)
      fail(`room version ${roomVersion.id} needs a server-chosen event_id on ${serverName}`);
  } else if (template.event_id !== undefined) {
    // A stray event_id would be covered by the reference hash (it is on the keep-list).
    fail(`room version ${roomVersion.id} events must not carry event_id`);
  }

  const { hashes: _h, signatures: _s, unsigned: _u, ...fields } = template;
  const originServerTs = template.origin_server_ts ?? clock();
  if (!Number.isSafeInteger(originServerTs)) fail("origin_server_ts must be an integer");
  const pdu = signEvent({ ...fields, origin_server_ts: originServerTs } as Pdu, serverName, key, roomVersion);
  const eventId = roomVersion.eventIdFormat === "server-chosen" ? (pdu.event_id as string) : computeEventId(pdu, roomVersion);
  const roomId = v12Create ? "!" + eventId.slice(1) : (pdu.room_id as string);
  return { pdu, eventId, roomId };
}
