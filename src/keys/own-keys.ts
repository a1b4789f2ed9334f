/**
 * Gatehouse's own signing keys: loaded from (or created in) a Synapse-format key file, and the
 * signed key document served at /_matrix/key/v2/server. The document is re-signed when less
 * than half of its validity remains, like Synapse, so the endpoint costs no signing per request.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { randomBytes } from "node:crypto";
import { formatSigningKeyFile, makeSigningKey, newKeyVersion, parseSigningKeyFile, type SigningKey } from "../protocol/signing-key.js";
import { signJson } from "../protocol/json-signing.js";
import { decodeBase64 } from "../protocol/base64.js";

export interface OldVerifyKey {
  keyId: string;
  publicKeyBase64: string;
  expiredTs: number;
}

/** Reads the key file, or creates it with one fresh key (mode 0600) when it does not exist. */
export function loadOrCreateSigningKeys(file: string): { keys: SigningKey[]; created: boolean } {
  if (existsSync(file)) return { keys: parseSigningKeyFile(readFileSync(file, "utf8")), created: false };
  const key = makeSigningKey(`ed25519:${newKeyVersion(randomBytes(4))}`, randomBytes(32));
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, formatSigningKeyFile([key]), { mode: 0o600, flag: "wx" });
  return { keys: [key], created: true };
}

/** Retired keys file: `ed25519 <version> <public key base64> <expired_ts ms>` per line. */
export function parseOldVerifyKeys(text: string): OldVerifyKey[] {
  const out: OldVerifyKey[] = [];
  for (const [i, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const [alg, version, key, ts] = line.split(/\s+/);
    const pk = key ? decodeBase64(key) : null;
    if (alg !== "ed25519" || !version || !/^[a-zA-Z0-9_]+$/.test(version) || !pk || pk.length !== 32 || !ts || !/^\d+$/.test(ts))
      throw new Error(`old signing keys line ${i + 1}: expected "ed25519 <version> <public key> <expired_ts>"`);
    out.push({ keyId: `ed25519:${version}`, publicKeyBase64: key!, expiredTs: Number(ts) });
  }
  return out;
}

function writeAtomically(file: string, text: string): void {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, file);
}

export function formatOldVerifyKeys(keys: readonly OldVerifyKey[]): string {
  return keys.map((k) => `ed25519 ${k.keyId.slice("ed25519:".length)} ${k.publicKeyBase64} ${k.expiredTs}\n`).join("");
}

/**
 * Key rotation: a fresh key becomes the signing key; the keys it replaces are appended to the
 * retired-keys file with expired_ts = now, so they stay published in old_verify_keys and events
 * they signed still verify. Each file is replaced atomically (write, then rename). A restart
 * (rolling, in Kubernetes) makes running processes sign with the new key.
 */
export function rotateSigningKey(keyFile: string, oldKeysFile: string, now: number): { current: SigningKey; retired: OldVerifyKey[] } {
  const existing = existsSync(keyFile) ? parseSigningKeyFile(readFileSync(keyFile, "utf8")) : [];
  const previous = existsSync(oldKeysFile) ? parseOldVerifyKeys(readFileSync(oldKeysFile, "utf8")) : [];
  let version = newKeyVersion(randomBytes(4));
  while (existing.some((k) => k.keyId === `ed25519:${version}`) || previous.some((k) => k.keyId === `ed25519:${version}`)) version = newKeyVersion(randomBytes(4));
  const current = makeSigningKey(`ed25519:${version}`, randomBytes(32));
  const retired = existing.map((k) => ({ keyId: k.keyId, publicKeyBase64: k.publicKeyBase64, expiredTs: now }));
  // Old keys first written to the retired file, then the key file: a crash in between leaves
  // the old key both current and retired, which is harmless; the reverse order could lose it.
  writeAtomically(oldKeysFile, formatOldVerifyKeys([...previous, ...retired]));
  writeAtomically(keyFile, formatSigningKeyFile([current]));
  return { current, retired };
}

export class OwnKeys {
  /** The key that signs events, requests and the key document. */
  readonly current: SigningKey;
  private cached: { body: Buffer; validUntil: number; doc: Record<string, unknown> } | null = null;

  constructor(
    readonly serverName: string,
    readonly keys: readonly SigningKey[],
    readonly oldKeys: readonly OldVerifyKey[],
    private readonly validityMs: number,
  ) {
    if (keys.length === 0) throw new Error("no signing key");
    this.current = keys[0]!;
  }

  /** The signed key document as JSON bytes (cached until half its validity has passed). */
  keyDocument(now: number): { body: Buffer; doc: Record<string, unknown> } {
    if (this.cached && this.cached.validUntil - now > this.validityMs / 2) return this.cached;
    const validUntil = now + this.validityMs;
    const verifyKeys: Record<string, { key: string }> = {};
    for (const k of this.keys) verifyKeys[k.keyId] = { key: k.publicKeyBase64 };
    const oldVerifyKeys: Record<string, { key: string; expired_ts: number }> = {};
    for (const k of this.oldKeys) oldVerifyKeys[k.keyId] = { key: k.publicKeyBase64, expired_ts: k.expiredTs };
    let doc: Record<string, unknown> = {
      server_name: this.serverName,
      verify_keys: verifyKeys,
      old_verify_keys: oldVerifyKeys,
      valid_until_ts: validUntil,
    };
    // Every verify key signs the document: fetchers accept any one of them.
    for (const k of this.keys) doc = signJson(doc, this.serverName, k);
    this.cached = { body: Buffer.from(JSON.stringify(doc)), validUntil, doc };
    return this.cached;
  }
}
