/**
 * sodium-native (libsodium, the library Synapse verifies with through PyNaCl) as an optional
 * ed25519 backend behind the Ed25519 interface (protocol/ed25519.ts). It is an
 * optionalDependency with prebuilt binaries: when it is not installed or its native binary does
 * not load here, Gatehouse runs on Node's crypto (the default) and says why.
 * GATEHOUSE_ED25519_BACKEND chooses; bench/README.md has the measurements.
 */
import { createRequire } from "node:module";
import { nodeEd25519, PUBLIC_KEY_BYTES, SEED_BYTES, SIGNATURE_BYTES, type Ed25519 } from "../protocol/ed25519.js";

interface Sodium {
  crypto_sign_seed_keypair(publicKey: Buffer, secretKey: Buffer, seed: Buffer): void;
  crypto_sign_detached(signature: Buffer, message: Buffer, secretKey: Buffer): void;
  crypto_sign_verify_detached(signature: Buffer, message: Buffer, publicKey: Buffer): boolean;
  crypto_sign_SECRETKEYBYTES: number;
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function checkLength(bytes: Uint8Array, expected: number, what: string): void {
  if (bytes.length !== expected) throw new Error(`${what} must be ${expected} bytes, got ${bytes.length}`);
}

/** The sodium-native backend, or why it cannot be used here. */
export function loadSodiumEd25519(): Ed25519 | { error: string } {
  let sodium: Sodium;
  try {
    sodium = createRequire(import.meta.url)("sodium-native") as Sodium;
  } catch (e) {
    return { error: (e as Error).message.split("\n")[0]! };
  }
  return {
    name: "sodium-native",
    signer(seed) {
      checkLength(seed, SEED_BYTES, "ed25519 seed");
      const publicKey = Buffer.alloc(PUBLIC_KEY_BYTES);
      const secretKey = Buffer.alloc(sodium.crypto_sign_SECRETKEYBYTES);
      sodium.crypto_sign_seed_keypair(publicKey, secretKey, asBuffer(seed));
      return {
        publicKey: new Uint8Array(publicKey),
        sign: (message) => {
          const signature = Buffer.alloc(SIGNATURE_BYTES);
          sodium.crypto_sign_detached(signature, asBuffer(message), secretKey);
          return new Uint8Array(signature);
        },
      };
    },
    verifier(publicKey) {
      checkLength(publicKey, PUBLIC_KEY_BYTES, "ed25519 public key");
      const pk = Buffer.from(publicKey);
      return {
        publicKey: new Uint8Array(publicKey),
        verify: (message, signature) => signature.length === SIGNATURE_BYTES && sodium.crypto_sign_verify_detached(asBuffer(signature), asBuffer(message), pk),
      };
    },
  };
}

/**
 * The backend a setting names: "node" (Node's crypto) or "sodium-native", which falls back to
 * Node's crypto with the reason when it cannot load (`fellBack`).
 */
export function chooseEd25519(backend: "node" | "sodium-native", load: () => Ed25519 | { error: string } = loadSodiumEd25519): { ed25519: Ed25519; fellBack?: string } {
  if (backend === "node") return { ed25519: nodeEd25519 };
  const sodium = load();
  return "error" in sodium ? { ed25519: nodeEd25519, fellBack: sodium.error } : { ed25519: sodium };
}
