/**
 * Checks on a PDU received from another server, in the spec's order: format for the room
 * version, signatures of every server that must have signed (keys fetched as needed, valid at
 * the event's origin_server_ts), then the content hash (a mismatch keeps the redacted copy).
 * Auth rules are the caller's next step.
 */
import { forbidden, type MatrixError } from "../protocol/errors.js";
import { CanonicalJsonError } from "../protocol/canonical-json.js";
import { checkEvent, requiredSigningServers, verifyEventSignedBy } from "../protocol/event-signing.js";
import { contentHashInput } from "../protocol/event-hashing.js";
import type { Ed25519Verifier } from "../protocol/ed25519.js";
import { isPlainObject, type Pdu } from "../protocol/pdu.js";
import { validatePduFormat } from "../protocol/pdu-format.js";
import type { RoomVersion } from "../protocol/room-versions.js";
import type { RemoteKeys } from "../keys/remote-keys.js";

export type VerifiedEvent = { ok: true; eventId: string; pdu: Pdu; hashOk: boolean } | { ok: false; error: MatrixError; reason: string };

export type VerificationFailure = "format" | "signature" | "event_id";

export interface VerifyOptions {
  /**
   * A required signer whose signature the event cannot carry yet because we add it next: a
   * restricted join reaching send_join, authorised by one of our own users, is co-signed by us
   * only after the allow-room check (event-signing.ts requiredSigningServers). Every other
   * required server must still have signed.
   */
  pendingSignatureOf?: string;
}

export class EventVerifier {
  constructor(
    private readonly remoteKeys: RemoteKeys,
    private readonly onFailure?: (reason: VerificationFailure) => void,
  ) {}

  async verify(raw: unknown, version: RoomVersion, opts: VerifyOptions = {}): Promise<VerifiedEvent> {
    // The content hash's input (canonical JSON without hashes, signatures, unsigned), encoded
    // once: it gives the size limit's measure and the hash check. One that cannot be encoded is
    // left to the format check, which refuses it with the same error as before.
    let contentInput: Buffer | undefined;
    if (isPlainObject(raw)) {
      try {
        contentInput = contentHashInput(raw);
      } catch (e) {
        if (!(e instanceof CanonicalJsonError)) throw e;
      }
    }
    const formatError = validatePduFormat(raw, version, contentInput?.length);
    if (formatError) {
      this.onFailure?.("format");
      return { ok: false, error: formatError, reason: formatError.message };
    }
    const pdu = raw as Pdu;
    const required = requiredSigningServers(pdu, version);
    if (!required.ok) {
      this.onFailure?.("signature");
      return { ok: false, error: forbidden(required.reason), reason: required.reason };
    }
    const servers = required.servers.filter((s) => s !== opts.pendingSignatureOf);
    if (servers.length === 0) {
      this.onFailure?.("signature");
      return { ok: false, error: forbidden("Event is signed by no required server"), reason: "no required signer left" };
    }
    const verifiers = new Map<string, Ed25519Verifier>();
    const signatures = isPlainObject(pdu.signatures) ? pdu.signatures : {};
    for (const server of servers) {
      const byServer = signatures[server];
      if (!isPlainObject(byServer)) continue;
      for (const keyId of Object.keys(byServer)) {
        if (!keyId.startsWith("ed25519:")) continue;
        const found = await this.remoteKeys.getVerifier(server, keyId, pdu.origin_server_ts, true);
        if (found) verifiers.set(`${server}\u0000${keyId}`, found.verifier);
      }
    }
    const lookup = (entity: string, keyId: string) => verifiers.get(`${entity}\u0000${keyId}`);
    const check = checkEvent(pdu, version, lookup, undefined, contentInput);
    let signaturesOk = check.signaturesOk;
    let signatureError = check.signatureError;
    if (servers.length !== required.servers.length) {
      // checkEvent demands every required signer; re-check all but the pending one.
      const failed = servers.map((s) => verifyEventSignedBy(pdu, version, s, lookup)).find((r) => !r.ok);
      signaturesOk = failed === undefined;
      signatureError = failed && !failed.ok ? failed.reason : undefined;
    }
    if (!signaturesOk || !check.eventId) {
      this.onFailure?.(check.eventId ? "signature" : "event_id");
      const reason = signatureError ?? "cannot compute the event ID";
      return { ok: false, error: forbidden(`Event signature check failed: ${reason}`), reason };
    }
    const kept = check.hashOk ? pdu : (check.redactedIfHashBad as Pdu);
    // `unsigned` is covered by neither hash nor signature: whatever another server put there is
    // not ours to store or relay (Synapse likewise rebuilds it from its own bookkeeping).
    if (kept.unsigned === undefined) return { ok: true, eventId: check.eventId, pdu: kept, hashOk: check.hashOk };
    const { unsigned: _unsigned, ...withoutUnsigned } = kept;
    return { ok: true, eventId: check.eventId, pdu: withoutUnsigned as Pdu, hashOk: check.hashOk };
  }
}
