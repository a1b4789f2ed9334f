/**
 * Server signing keys. A key ID is `ed25519:<version>` with the version in [a-zA-Z0-9_]+.
 * Key files use Synapse's format, one key per line: `ed25519 <version> <unpadded base64 seed>`,
 * so a key can move between Synapse and Gatehouse unchanged.
 */
import { decodeBase64, encodeBase64 } from "./base64.js";
import { defaultEd25519, SEED_BYTES, type Ed25519, type Ed25519Signer } from "./ed25519.js";

export interface SigningKey {
  /** e.g. "ed25519:a_1b2C" */
  readonly keyId: string;
  readonly seed: Uint8Array;
  readonly publicKey: Uint8Array;
  /** Unpadded base64 of the public key, as published in the key document. */
  readonly publicKeyBase64: string;
  readonly signer: Ed25519Signer;
}

const KEY_VERSION = /^[a-zA-Z0-9_]+$/;

export function isValidKeyId(keyId: string): boolean {
  const [algorithm, version, ...rest] = keyId.split(":");
  return algorithm === "ed25519" && version !== undefined && rest.length === 0 && KEY_VERSION.test(version);
}

export function makeSigningKey(keyId: string, seed: Uint8Array, impl: Ed25519 = defaultEd25519): SigningKey {
  if (!isValidKeyId(keyId)) throw new Error(`invalid signing key id ${JSON.stringify(keyId)}: want ed25519:[a-zA-Z0-9_]+`);
  const signer = impl.signer(seed);
  return { keyId, seed: new Uint8Array(seed), publicKey: signer.publicKey, publicKeyBase64: encodeBase64(signer.publicKey), signer };
}

/** Parses a Synapse-format key file. Blank lines and `#` comments are ignored. */
export function parseSigningKeyFile(text: string, impl: Ed25519 = defaultEd25519): SigningKey[] {
  const keys: SigningKey[] = [];
  for (const [index, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const parts = line.split(/\s+/);
    if (parts.length !== 3) throw new Error(`signing key file line ${index + 1}: expected "ed25519 <version> <seed>"`);
    const [algorithm, version, seedText] = parts as [string, string, string];
    if (algorithm !== "ed25519") throw new Error(`signing key file line ${index + 1}: unsupported algorithm ${algorithm}`);
    const seed = decodeBase64(seedText);
    if (!seed || seed.length !== SEED_BYTES)
      throw new Error(`signing key file line ${index + 1}: seed must be ${SEED_BYTES} bytes of base64`);
    keys.push(makeSigningKey(`ed25519:${version}`, seed, impl));
  }
  if (keys.length === 0) throw new Error("signing key file holds no key");
  return keys;
}

export function formatSigningKeyFile(keys: readonly SigningKey[]): string {
  return keys.map((k) => `ed25519 ${k.keyId.slice("ed25519:".length)} ${encodeBase64(k.seed)}\n`).join("");
}

/** A key version like Synapse's: `a_` plus four random characters from the caller's randomness. */
export function newKeyVersion(random: Uint8Array): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  let out = "a_";
  for (let i = 0; i < 4; i++) out += alphabet[(random[i] ?? 0) % alphabet.length];
  return out;
}
