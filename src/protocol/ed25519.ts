/**
 * ed25519 behind one small interface, with two implementations that must give identical output:
 * Node's built-in crypto (OpenSSL; the default, ~50× faster than tweetnacl here, see bench/README.md)
 * and tweetnacl (portable, pure JS). Signers and verifiers are objects so that the expensive key
 * import happens once per key, not per call.
 */
import { createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify, type KeyObject } from "node:crypto";
import nacl from "tweetnacl";

export const SEED_BYTES = 32;
export const PUBLIC_KEY_BYTES = 32;
export const SIGNATURE_BYTES = 64;

export interface Ed25519Signer {
  readonly publicKey: Uint8Array;
  sign(message: Uint8Array): Uint8Array;
}

export interface Ed25519Verifier {
  readonly publicKey: Uint8Array;
  verify(message: Uint8Array, signature: Uint8Array): boolean;
}

export interface Ed25519 {
  readonly name: string;
  signer(seed: Uint8Array): Ed25519Signer;
  verifier(publicKey: Uint8Array): Ed25519Verifier;
}

function checkLength(bytes: Uint8Array, expected: number, what: string): void {
  if (bytes.length !== expected) throw new Error(`${what} must be ${expected} bytes, got ${bytes.length}`);
}

// DER wrappers (RFC 8410) so that raw 32-byte keys can be imported into OpenSSL.
const PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");
const SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

export const nodeEd25519: Ed25519 = {
  name: "node:crypto",
  signer(seed) {
    checkLength(seed, SEED_BYTES, "ed25519 seed");
    const privateKey: KeyObject = createPrivateKey({
      key: Buffer.concat([PKCS8_PREFIX, seed]),
      format: "der",
      type: "pkcs8",
    });
    const spki = createPublicKey(privateKey).export({ format: "der", type: "spki" });
    const publicKey = new Uint8Array(spki.subarray(SPKI_PREFIX.length));
    return {
      publicKey,
      sign: (message) => new Uint8Array(nodeSign(null, message, privateKey)),
    };
  },
  verifier(publicKey) {
    checkLength(publicKey, PUBLIC_KEY_BYTES, "ed25519 public key");
    const key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, publicKey]), format: "der", type: "spki" });
    return {
      publicKey: new Uint8Array(publicKey),
      verify: (message, signature) => signature.length === SIGNATURE_BYTES && nodeVerify(null, message, key, signature),
    };
  },
};

export const tweetnaclEd25519: Ed25519 = {
  name: "tweetnacl",
  signer(seed) {
    checkLength(seed, SEED_BYTES, "ed25519 seed");
    const pair = nacl.sign.keyPair.fromSeed(new Uint8Array(seed));
    return {
      publicKey: pair.publicKey,
      sign: (message) => nacl.sign.detached(new Uint8Array(message), pair.secretKey),
    };
  },
  verifier(publicKey) {
    checkLength(publicKey, PUBLIC_KEY_BYTES, "ed25519 public key");
    const pk = new Uint8Array(publicKey);
    return {
      publicKey: pk,
      verify: (message, signature) =>
        signature.length === SIGNATURE_BYTES && nacl.sign.detached.verify(new Uint8Array(message), new Uint8Array(signature), pk),
    };
  },
};

/** The implementation the service uses, chosen by measurement (bench/README.md). */
export const defaultEd25519: Ed25519 = nodeEd25519;

/** Fresh random seed. Randomness is the caller's choice; this uses the platform CSPRNG. */
export function randomSeed(): Uint8Array {
  return nacl.randomBytes(SEED_BYTES);
}
