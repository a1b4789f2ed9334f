/**
 * Unpadded base64 (spec appendix "Unpadded Base64"), standard and URL-safe alphabets.
 * Decoders accept input with or without padding but reject characters outside the alphabet,
 * because Buffer.from(…, "base64") silently skips them.
 */

const STANDARD = /^[A-Za-z0-9+/]*={0,2}$/;
const URL_SAFE = /^[A-Za-z0-9_-]*={0,2}$/;

export function encodeBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64").replace(/=+$/, "");
}

export function encodeBase64Url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64url");
}

function validLength(s: string): boolean {
  const unpadded = s.replace(/=+$/, "");
  if (unpadded.length % 4 === 1) return false;
  if (s.length !== unpadded.length && s.length % 4 !== 0) return false;
  return true;
}

/** Decodes standard-alphabet base64, padded or not; null when the text is not base64. */
export function decodeBase64(s: string): Buffer | null {
  if (!STANDARD.test(s) || !validLength(s)) return null;
  return Buffer.from(s, "base64");
}

/** Decodes URL-safe base64, padded or not; null when the text is not URL-safe base64. */
export function decodeBase64Url(s: string): Buffer | null {
  if (!URL_SAFE.test(s) || !validLength(s)) return null;
  return Buffer.from(s, "base64url");
}
