/**
 * Application service registration files (Client-Server spec "Application Service API",
 * Registration): the YAML a bridge ships (`id`, `url`, `as_token`, `hs_token`,
 * `sender_localpart`, `namespaces.users|aliases|rooms` of `{exclusive, regex}`, `rate_limited`,
 * `receive_ephemeral`). Parsed and validated at start; every error names the file and the field.
 *
 * Regexes are matched from the start of the ID, as Synapse does (Python's `re.match`): a
 * registration's `@_irc_.*` must match `@_irc_bob:server`, not `@bob:server`.
 */
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { isValidNewLocalpart } from "../protocol/ids.js";

export type NamespaceKind = "users" | "aliases" | "rooms";

export interface Namespace {
  exclusive: boolean;
  regex: RegExp;
  /** The regex as written in the file. */
  source: string;
}

export interface AppserviceRegistration {
  id: string;
  /** Base URL pushes go to; null when the service wants no traffic. */
  url: string | null;
  asToken: string;
  hsToken: string;
  senderLocalpart: string;
  namespaces: Record<NamespaceKind, Namespace[]>;
  rateLimited: boolean;
  receiveEphemeral: boolean;
  protocols: string[];
  /** The file it was read from (for errors and logs). */
  file: string;
}

/** A registration file that cannot be used; loadConfig turns it into a ConfigError for the setting. */
export class RegistrationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RegistrationError";
  }
}

function fail(file: string, field: string, message: string): never {
  throw new RegistrationError(`${file}: ${field}: ${message}`);
}

function requiredString(file: string, doc: Record<string, unknown>, field: string): string {
  const v = doc[field];
  if (typeof v !== "string" || v.length === 0) fail(file, field, "required, a non-empty string");
  return v;
}

function optionalBool(file: string, doc: Record<string, unknown>, field: string, fallback: boolean): boolean {
  const v = doc[field];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== "boolean") fail(file, field, `expected true or false, got ${JSON.stringify(v)}`);
  return v;
}

function parseNamespaces(file: string, raw: unknown): Record<NamespaceKind, Namespace[]> {
  const out: Record<NamespaceKind, Namespace[]> = { users: [], aliases: [], rooms: [] };
  if (raw === undefined || raw === null) return out;
  if (typeof raw !== "object" || Array.isArray(raw)) fail(file, "namespaces", "expected a mapping of users, aliases and rooms");
  for (const [kind, list] of Object.entries(raw as Record<string, unknown>)) {
    if (kind !== "users" && kind !== "aliases" && kind !== "rooms") fail(file, `namespaces.${kind}`, "unknown namespace (users, aliases or rooms)");
    if (list === null || list === undefined) continue;
    if (!Array.isArray(list)) fail(file, `namespaces.${kind}`, "expected a list of {exclusive, regex}");
    list.forEach((entry, i) => {
      const field = `namespaces.${kind}[${i}]`;
      if (typeof entry !== "object" || entry === null || Array.isArray(entry)) fail(file, field, "expected {exclusive, regex}");
      const e = entry as Record<string, unknown>;
      if (typeof e.regex !== "string" || e.regex.length === 0) fail(file, `${field}.regex`, "required, a non-empty string");
      if (typeof e.exclusive !== "boolean") fail(file, `${field}.exclusive`, "required, true or false");
      let regex: RegExp;
      try {
        regex = new RegExp(`^(?:${e.regex})`, "u");
      } catch (err) {
        fail(file, `${field}.regex`, `not a valid regular expression: ${(err as Error).message}`);
      }
      out[kind].push({ exclusive: e.exclusive, regex, source: e.regex });
    });
  }
  return out;
}

/** Parses one registration document; `serverName` checks that sender_localpart makes a valid user ID. */
export function parseRegistration(text: string, file: string, serverName: string): AppserviceRegistration {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    fail(file, "(document)", `not valid YAML: ${(err as Error).message.split("\n")[0]}`);
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) fail(file, "(document)", "expected a YAML mapping");
  const d = doc as Record<string, unknown>;
  const id = requiredString(file, d, "id");
  // The service's queue destination is `as:{id}`; with digits only it would read as a server name.
  if (/^\d+$/.test(id)) fail(file, "id", "must not be digits only");
  let url: string | null = null;
  if (d.url !== undefined && d.url !== null) {
    if (typeof d.url !== "string") fail(file, "url", "expected a URL or null");
    let parsed: URL;
    try {
      parsed = new URL(d.url);
    } catch {
      fail(file, "url", `not a URL: ${JSON.stringify(d.url)}`);
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") fail(file, "url", "must be http:// or https://");
    url = d.url.replace(/\/+$/, "");
  } else if (!("url" in d)) {
    fail(file, "url", "required (a URL, or null for a service that wants no pushes)");
  }
  const asToken = requiredString(file, d, "as_token");
  const hsToken = requiredString(file, d, "hs_token");
  if (asToken === hsToken) fail(file, "hs_token", "must differ from as_token");
  const senderLocalpart = requiredString(file, d, "sender_localpart");
  if (!isValidNewLocalpart(senderLocalpart, serverName)) fail(file, "sender_localpart", `@${senderLocalpart}:${serverName} is not a valid user ID`);
  const protocols = d.protocols ?? [];
  if (!Array.isArray(protocols) || protocols.some((p) => typeof p !== "string")) fail(file, "protocols", "expected a list of strings");
  return {
    id,
    url,
    asToken,
    hsToken,
    senderLocalpart,
    namespaces: parseNamespaces(file, d.namespaces),
    rateLimited: optionalBool(file, d, "rate_limited", true),
    receiveEphemeral: optionalBool(file, d, "receive_ephemeral", false),
    protocols: protocols as string[],
    file,
  };
}

/** Reads and validates every file; ids and tokens must be unique across them. */
export function loadRegistrations(files: readonly string[], serverName: string, adminToken: string | null): AppserviceRegistration[] {
  const out: AppserviceRegistration[] = [];
  const ids = new Map<string, string>();
  const tokens = new Map<string, string>();
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      throw new RegistrationError(`${file}: cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const reg = parseRegistration(text, file, serverName);
    const sameId = ids.get(reg.id);
    if (sameId) fail(file, "id", `${JSON.stringify(reg.id)} is already used by ${sameId}`);
    ids.set(reg.id, file);
    for (const [field, token] of [["as_token", reg.asToken], ["hs_token", reg.hsToken]] as const) {
      const other = tokens.get(token);
      if (other) fail(file, field, `the same token is already used by ${other}`);
      if (adminToken !== null && token === adminToken) fail(file, field, "must differ from GATEHOUSE_ADMIN_TOKEN");
      tokens.set(token, `${file} (${field})`);
    }
    out.push(reg);
  }
  return out;
}
