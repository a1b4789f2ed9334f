/**
 * Signing and verifying JSON objects (spec appendix "Signing JSON", "Checking for a signature").
 * `signatures` and `unsigned` are never covered; inputs are never mutated.
 */
import { canonicalJsonBytes } from "./canonical-json.js";
import { decodeBase64, encodeBase64 } from "./base64.js";
import type { Ed25519Verifier } from "./ed25519.js";
import type { SigningKey } from "./signing-key.js";

export type Signatures = Record<string, Record<string, string>>;

/** The bytes a signature covers: canonical JSON without `signatures` and `unsigned`. */
export function signedBytes(object: Record<string, unknown>): Buffer {
  const { signatures: _s, unsigned: _u, ...rest } = object;
  return canonicalJsonBytes(rest);
}

/** Unpadded base64 ed25519 signature over the object's signed bytes. */
export function signatureOf(object: Record<string, unknown>, key: SigningKey): string {
  return encodeBase64(key.signer.sign(signedBytes(object)));
}

/** A copy of the object with `signatures[entity][keyId]` added, keeping existing signatures. */
export function signJson<T extends Record<string, unknown>>(object: T, entity: string, key: SigningKey): T & { signatures: Signatures } {
  const signature = signatureOf(object, key);
  const existing = (object.signatures ?? {}) as Signatures;
  return {
    ...object,
    signatures: { ...existing, [entity]: { ...(existing[entity] ?? {}), [key.keyId]: signature } },
  };
}

export function verifySignature(object: Record<string, unknown>, signature: string, verifier: Ed25519Verifier): boolean {
  const sig = decodeBase64(signature);
  if (!sig || sig.length !== 64) return false;
  return verifier.verify(signedBytes(object), sig);
}

/** Finds the verify key for (entity, keyId), or undefined when none is known. */
export type VerifierLookup = (entity: string, keyId: string) => Ed25519Verifier | undefined;

export type SignatureCheck = { ok: true; keyId: string } | { ok: false; reason: string };

/**
 * Checks that `entity` signed the object with at least one ed25519 key we know (spec steps 1–6).
 * Signatures by keys of other algorithms are ignored; one valid known ed25519 signature suffices,
 * but a known key whose signature fails makes the whole check fail (it is a forgery, not a gap).
 */
export function verifySignedJson(object: Record<string, unknown>, entity: string, lookup: VerifierLookup): SignatureCheck {
  return verifySignaturesOver(() => signedBytes(object), object.signatures, entity, lookup);
}

/**
 * verifySignedJson's check for signed bytes the caller builds itself (`bytes` is called at most
 * once, and only when a known key has a signature to check): an X-Matrix request already holds
 * the canonical JSON of its body, so its signed object need not be encoded a second time.
 * `signatures` is the object's `signatures` value.
 */
export function verifySignaturesOver(bytes: () => Buffer, signatures: unknown, entity: string, lookup: VerifierLookup): SignatureCheck {
  if (typeof signatures !== "object" || signatures === null) return { ok: false, reason: "no signatures" };
  const mine = (signatures as Record<string, unknown>)[entity];
  if (typeof mine !== "object" || mine === null) return { ok: false, reason: `not signed by ${entity}` };
  let checked: string | undefined;
  let unknownKeys = 0;
  let signed: Buffer | undefined;
  for (const [keyId, signature] of Object.entries(mine as Record<string, unknown>)) {
    if (!keyId.startsWith("ed25519:")) continue;
    if (typeof signature !== "string") return { ok: false, reason: `signature ${keyId} is not a string` };
    const verifier = lookup(entity, keyId);
    if (!verifier) {
      unknownKeys++;
      continue;
    }
    const sig = decodeBase64(signature);
    signed ??= bytes();
    if (!sig || sig.length !== 64 || !verifier.verify(signed, sig)) return { ok: false, reason: `bad signature by ${entity} with ${keyId}` };
    checked ??= keyId;
  }
  if (checked) return { ok: true, keyId: checked };
  return { ok: false, reason: unknownKeys > 0 ? `no known key for ${entity}` : `no ed25519 signature by ${entity}` };
}
