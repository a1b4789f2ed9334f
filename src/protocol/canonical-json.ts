/**
 * Canonical JSON (spec appendix "Canonical JSON"): the shortest UTF-8 encoding, object keys
 * sorted by Unicode code point, integers only within ±(2^53−1), no floats.
 *
 * Written by hand on purpose: JSON.stringify orders integer-like keys first, Array#sort
 * compares UTF-16 code units, and another-json mis-escapes control characters.
 */

declare global {
  interface String {
    /** ES2024, present in Node 20; declared here because the lib target is ES2023. */
    isWellFormed(): boolean;
  }
}

export class CanonicalJsonError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CanonicalJsonError";
  }
}

export const MAX_SAFE_INT = Number.MAX_SAFE_INTEGER; // 2^53 − 1

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

const SURROGATE = /[\uD800-\uDFFF]/;

/**
 * Code-point order. UTF-16 order differs from it only when a surrogate (astral character) is
 * compared with a BMP character in U+E000–U+FFFF, so the plain comparison is used unless
 * a key contains a surrogate.
 */
function compareCodePoints(a: string, b: string): number {
  const ia = a[Symbol.iterator]();
  const ib = b[Symbol.iterator]();
  for (;;) {
    const ca = ia.next();
    const cb = ib.next();
    if (ca.done) return cb.done ? 0 : -1;
    if (cb.done) return 1;
    const d = ca.value.codePointAt(0)! - cb.value.codePointAt(0)!;
    if (d !== 0) return d;
  }
}

export function sortKeysByCodePoint(keys: string[]): string[] {
  for (const k of keys) {
    if (SURROGATE.test(k)) return keys.sort(compareCodePoints);
  }
  return keys.sort();
}

/** Where a value sits, for error messages; null while paths are not tracked (see canonicalJson). */
type Path = string | null;
const where = (path: Path): string => path || "<root>";

/**
 * Strings JSON.stringify emits unchanged between quotes: printable ASCII without `"` and `\`.
 * Almost every key and most values of an event are such strings, and skipping the
 * JSON.stringify call for them is half the cost of encoding a 50-PDU transaction body.
 */
const PLAIN_ASCII = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

function encodeString(s: string, path: Path): string {
  if (PLAIN_ASCII.test(s)) return '"' + s + '"';
  if (!s.isWellFormed()) throw new CanonicalJsonError(`lone surrogate in string at ${where(path)}`);
  // JSON.stringify escapes exactly `"`, `\` and C0 controls (\b \t \n \f \r or lower-case \u00xx),
  // emits everything else raw: the canonical form once lone surrogates are excluded.
  return JSON.stringify(s);
}

function encodeNumber(n: number, path: Path): string {
  if (!Number.isFinite(n)) throw new CanonicalJsonError(`non-finite number at ${where(path)}`);
  if (!Number.isInteger(n)) throw new CanonicalJsonError(`non-integer number ${n} at ${where(path)}`);
  if (n > MAX_SAFE_INT || n < -MAX_SAFE_INT) throw new CanonicalJsonError(`integer ${n} out of range ±(2^53−1) at ${where(path)}`);
  return n === 0 ? "0" : String(n); // -0 → "0"
}

/**
 * `path` null: no path strings are built (they are only needed for an error message, and
 * building one per value made encoding about twice as slow); canonicalJson re-runs with paths
 * when an error is thrown.
 */
function encode(value: unknown, path: Path): string {
  switch (typeof value) {
    case "string":
      return encodeString(value, path);
    case "number":
      return encodeNumber(value, path);
    case "boolean":
      return value ? "true" : "false";
    case "object": {
      if (value === null) return "null";
      if (Array.isArray(value)) {
        let out = "[";
        for (let i = 0; i < value.length; i++) {
          if (i > 0) out += ",";
          out += encode(value[i], path === null ? null : `${path}[${i}]`);
        }
        return out + "]";
      }
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) throw new CanonicalJsonError(`unsupported object type at ${where(path)}`);
      const obj = value as Record<string, unknown>;
      const keys = sortKeysByCodePoint(Object.keys(obj));
      let out = "{";
      let first = true;
      for (const k of keys) {
        const v = obj[k];
        if (v === undefined) continue; // like JSON.stringify: absent
        if (!first) out += ",";
        first = false;
        out += encodeString(k, path) + ":" + encode(v, path === null ? null : path ? `${path}.${k}` : k);
      }
      return out + "}";
    }
    default:
      throw new CanonicalJsonError(`unsupported value of type ${typeof value} at ${where(path)}`);
  }
}

/** Canonical JSON text of a value; throws CanonicalJsonError for values canonical JSON cannot hold. */
export function canonicalJson(value: unknown): string {
  try {
    return encode(value, null);
  } catch (e) {
    // Throws the same error with the path of the offending value in its message.
    if (e instanceof CanonicalJsonError) return encode(value, "");
    throw e;
  }
}

/** Canonical JSON as the UTF-8 bytes that are signed and hashed. */
export function canonicalJsonBytes(value: unknown): Buffer {
  return Buffer.from(canonicalJson(value), "utf8");
}

/**
 * Scans raw JSON text for number tokens that JSON.parse would silently turn into something
 * else: fractions and exponents (`1.0` → 1, `1e3` → 1000) and integers outside ±(2^53−1).
 * Room versions 6+ reject such events, and the check must see the text, not the parsed value.
 * Returns a description of the first offending token, or null.
 */
export function findNonCanonicalNumber(text: string): string | null {
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      i++;
      while (i < n) {
        const d = text.charCodeAt(i);
        if (d === 0x5c /* \ */) i += 2;
        else if (d === 0x22) break;
        else i++;
      }
      i++;
      continue;
    }
    if (c === 0x2d /* - */ || (c >= 0x30 && c <= 0x39)) {
      const start = i;
      i++;
      while (i < n) {
        const d = text.charCodeAt(i);
        if ((d >= 0x30 && d <= 0x39) || d === 0x2e || d === 0x65 || d === 0x45 || d === 0x2b || d === 0x2d) i++;
        else break;
      }
      const token = text.slice(start, i);
      if (/[.eE]/.test(token)) return `number ${token} is not an integer`;
      // Beyond 2^53 every integer rounds to a double above MAX_SAFE_INT, so this comparison is exact.
      if (token.length > 15 && Math.abs(Number(token)) > MAX_SAFE_INT) return `integer ${token} is out of range`;
      continue;
    }
    i++;
  }
  return null;
}

/**
 * JSON.parse for text that must be canonical-compatible (room v6+ events, signed requests):
 * rejects floats, exponents and out-of-range integers that JSON.parse would accept.
 */
export function parseStrictJson(text: string): JsonValue {
  const value = JSON.parse(text) as JsonValue;
  const problem = findNonCanonicalNumber(text);
  if (problem) throw new CanonicalJsonError(problem);
  return value;
}
