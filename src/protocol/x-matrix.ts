/**
 * Federation request authentication: the `Authorization: X-Matrix …` header and the signed
 * request object `{method, uri, origin, destination, content?}` (spec: Server-Server API
 * "Request Authentication"; digest request-auth.md).
 *
 * Parsing follows RFC 9110 §11.4 credentials, which the spec points to: names are
 * case-insensitive, values are tokens or quoted strings, whitespace around `=` and commas and
 * empty list elements are tolerated (§5.6.1, §11.2 BWS). On top of RFC 9110, and as the spec
 * asks, unquoted values may contain `:` (old senders wrote `origin=example.org:8448`).
 * Sending is strict: exactly the form Synapse and the spec example use.
 */
import { canonicalJson, CanonicalJsonError } from "./canonical-json.js";
import { MatrixError, badJson } from "./errors.js";
import { parseServerName } from "./ids.js";
import { encodeBase64 } from "./base64.js";
import { signatureOf, verifySignaturesOver, type VerifierLookup } from "./json-signing.js";
import type { SigningKey } from "./signing-key.js";

export interface XMatrixAuth {
  /** Sending server name, validated against the server-name grammar. */
  readonly origin: string;
  /** Receiving server name; null when an old sender left it out. */
  readonly destination: string | null;
  /** Key ID, e.g. `ed25519:a_Obwu`. */
  readonly key: string;
  /** Unpadded base64 signature (decoded only when verifying). */
  readonly sig: string;
}

export type XMatrixParseResult = { readonly ok: true; readonly auth: XMatrixAuth } | { readonly ok: false; readonly error: MatrixError };

const SCHEME = "x-matrix";

/** No or foreign credentials: 401, per spec. */
function unauthorized(message: string): MatrixError {
  return new MatrixError(401, "M_UNAUTHORIZED", message);
}

/** Credentials that claim X-Matrix but cannot be read: 400 M_UNAUTHORIZED, as Synapse answers. */
function malformed(detail: string): MatrixError {
  return new MatrixError(400, "M_UNAUTHORIZED", `Malformed Authorization header: ${detail}`);
}

