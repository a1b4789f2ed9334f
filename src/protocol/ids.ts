/**
 * Matrix identifiers (spec appendix "Identifier Grammar": server names, user IDs, room IDs,
 * room aliases, event IDs; room versions for the event/room ID formats) and the PDU size
 * limits (Client-Server API "Size limits").
 *
 * Parsers return null instead of throwing: an identifier from the network being malformed is
 * expected, and the caller knows which field it came from and so which error to send.
 * Identity is always the exact string: nothing here normalises case or ports.
 */
import { canonicalJson, CanonicalJsonError } from "./canonical-json.js";
import { badJson, tooLarge, type MatrixError } from "./errors.js";
import type { RoomVersion } from "./room-versions.js";

// ---------------------------------------------------------------------------------------------
// Server names

export type ServerNameKind = "dns" | "ipv4" | "ipv6";

export interface ServerName {
  /** Hostname as written. IPv6 literals keep their brackets, as ACL globs and Host headers use them. */
  readonly host: string;
  /** Explicit port, 1–65535; absent when the name has none (discovery then decides, usually 8448). */
  readonly port?: number;
  readonly kind: ServerNameKind;
}

/** Spec: dns-name = 1*255dns-char. */
export const MAX_DNS_NAME_LENGTH = 255;

// Labels joined by single dots (Synapse's VALID_HOST_REGEX shape). The bare grammar would also
// admit "evil.com." and "a..b"; a trailing-dot twin of a name resolves to the same host in DNS
// but is a different string, so accepting it would let a server slip past an ACL on "evil.com".
const DNS_NAME = /^[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*$/;
const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
// Grammar: IPv6address = 2*45IPv6char; the character check also keeps zone IDs ("%eth0") out,
// which node's isIPv6 would otherwise accept.
const IPV6_CHARS = /^[0-9A-Fa-f:.]{2,45}$/;
const PORT = /^[0-9]{1,5}$/;

function parsePort(text: string): number | null {
  if (!PORT.test(text)) return null;
  const port = Number(text);
  return port >= 1 && port <= 65535 ? port : null;
}

/** Parses `host[:port]` per the spec grammar; null when it is not a valid server name. */
/**
 * RFC 4291 §2.2 text forms: eight 1–4 digit hex groups, at most one `::` standing for one or
 * more zero groups, optionally ending in a dotted IPv4 address (two groups). Written here rather
 * than node:net's isIPv6 to keep the protocol core free of I/O modules.
 */
export function isIPv6Address(address: string): boolean {
  let text = address;
  let extraGroups = 0;
  const lastColon = text.lastIndexOf(":");
  if (lastColon >= 0 && text.includes(".", lastColon)) {
    const v4 = text.slice(lastColon + 1);
    if (!isIPv4Address(v4)) return false;
    text = text.slice(0, lastColon + 1) + "0";
    extraGroups = 1;
  }
  const halves = text.split("::");
  if (halves.length > 2) return false;
  const group = /^[0-9A-Fa-f]{1,4}$/;
  const parse = (part: string): number | null => {
    if (part === "") return 0;
    const groups = part.split(":");
    return groups.every((g) => group.test(g)) ? groups.length : null;
  };
  if (halves.length === 1) {
    const n = parse(halves[0]!);
    return n !== null && halves[0] !== "" && n + extraGroups === 8;
  }
  const left = parse(halves[0]!);
  const right = parse(halves[1]!);
  return left !== null && right !== null && left + right + extraGroups <= 7;
}

function isIPv4Address(text: string): boolean {
  const parts = text.split(".");
  return parts.length === 4 && parts.every((p) => /^(0|[1-9]\d{0,2})$/.test(p) && Number(p) <= 255);
}

export function parseServerName(name: string): ServerName | null {
  if (typeof name !== "string" || name === "") return null;
  let host: string;
  let portText: string | undefined;
  let kind: ServerNameKind;
  if (name.startsWith("[")) {
    const close = name.indexOf("]");
    if (close < 0) return null;
    host = name.slice(0, close + 1);
    const rest = name.slice(close + 1);
    if (rest !== "") {
      if (!rest.startsWith(":")) return null;
      portText = rest.slice(1);
    }
    const address = host.slice(1, -1);
    if (!IPV6_CHARS.test(address) || !isIPv6Address(address)) return null;
    kind = "ipv6";
  } else {
    // Outside brackets a hostname holds no colon, so the first one starts the port.
    const colon = name.indexOf(":");
    host = colon < 0 ? name : name.slice(0, colon);
    if (colon >= 0) portText = name.slice(colon + 1);
    const quad = IPV4.exec(host);
    if (quad) {
      // Four dotted numbers are an IPv4 literal by the grammar; "999.1.1.1" is a broken literal,
      // not a DNS name (no TLD is all digits), so it is refused rather than reclassified.
      if (quad.slice(1).some((octet) => Number(octet) > 255)) return null;
      kind = "ipv4";
    } else {
      if (host.length > MAX_DNS_NAME_LENGTH || !DNS_NAME.test(host)) return null;
      kind = "dns";
    }
  }
  if (portText === undefined) return { host, kind };
  const port = parsePort(portText);
  return port === null ? null : { host, port, kind };
}

export function isValidServerName(name: string): boolean {
  return parseServerName(name) !== null;
}

// ---------------------------------------------------------------------------------------------
// Common identifier pieces

/** Every identifier (user, room, alias, event) is limited to 255 bytes including sigil and domain. */
export const MAX_ID_BYTES = 255;

export function utf8Length(s: string): number {
  return Buffer.byteLength(s, "utf8");
}

/**
 * Historical/opaque localparts: any non-surrogate code points except `:` and NUL (the colon is
 * excluded by splitting at the first one). Lone surrogates cannot be encoded as UTF-8.
 */
function isOpaqueLocalpart(localpart: string): boolean {
  return !localpart.includes("\0") && localpart.isWellFormed();
}

interface Split {
  readonly localpart: string;
  readonly serverName: string;
  readonly server: ServerName;
}

/** `<sigil>localpart:server_name`, split at the first colon (localparts never contain one). */
function splitSigilled(id: unknown, sigil: string): Split | null {
  if (typeof id !== "string" || !id.startsWith(sigil)) return null;
  if (utf8Length(id) > MAX_ID_BYTES) return null;
  const colon = id.indexOf(":");
  if (colon < 0) return null;
  const localpart = id.slice(sigil.length, colon);
  const serverName = id.slice(colon + 1);
  const server = parseServerName(serverName);
  if (!server || !isOpaqueLocalpart(localpart)) return null;
  return { localpart, serverName, server };
}

// ---------------------------------------------------------------------------------------------
// User IDs

export interface UserId extends Split {
  /**
   * False for historical IDs the spec calls non-compliant (empty localpart, or characters outside
   * U+0021–U+007E): they must be accepted in events but should not be forwarded to clients
   * outside an event context.
   */
  readonly compliant: boolean;
}

/** The v1.8+ localpart grammar, required for IDs we mint. */
const STRICT_LOCALPART = /^[a-z0-9._=\-/+]+$/;
const COMPLIANT_LOCALPART = /^[\x21-\x7e]+$/;

export interface UserIdOptions {
  /**
   * true: the current grammar `[a-z0-9._=/+-]+`, for IDs this server creates. Default false:
   * the historical grammar the spec says servers MUST accept over federation (any code points
   * except `:` and NUL, even empty).
   */
  readonly strict?: boolean;
}

export function parseUserId(id: string, options: UserIdOptions = {}): UserId | null {
  const split = splitSigilled(id, "@");
  if (!split) return null;
  if (options.strict && !STRICT_LOCALPART.test(split.localpart)) return null;
  return { ...split, compliant: COMPLIANT_LOCALPART.test(split.localpart) };
}

export function isValidUserId(id: string, options: UserIdOptions = {}): boolean {
  return parseUserId(id, options) !== null;
}

/** Server name of a user ID, or undefined when the ID is malformed (so equality checks fail). */
export function serverOfUserId(id: string): string | undefined {
  return parseUserId(id)?.serverName;
}

/** Whether `localpart` can be used to mint a user ID on `serverName` (grammar and 255-byte cap). */
export function isValidNewLocalpart(localpart: string, serverName: string): boolean {
  return isValidUserId(`@${localpart}:${serverName}`, { strict: true });
}

// ---------------------------------------------------------------------------------------------
// Room IDs

/** `!` + 43 URL-safe base64 characters: a v12 room ID (the create event's reference hash). */
const HASH_ROOM_ID = /^![A-Za-z0-9_-]{43}$/;

export type RoomId =
  /** v12+: `!` + the create event's reference hash; no server name. */
  | { readonly kind: "hash"; readonly hash: string }
  /** Before v12: `!opaque:server_name`; the server carries no authority over the room. */
  | ({ readonly kind: "server" } & Split);

/**
 * Parses a room ID. With a room version, only the format that version uses is accepted;
 * without one, either format is.
 */
export function parseRoomId(id: string, version?: RoomVersion): RoomId | null {
  if (typeof id !== "string") return null;
  if (HASH_ROOM_ID.test(id)) {
    if (version && !version.roomIdIsCreateEventHash) return null;
    return { kind: "hash", hash: id.slice(1) };
  }
  if (version?.roomIdIsCreateEventHash) return null;
  const split = splitSigilled(id, "!");
  return split ? { kind: "server", ...split } : null;
}

export function isValidRoomId(id: string, version?: RoomVersion): boolean {
  return parseRoomId(id, version) !== null;
}

/** Server name inside a pre-v12 room ID; undefined for v12 room IDs and malformed ones. */
export function serverOfRoomId(id: string): string | undefined {
  const parsed = parseRoomId(id);
  return parsed?.kind === "server" ? parsed.serverName : undefined;
}

// ---------------------------------------------------------------------------------------------
// Event IDs

const HASH_EVENT_ID_BASE64 = /^\$[A-Za-z0-9+/]{43}$/;
const HASH_EVENT_ID_BASE64URL = /^\$[A-Za-z0-9_-]{43}$/;

export type EventId =
  /** v3+: `$` + the reference hash (standard base64 in v3, URL-safe from v4). */
  | { readonly kind: "hash"; readonly hash: string }
  /** v1–v2: `$opaque:server_name`, chosen by the origin server. */
  | ({ readonly kind: "server" } & Split);

/**
 * Parses an event ID. With a room version, only that version's format is accepted; without
 * one, any format is. The last base64 character is not checked for zero padding bits: such an
 * ID cannot name a real event, and it fails as an unknown reference later anyway.
 */
export function parseEventId(id: string, version?: RoomVersion): EventId | null {
  if (typeof id !== "string") return null;
  const format = version?.eventIdFormat;
  if (format !== "server-chosen") {
    const standard = HASH_EVENT_ID_BASE64.test(id);
    const urlSafe = HASH_EVENT_ID_BASE64URL.test(id);
    if (format === "reference-hash-base64" ? standard : format === "reference-hash-base64url" ? urlSafe : standard || urlSafe)
      return { kind: "hash", hash: id.slice(1) };
    if (format !== undefined) return null;
  }
  const split = splitSigilled(id, "$");
  return split ? { kind: "server", ...split } : null;
}

export function isValidEventId(id: string, version?: RoomVersion): boolean {
  return parseEventId(id, version) !== null;
}

/** Server name inside a v1–v2 event ID; undefined for hash IDs and malformed ones. */
export function serverOfEventId(id: string): string | undefined {
  const parsed = parseEventId(id);
  return parsed?.kind === "server" ? parsed.serverName : undefined;
}

// ---------------------------------------------------------------------------------------------
// Room aliases

export type RoomAlias = Split;

/** `#localpart:server_name`; the localpart is any non-surrogate code points except `:` and NUL. */
export function parseRoomAlias(alias: string): RoomAlias | null {
  return splitSigilled(alias, "#");
}

export function isValidRoomAlias(alias: string): boolean {
  return parseRoomAlias(alias) !== null;
}

export function serverOfRoomAlias(alias: string): string | undefined {
  return parseRoomAlias(alias)?.serverName;
}

// ---------------------------------------------------------------------------------------------
// PDU size limits

/** Whole PDU in federation format, signatures included, as canonical JSON. */
export const MAX_PDU_BYTES = 65536;
/** Per-field cap on the keys the spec lists. */
export const MAX_PDU_FIELD_BYTES = 255;
export const SIZE_LIMITED_PDU_FIELDS = ["sender", "room_id", "event_id", "state_key", "type"] as const;

/**
 * Checks the per-field byte limits. A violation is 413 M_TOO_LARGE, like the whole-PDU limit:
 * the spec treats both as one "size limits" rule (events exceeding them are rejected, never
 * truncated) and Synapse raises the same EventSizeError for both. Non-string values are left to
 * the event-format validator, which owns type errors.
 */
export function checkPduFieldSizes(pdu: Readonly<Record<string, unknown>>): MatrixError | null {
  for (const field of SIZE_LIMITED_PDU_FIELDS) {
    const value = pdu[field];
    if (typeof value === "string" && utf8Length(value) > MAX_PDU_FIELD_BYTES)
      return tooLarge(`PDU field ${field} is ${utf8Length(value)} bytes, the limit is ${MAX_PDU_FIELD_BYTES}`);
  }
  return null;
}

/** Canonical JSON size of the PDU exactly as given (pass it with its signatures). */
export function pduByteLength(pdu: Readonly<Record<string, unknown>>): number {
  return utf8Length(canonicalJson(pdu));
}

/** The members of a PDU its content hash leaves out (event-hashing.ts contentHashInput), in code-point order. */
const OUTSIDE_CONTENT_HASH = ["hashes", "signatures", "unsigned"] as const;

/**
 * pduByteLength from `contentBytes`, the byte length of the PDU's content-hash input (its
 * canonical JSON without `hashes`, `signatures` and `unsigned`), which the inbound verifier
 * encodes anyway: the whole PDU's canonical JSON is that object with those members added, and
 * for a length the members' order does not matter. Each is encoded on its own as `{"k":v}` (two
 * braces fewer than its member text, one comma more when members precede it), so a value that
 * cannot be encoded throws the same CanonicalJsonError, path included, as pduByteLength.
 */
export function pduByteLengthFromContent(pdu: Readonly<Record<string, unknown>>, contentBytes: number): number {
  let size = contentBytes;
  let members = contentBytes > 2; // "{}" has none
  for (const k of OUTSIDE_CONTENT_HASH) {
    const v = pdu[k];
    if (v === undefined) continue;
    size += utf8Length(canonicalJson({ [k]: v })) - 2 + (members ? 1 : 0);
    members = true;
  }
  return size;
}

/**
 * Checks the 64 KiB whole-PDU limit (413 M_TOO_LARGE). A PDU that has no canonical JSON form
 * at all (floats, out-of-range integers) cannot be measured, signed or hashed: 400 M_BAD_JSON.
 * `contentBytes`: the length of the PDU's content-hash input when the caller has encoded it
 * (pduByteLengthFromContent); else the whole PDU is encoded.
 */
export function checkPduSize(pdu: Readonly<Record<string, unknown>>, contentBytes?: number): MatrixError | null {
  let size: number;
  try {
    size = contentBytes === undefined ? pduByteLength(pdu) : pduByteLengthFromContent(pdu, contentBytes);
  } catch (e) {
    if (e instanceof CanonicalJsonError) return badJson(`PDU is not representable as canonical JSON: ${e.message}`);
    throw e;
  }
  return size > MAX_PDU_BYTES ? tooLarge(`PDU is ${size} bytes, the limit is ${MAX_PDU_BYTES}`) : null;
}

/** Both limits; the cheap field checks run first. */
export function checkPduLimits(pdu: Readonly<Record<string, unknown>>, contentBytes?: number): MatrixError | null {
  return checkPduFieldSizes(pdu) ?? checkPduSize(pdu, contentBytes);
}
