/**
 * Inputs of state resolution. Everything that needs storage is injected, so the algorithm in
 * this folder stays pure (no I/O imports); the functions are async only because the injected
 * fetchers may be.
 */
import type { AuthCheckOptions, EventLike } from "../auth/index.js";
import type { RoomVersion } from "../room-versions.js";

/** Room state as `(type, state_key)` → event ID; keys are made with `stateMapKey`. */
export type StateMap = ReadonlyMap<string, string>;

/**
 * The key of `(type, state_key)` in a `StateMap`: the JSON array `["type","state_key"]`, the
 * same string the room store uses as its state hash field.
 */
export function stateMapKey(type: string, stateKey: string): string {
  let byType = keyMemo.get(type);
  if (!byType) {
    if (keyMemo.size > 1_000) keyMemo.clear();
    keyMemo.set(type, (byType = new Map()));
  }
  let key = byType.get(stateKey);
  if (key === undefined) {
    if (byType.size > 50_000) byType.clear();
    byType.set(stateKey, (key = JSON.stringify([type, stateKey])));
  }
  return key;
}
/** Keys are built in the inner loops of state resolution; a bounded memo spares the JSON encoding. */
const keyMemo = new Map<string, Map<string, string>>();

/** `(type, state_key)` from a `stateMapKey` key. */
export function parseStateMapKey(key: string): [type: string, stateKey: string] {
  return JSON.parse(key) as [string, string];
}

/** What state resolution reads of an event (a full PDU fits). v3+ PDUs carry no `event_id`: the fetcher's map key is the ID. */
export interface StateResEvent extends EventLike {
  origin_server_ts?: unknown;
}

type MaybePromise<T> = T | Promise<T>;

export interface StateResolutionInput {
  roomVersion: RoomVersion;
  /** The room being resolved; every event involved must be in it. */
  roomId: string;
  /** The state sets to resolve (e.g. the states after each forward extremity). */
  stateSets: readonly StateMap[];
  /**
   * Events by ID, rejected ones included. IDs the source does not have are left out of the
   * answer; the algorithm then skips them as Synapse does (a missing auth event is ignored, a
   * missing member of the full conflicted set drops out of it).
   */
  fetchEvents(eventIds: readonly string[]): MaybePromise<ReadonlyMap<string, StateResEvent>>;
  /**
   * Optional: the auth chain of `eventIds` — every event reachable from them through
   * `auth_events`, recursively, without the given events themselves unless one is an auth
   * ancestor of another (the spec's definition). In v12 the create event counts as an auth
   * event of every other event. Without it the chain is walked with `fetchEvents`.
   */
  authChain?(eventIds: readonly string[]): MaybePromise<ReadonlySet<string>>;
  /** Was this event rejected? Rejected events never enter the resolved state, nor serve as auth events. Default: none. */
  isRejected?(eventId: string): boolean;
  /**
   * Signature callbacks for the iterative auth checks. `verifyJoinAuthorisedVia` defaults to
   * "valid": the join_authorised_via_users_server signature does not depend on state and was
   * checked when the event was accepted (Synapse's state-dependent checks skip it too).
   * `verifyThirdPartyInvite` depends on the `m.room.third_party_invite` event in the resolved
   * state, so without it such invites fail, as in the auth rules.
   */
  authOptions?: Pick<AuthCheckOptions, "verifyJoinAuthorisedVia" | "verifyThirdPartyInvite">;
  /**
   * Optional: how the state sets relate, when the caller knows (e.g. from state groups). The
   * answer is the same with or without it; with it, a fork that only adds keys costs what its
   * deltas cost instead of what the whole state costs. See `StateFork`.
   */
  fork?: StateFork;
  /**
   * Optional: a memo of auth-rule verdicts across resolutions, keyed by the event and the exact
   * auth events it was checked with (the verdict is a pure function of those). Forks built on
   * an old extremity re-check the same events against the same auth events every time; with it
   * they are checked once. Not used with `authOptions` (callbacks the key cannot capture).
   */
  authVerdicts?: { get(key: string): boolean | undefined; set(key: string, allowed: boolean): void };
  /**
   * Optional, with `fork`: builds the answer as `base` with `changes` applied (no key of
   * `changes` is removed from `base`; each sets one). The caller can then share `base`'s entries
   * instead of having them copied into a new Map (a fork's answer differs from its base by the
   * deltas' keys only). Default: a new Map.
   */
  extend?(base: StateMap, changes: ReadonlyMap<string, string>): StateMap;
}

/** A set of event IDs to test membership of (a `Set`, or a layered one). */
export interface IdSet {
  has(id: string): boolean;
}

/**
 * The state sets as one common `base` state and a delta per set: `stateSets[i]` is `base` with
 * `deltas[i]` applied (an ID sets the key, null removes it). `baseChain` is exactly `base`'s
 * events plus their whole auth chain (as `stateAuthChain` computes it). Used only when no key
 * that a delta changes is in `base` (the sets then share all of `base`, so the auth chain of
 * their common events is `baseChain` plus that of the events they add alike); otherwise the
 * resolution compares the whole sets.
 */
export interface StateFork {
  base: StateMap;
  baseChain: IdSet;
  deltas: readonly ReadonlyMap<string, string | null>[];
}

/** Intermediate results, for tests and debugging (the vectors' `trace`). */
export interface StateResolutionTrace {
  unconflicted: StateMap;
  conflicted: ReadonlyMap<string, ReadonlySet<string>>;
  authDifference: ReadonlySet<string>;
  /** v2.1 only. */
  conflictedSubgraph?: ReadonlySet<string>;
  fullConflictedSet: ReadonlySet<string>;
  /** Reverse topological power ordering, and whether each passed the iterative auth checks. */
  powerSorted: readonly { eventId: string; accepted: boolean }[];
  /** From the resolved power_levels event back to the first one. */
  mainline: readonly string[];
  /** The other events in mainline order, and whether each passed. */
  mainlineSorted: readonly { eventId: string; accepted: boolean }[];
}

export class StateResolutionError extends Error {
  override name = "StateResolutionError";
}
