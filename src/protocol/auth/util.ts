/** Small pure helpers for the auth rules: content access, ID domains, state lookups. */
import { parseUserId } from "../ids.js";
import type { EventLike, StateLookup } from "./types.js";

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function contentOf(ev: EventLike | undefined): Record<string, unknown> {
  return ev && isObject(ev.content) ? ev.content : {};
}

/** The server part of a user/room/event ID (`@a:example.org:8448` → `example.org:8448`), or null. */
export function domainOf(id: unknown): string | null {
  if (typeof id !== "string") return null;
  const i = id.indexOf(":");
  return i < 1 || i === id.length - 1 ? null : id.slice(i + 1);
}

/**
 * User IDs as the auth rules accept them (additional_creators, power-level `users` keys,
 * join_authorised_via_users_server): the ids.ts parser with printable-ASCII localparts, which is
 * what every server that ever existed has minted.
 */
export function isValidUserId(id: unknown): id is string {
  return typeof id === "string" && /^@[\x21-\x39\x3B-\x7E]+:/.test(id) && parseUserId(id) !== null;
}

/** Event IDs out of a `prev_events` value in either format (v1–v2 pairs or v3+ strings). */
export function refIds(refs: readonly unknown[] | undefined): string[] {
  if (!Array.isArray(refs)) return [];
  return refs.map((r) => (Array.isArray(r) ? r[0] : r)).filter((x): x is string => typeof x === "string");
}

/** A `StateLookup` over a list of state events (later entries win). Use it to check an event against its own `auth_events` (in v12 add the create event yourself). */
export function stateLookupFromEvents(events: Iterable<EventLike>): StateLookup {
  const map = new Map<string, EventLike>();
  for (const ev of events) if (typeof ev.state_key === "string") map.set(`${ev.type}\u0000${ev.state_key}`, ev);
  return (type, stateKey) => map.get(`${type}\u0000${stateKey}`);
}

/** A power level for messages: v12 creators' infinite power is spelled out. */
export function fmt(n: number): string {
  return n === Infinity ? "infinite (room creator)" : String(n);
}
