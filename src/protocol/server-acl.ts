/**
 * `m.room.server_acl` evaluation (spec: event schema m.room.server_acl, Server-Server API
 * "Server Access Control Lists", appendix "Glob-style matching"; digest acl.md).
 *
 * An ACL is checked on every protected request and on every PDU of a `/send`, so content is
 * compiled once into a matcher: literal patterns become a set lookup and globs are matched by a
 * linear-backtrack matcher, so a hostile `*a*a*a*…b` pattern in room state costs O(n·m), never
 * the exponential time a naive regex translation can take.
 */
import { forbidden, type MatrixError } from "./errors.js";
import { parseServerName } from "./ids.js";

/** Synapse's wording; senders only log it. */
export const ACL_DENIED_MESSAGE = "Server is banned from room";

export interface ServerAcl {
  /** False only when the content says exactly `false` (missing or non-boolean means true). */
  readonly allowIpLiterals: boolean;
  /** The string patterns kept from `allow` / `deny` (non-strings dropped), as written. */
  readonly allow: readonly string[];
  readonly deny: readonly string[];
  /**
   * Evaluates a host that has no port (the spec's steps 2–5). Useful when the caller already
   * split the server name; most callers want `allowsServer`.
   */
  allowsHost(host: string): boolean;
  /**
   * Evaluates a full server name as it appears in X-Matrix `origin`: the port is removed first.
   * A string that is not a valid server name is denied; authenticated origins always are valid.
   */
  allowsServer(serverName: string): boolean;
}

const STAR = -1;
const ANY = -2;

/** ASCII-only case folding: server names are ASCII, and full Unicode folding would let e.g. the
 *  Kelvin sign in a pattern match "k". Matches Synapse for every valid server name. */
function foldAscii(s: string): string {
  return s.replace(/[A-Z]+/g, (m) => m.toLowerCase());
}

function codePoints(s: string): number[] {
  const out: number[] = [];
  for (const ch of s) out.push(ch.codePointAt(0)!);
  return out;
}

/** Pattern as code points with wildcard markers; runs of `*` collapse to one (same language). */
function compileGlob(pattern: string): number[] {
  const out: number[] = [];
  for (const cp of codePoints(foldAscii(pattern))) {
    const token = cp === 0x2a ? STAR : cp === 0x3f ? ANY : cp;
    if (token === STAR && out[out.length - 1] === STAR) continue;
    out.push(token);
  }
  return out;
}

/**
 * Anchored glob match. On a mismatch only the most recent `*` is retried one character further:
 * any earlier `*` could only absorb text the later one can absorb too, so one resume point is
 * enough and the worst case is O(pattern × text).
 */
function globMatches(pattern: readonly number[], text: readonly number[]): boolean {
  let p = 0;
  let t = 0;
  let starP = -1;
  let starT = 0;
  while (t < text.length) {
    const token = pattern[p];
    if (token !== undefined && (token === ANY || token === text[t])) {
      p++;
      t++;
    } else if (token === STAR) {
      starP = p++;
      starT = t;
    } else if (starP >= 0) {
      p = starP + 1;
      t = ++starT;
    } else {
      return false;
    }
  }
  while (pattern[p] === STAR) p++;
  return p === pattern.length;
}

interface CompiledList {
  readonly matchAll: boolean;
  readonly literals: ReadonlySet<string>;
  readonly globs: readonly (readonly number[])[];
}

function compileList(patterns: readonly string[]): CompiledList {
  let matchAll = false;
  const literals = new Set<string>();
  const globs: number[][] = [];
  for (const pattern of patterns) {
    if (!/[*?]/.test(pattern)) {
      literals.add(foldAscii(pattern));
      continue;
    }
    const glob = compileGlob(pattern);
    if (glob.length === 1 && glob[0] === STAR) matchAll = true;
    else globs.push(glob);
  }
  return { matchAll, literals, globs };
}

function listMatches(list: CompiledList, foldedHost: string, hostPoints: () => number[]): boolean {
  if (list.matchAll || list.literals.has(foldedHost)) return true;
  if (list.globs.length === 0) return false;
  const text = hostPoints();
  return list.globs.some((glob) => globMatches(glob, text));
}

/**
 * The spec's IP-literal test on a port-less host: bracketed means IPv6, four dotted decimal
 * groups mean IPv4. Out-of-range quads ("999.1.1.1") count as literals too, so a malformed
 * literal cannot pass where a well-formed one would be denied.
 */