const isTchar = (c: string) => /^[!#$%&'*+\-.^_`|~0-9A-Za-z]$/.test(c);
// Unquoted values: RFC token characters, plus `:` (spec compatibility rule) and `/` `=`
// (token68 characters) so that an unquoted base64 signature from a sloppy sender still reads.
const isBareValueChar = (c: string) => isTchar(c) || c === ":" || c === "/" || c === "=";
const isWs = (c: string | undefined) => c === " " || c === "\t";

/** Canonical parameter name; `signature` is the spec's list name for what everyone sends as `sig`. */
function canonicalName(name: string): string {
  const lower = name.toLowerCase();
  return lower === "signature" ? "sig" : lower;
}

/**
 * Parses one Authorization header value. Unknown parameters are ignored (spec); a parameter
 * given twice, including `sig` together with `signature`, is refused (RFC 9110 §11.4: each name
 * MUST occur only once), since picking one would let a proxy and this server disagree.
 */
export function parseXMatrixHeader(header: string | null | undefined): XMatrixParseResult {
  if (header === null || header === undefined || header.trim() === "")
    return { ok: false, error: unauthorized("Missing Authorization header") };
  const h = header;
  let i = 0;
  while (i < h.length && isTchar(h[i]!)) i++;
  if (h.slice(0, i).toLowerCase() !== SCHEME) return { ok: false, error: unauthorized("Authorization scheme is not X-Matrix") };
  if (i === h.length) return { ok: false, error: malformed("no parameters") };
  if (!isWs(h[i])) return { ok: false, error: unauthorized("Authorization scheme is not X-Matrix") };

  const params = new Map<string, string>();
  for (;;) {
    while (isWs(h[i]) || h[i] === ",") i++;
    if (i >= h.length) break;
    const nameStart = i;
    while (i < h.length && isTchar(h[i]!)) i++;
    if (i === nameStart) return { ok: false, error: malformed(`unexpected character at offset ${i}`) };
    const name = canonicalName(h.slice(nameStart, i));
    while (isWs(h[i])) i++;
    if (h[i] !== "=") return { ok: false, error: malformed(`parameter ${name} has no value`) };
    i++;
    while (isWs(h[i])) i++;
    let value = "";
    if (h[i] === '"') {
      i++;
      let closed = false;
      while (i < h.length) {
        const c = h[i]!;
        const code = c.charCodeAt(0);
        if (c === '"') {
          closed = true;
          i++;
          break;
        }
        if (c === "\\") {
          const next = h[i + 1];
          if (next === undefined) break;
          const nc = next.charCodeAt(0);
          if ((nc < 0x20 && nc !== 0x09) || nc === 0x7f) return { ok: false, error: malformed("control character in value") };
          value += next;
          i += 2;
          continue;
        }
        if ((code < 0x20 && code !== 0x09) || code === 0x7f) return { ok: false, error: malformed("control character in value") };
        value += c;
        i++;
      }
      if (!closed) return { ok: false, error: malformed(`unterminated quoted value for ${name}`) };
    } else {
      const valueStart = i;
      while (i < h.length && isBareValueChar(h[i]!)) i++;
      value = h.slice(valueStart, i);
      if (value === "") return { ok: false, error: malformed(`parameter ${name} has an empty value`) };
    }
    while (isWs(h[i])) i++;
    if (i < h.length && h[i] !== ",") return { ok: false, error: malformed(`expected ',' after parameter ${name}`) };
    if (params.has(name)) return { ok: false, error: malformed(`parameter ${name} given more than once`) };
    params.set(name, value);
  }

  const origin = params.get("origin");
  const key = params.get("key");
  const sig = params.get("sig");
  if (origin === undefined) return { ok: false, error: malformed("missing origin") };
  if (key === undefined) return { ok: false, error: malformed("missing key") };
  if (sig === undefined) return { ok: false, error: malformed("missing sig") };
  if (!parseServerName(origin)) return { ok: false, error: malformed("origin is not a valid server name") };
  if (!/^[^:\s]+:\S+$/.test(key)) return { ok: false, error: malformed("key is not a key ID") };
  if (sig === "") return { ok: false, error: malformed("empty sig") };
  return { ok: true, auth: { origin, destination: params.get("destination") ?? null, key, sig } };
}

/**
 * Parses every Authorization header of a request (a sender may send one per key). Pass
 * `req.headersDistinct.authorization`: Node keeps only the first `Authorization` in `req.headers`.
 */
export function parseXMatrixHeaders(headers: string | readonly string[] | null | undefined): XMatrixParseResult[] {
  if (headers === null || headers === undefined) return [parseXMatrixHeader(headers)];
  const list = typeof headers === "string" ? [headers] : headers;
  return list.length === 0 ? [parseXMatrixHeader(undefined)] : list.map((h) => parseXMatrixHeader(h));
}

function quoted(name: string, value: string): string {
  // Old receivers split on commas and strip quotes without unescaping, so values must need
  // no escaping at all; valid server names, key IDs and base64 never do.
  if (/["\\,\x00-\x1f\x7f]/.test(value) || value === "") throw new Error(`X-Matrix ${name} cannot be sent: ${JSON.stringify(value)}`);
  return `${name}="${value}"`;
}

/** The header value in the strict form senders must use (spec example, Synapse's order). */
export function formatXMatrixHeader(auth: { origin: string; destination: string; key: string; sig: string }): string {
  return (
    "X-Matrix " +
    [quoted("origin", auth.origin), quoted("destination", auth.destination), quoted("key", auth.key), quoted("sig", auth.sig)].join(",")
  );
}

export interface RequestToSign {
  /** Upper-case HTTP method, exactly as sent. */
  readonly method: string;
  /** Request target as put on the wire: path from `/_matrix/` plus `?query` if any. */
  readonly uri: string;
  /** Server names before delegation (as in user IDs), not resolved hosts. */
  readonly origin: string;
  readonly destination: string;
  /** Parsed JSON body (a JSON value; checked when encoded); undefined (or null) for no body. */
  readonly content?: unknown;
}

export type SignedRequestObject = {
  method: string;
  uri: string;
  origin: string;
  destination: string;
  content?: unknown;
};

/**
 * The object whose canonical JSON is signed. `content` is left out when there is no body;
 * a JSON `null` body is left out too, because Synapse's `if content is not None` does so and
 * a signature must cover the same bytes on both sides.
 */
export function requestSigningObject(req: RequestToSign): SignedRequestObject {
  const out: SignedRequestObject = { method: req.method, uri: req.uri, origin: req.origin, destination: req.destination };
  if (req.content !== undefined && req.content !== null) out.content = req.content;
  return out;
}

function checkRequestToSign(req: Omit<RequestToSign, "content">): void {
  if (!/^[A-Z]+$/.test(req.method)) throw new Error(`HTTP method must be upper case: ${JSON.stringify(req.method)}`);
  if (!req.uri.startsWith("/")) throw new Error(`request uri must be a path starting with '/': ${JSON.stringify(req.uri)}`);
  if (!parseServerName(req.origin)) throw new Error(`origin is not a valid server name: ${JSON.stringify(req.origin)}`);
  if (!parseServerName(req.destination)) throw new Error(`destination is not a valid server name: ${JSON.stringify(req.destination)}`);
}

/** Signs a request; returns the `Authorization` header value. Throws on inputs that cannot be sent. */
export function signRequest(req: RequestToSign & { readonly key: SigningKey }): string {
  checkRequestToSign(req);
  const sig = signatureOf(requestSigningObject(req), req.key);
  return formatXMatrixHeader({ origin: req.origin, destination: req.destination, key: req.key.keyId, sig });
}

/**
 * The signed bytes of a request whose body is given as its canonical JSON (text or its UTF-8
 * bytes): the same bytes as `canonicalJson(requestSigningObject(...))`, built by concatenation.
 * `content` is the smallest key of the signed object ("content" < "destination" < "method" <
 * "origin" < "uri"), so the canonical object is `{"content":` + body + `,` + the rest without its
 * `{`. This lets a sender that already holds the canonical body (a 50-PDU transaction, tens of
 * kB) sign it without parsing it and encoding it a second time. A `null` body is left out, as in
 * requestSigningObject.
 */
export function requestSignedBytesFromCanonical(req: Omit<RequestToSign, "content">, canonicalContent: string | Buffer | undefined): Buffer {
  const rest = canonicalJson({ method: req.method, uri: req.uri, origin: req.origin, destination: req.destination });
  if (canonicalContent === undefined || canonicalContent.length === 0) return Buffer.from(rest, "utf8");
  if (typeof canonicalContent === "string") {
    if (canonicalContent === "null") return Buffer.from(rest, "utf8");
    return Buffer.from(`{"content":${canonicalContent},${rest.slice(1)}`, "utf8");
  }
  if (canonicalContent.length === 4 && canonicalContent.toString("latin1") === "null") return Buffer.from(rest, "utf8");
  return Buffer.concat([CONTENT_PREFIX, canonicalContent, Buffer.from(`,${rest.slice(1)}`, "utf8")]);
}
const CONTENT_PREFIX = Buffer.from('{"content":', "utf8");

/**
 * Like signRequest, for a body the caller already holds as canonical JSON (text or UTF-8 bytes;
 * the caller guarantees it is canonical: the signature covers exactly it, and a receiver verifies
 * it against the canonical form of what it parses). Returns the `Authorization` header value.
 */
export function signRequestCanonical(req: Omit<RequestToSign, "content"> & { readonly key: SigningKey }, canonicalContent: string | Buffer | undefined): string {
  checkRequestToSign(req);
  const sig = encodeBase64(req.key.signer.sign(requestSignedBytesFromCanonical(req, canonicalContent)));
  return formatXMatrixHeader({ origin: req.origin, destination: req.destination, key: req.key.keyId, sig });
}

/** The request as received. `destination` is not taken from here: it is always our own name. */
export interface ReceivedRequest {
  /** `req.method`. */
  readonly method: string;
  /** The raw request target, `req.originalUrl`; never a re-encoded path. */
  readonly uri: string;
  /** Body parsed from the raw text (parseStrictJson); undefined when there is none. */
  readonly content?: unknown;
}

export type RequestVerification =
  | { readonly ok: true; readonly origin: string; readonly keyId: string }
  | { readonly ok: false; readonly reason: string; readonly error: MatrixError };

function fail(error: MatrixError): RequestVerification {
  return { ok: false, reason: error.message, error };
}

/**
 * What can be checked of several Authorization headers without any key: they name one origin
 * (several headers are several keys of one server), are addressed to us (or to nobody), give
 * one signature per key ID, and are not too many. Run before keys are fetched, so that one
 * request cannot make Gatehouse fetch keys of several servers (issue #12: three slow origins
 * held a request for 30 s).
 */
export function checkAuthHeaders(list: readonly XMatrixAuth[], ourServerName: string): MatrixError | null {
  if (list.length > MAX_AUTHORIZATION_HEADERS) return malformed(`more than ${MAX_AUTHORIZATION_HEADERS} Authorization headers`);
  const origin = list[0]?.origin;
  const signatures = new Map<string, string>();
  for (const a of list) {
    if (a.origin !== origin) return malformed("Authorization headers name different origins");
    if (a.destination !== null && a.destination !== ourServerName)
      return unauthorized(`Request is addressed to ${JSON.stringify(a.destination)}, not to this server`);
    const seen = signatures.get(a.key);
    if (seen !== undefined && seen !== a.sig) return malformed(`two signatures for key ${a.key}`);
    signatures.set(a.key, a.sig);
  }
  return null;
}

/** Keys one request may name (a server rotating keys signs with two or three at most). */
export const MAX_AUTHORIZATION_HEADERS = 8;

/**
 * Verifies a request's X-Matrix signature(s). Several headers (one per key) must agree on the
 * origin; one verifiable signature by a known key suffices, and a known key whose signature is
 * wrong fails the request. The lookup decides which keys are usable for requests (currently
 * valid `verify_keys` only; the clock lives there). Destination: a header naming another server
 * is refused with 401 (spec MUST); the signed object always uses `ourServerName`, so a header
 * without `destination` still verifies only if the sender signed for us.
 */
export function verifyRequest(
  auth: XMatrixAuth | readonly XMatrixAuth[],
  request: ReceivedRequest,
  lookup: VerifierLookup,
  ourServerName: string,
): RequestVerification {
  const list: readonly XMatrixAuth[] = Array.isArray(auth) ? auth : [auth as XMatrixAuth];
  const first = list[0];
  if (!first) return fail(unauthorized("Missing Authorization header"));
  const origin = first.origin;
  const headerError = checkAuthHeaders(list, ourServerName);
  if (headerError) return fail(headerError);
  const signatures: Record<string, string> = Object.create(null);
  for (const a of list) signatures[a.key] = a.sig;
  // A body with floats or huge integers has no canonical form, so no signature can cover it.
  // Encoded once: the signed object is built around this text (a /send body can be tens of kB).
  let content: string | undefined;
  try {
    if (request.content !== undefined) content = canonicalJson(request.content);
  } catch (e) {
    if (e instanceof CanonicalJsonError) return fail(badJson(`Request body cannot be verified: ${e.message}`));
    throw e;
  }
  const check = verifySignaturesOver(
    () => requestSignedBytesFromCanonical({ method: request.method, uri: request.uri, origin, destination: ourServerName }, content),
    { [origin]: signatures },
    origin,
    lookup,
  );
  if (!check.ok) return fail(unauthorized(`Invalid X-Matrix signature: ${check.reason}`));
  return { ok: true, origin, keyId: check.keyId };
}

/** Parse and verify in one step from raw header value(s); the first parse failure wins. */
export function authenticateRequest(
  headers: string | readonly string[] | null | undefined,
  request: ReceivedRequest,
  lookup: VerifierLookup,
  ourServerName: string,
): RequestVerification {
  const auths: XMatrixAuth[] = [];
  for (const parsed of parseXMatrixHeaders(headers)) {
    if (!parsed.ok) return fail(parsed.error);
    auths.push(parsed.auth);
  }
  return verifyRequest(auths, request, lookup, ourServerName);
}