export function isIpLiteralHost(host: string): boolean {
  return host.startsWith("[") || /^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** Robust reading (Synapse): a non-array list is `[]`, non-string entries are ignored. */
function stringList(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : [];
}

function build(content: Readonly<Record<string, unknown>>): ServerAcl {
  const allowIpLiterals = content.allow_ip_literals !== false;
  const allow = stringList(content.allow);
  const deny = stringList(content.deny);
  const allowList = compileList(allow);
  const denyList = compileList(deny);
  const allowsHost = (host: string): boolean => {
    if (!allowIpLiterals && isIpLiteralHost(host)) return false;
    const folded = foldAscii(host);
    let points: number[] | undefined;
    const hostPoints = () => (points ??= codePoints(folded));
    // Deny before allow: a server in both lists is denied.
    if (listMatches(denyList, folded, hostPoints)) return false;
    return listMatches(allowList, folded, hostPoints);
  };
  return Object.freeze({
    allowIpLiterals,
    allow: Object.freeze(allow),
    deny: Object.freeze(deny),
    allowsHost,
    allowsServer(serverName: string): boolean {
      const parsed = parseServerName(serverName);
      return parsed !== null && allowsHost(parsed.host);
    },
  });
}

/** The matcher for a room with no `m.room.server_acl` in its current state: everyone is allowed. */
export const NO_ACL: ServerAcl = Object.freeze({
  allowIpLiterals: true,
  allow: Object.freeze(["*"]),
  deny: Object.freeze([]),
  allowsHost: () => true,
  allowsServer: () => true,
});

// Contents from the state cache are shared, immutable objects, so the object identity is a
// sound cache key and the entry dies with the state that held it.
const compiled = new WeakMap<object, ServerAcl>();

/**
 * Compiles the `content` of the room's current `m.room.server_acl` event. `null`/`undefined`
 * means the room has no such event (allow everyone). Any other non-object content, like a
 * redacted event's `{}`, has no `allow` list and therefore denies everyone, as the spec says.
 * Results are memoised per content object; do not mutate content after compiling it.
 */
export function compileServerAcl(content: unknown): ServerAcl {
  if (content === null || content === undefined) return NO_ACL;
  if (typeof content !== "object" || Array.isArray(content)) return build({});
  let acl = compiled.get(content);
  if (!acl) {
    acl = build(content as Record<string, unknown>);
    compiled.set(content, acl);
  }
  return acl;
}

/** One-shot evaluation: is `serverName` (port allowed) permitted by this ACL content? */
export function serverAllowedByAcl(content: unknown, serverName: string): boolean {
  return compileServerAcl(content).allowsServer(serverName);
}

/** 403 M_FORBIDDEN when the server is denied, else null. The same body goes into a `/send` `pdus` entry. */
export function checkServerAcl(acl: ServerAcl, serverName: string): MatrixError | null {
  return acl.allowsServer(serverName) ? null : forbidden(ACL_DENIED_MESSAGE);
}

/**
 * Federation endpoints that MUST apply the ACL of the room named in the request (spec list,
 * including the v1 send_join/send_leave that v1.18 removed; `timestamp_to_event` is Synapse's
 * addition). `/send` is not here: it is checked per PDU and per room-scoped EDU instead.
 */
export const ACL_PROTECTED_PREFIXES: readonly string[] = Object.freeze([
  "/_matrix/federation/v1/make_join",
  "/_matrix/federation/v1/make_leave",
  "/_matrix/federation/v1/send_join",
  "/_matrix/federation/v2/send_join",
  "/_matrix/federation/v1/send_leave",
  "/_matrix/federation/v2/send_leave",
  "/_matrix/federation/v1/invite",
  "/_matrix/federation/v2/invite",
  "/_matrix/federation/v1/make_knock",
  "/_matrix/federation/v1/send_knock",
  "/_matrix/federation/v1/state",
  "/_matrix/federation/v1/state_ids",
  "/_matrix/federation/v1/backfill",
  "/_matrix/federation/v1/event_auth",
  "/_matrix/federation/v1/get_missing_events",
  "/_matrix/federation/v1/timestamp_to_event",
]);

/**
 * Whether a request path (no query) falls under an ACL-protected endpoint. Compared without
 * case because Express routes case-insensitively by default; a check that is stricter than the
 * router would let `/STATE/...` reach the handler unchecked. Prefer enforcing in the handlers.
 */
export function isAclProtectedPath(path: string): boolean {
  const p = path.toLowerCase();
  return ACL_PROTECTED_PREFIXES.some((prefix) => p.startsWith(prefix + "/"));
}

/**
 * Why an ACL content would deny `serverName` (port allowed), in the spec's order, or null when
 * it allows it. Gatehouse refuses to send an ACL that locks itself out of its own room: every
 * later request of other servers would then be checked against a room it can no longer serve.
 */
export function aclExclusionReason(content: unknown, serverName: string): string | null {
  const acl = compileServerAcl(content);
  if (acl.allowsServer(serverName)) return null;
  const host = parseServerName(serverName)?.host;
  if (host === undefined) return `${serverName} is not a valid server name`;
  if (!acl.allowIpLiterals && isIpLiteralHost(host)) return `allow_ip_literals is false and ${serverName} is an IP literal`;
  const denying = acl.deny.find((p) => !build({ allow: ["*"], deny: [p] }).allowsHost(host));
  if (denying !== undefined) return `${serverName} matches the deny pattern ${JSON.stringify(denying)}`;
  return acl.allow.length === 0 ? "the allow list is empty" : `${serverName} matches no allow pattern (${acl.allow.map((p) => JSON.stringify(p)).join(", ")})`;
}
