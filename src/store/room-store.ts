/**
 * Hosted rooms in Redis. One event, or one run of consecutive events of a room (an inbound
 * transaction's PDUs), is written by one Lua script in the room's slot (lua/persist-events.lua:
 * event, timeline, extremities, state, state groups, membership mirror, and its outbox entry
 * naming the destinations), so a crash never leaves half an event or half a run, and the fan-out stage (fanout.ts) then moves the outbox
 * entry to every destination's queue, idempotently, so a persisted event is never missing from one.
 * The global indexes (event → room, the rooms set) are other slots: written right after, idempotently.
 *
 * Concurrency: writers pass the stream position they read state at; the script refuses the write
 * (CONFLICT) when another event was accepted in between, and the caller re-checks and retries.
 * Within one process RoomService also serialises writers per room, so conflicts only happen
 * between replicas.
 */
import { Cluster, type Redis } from "ioredis";
import type { RedisKeys } from "./redis-keys.js";
import type { Pdu } from "../protocol/pdu.js";
import { redactEvent } from "../protocol/redaction.js";
import { redactionApplies } from "../protocol/redaction-rules.js";
import { getRoomVersion, type RoomVersion } from "../protocol/room-versions.js";
import { applyStateEntries, cachedStateOf, Lru, MAX_DELTA, STATE_RECORD_WINDOW, type CachedState, type StateEntry } from "./state-cache.js";
import { LayeredMap } from "./layered-map.js";
import { CacheBudget, estimateBytes, keyBytes, MAP_ENTRY, stringBytes, type ByteLru } from "./byte-lru.js";
import { defineLuaCommands } from "./lua-scripts.js";
import { Fanout } from "./fanout.js";

export interface RoomRecord {
  roomId: string;
  version: string;
  creator: string;
  createdTs: number;
  /** Greatest depth of an accepted event. */
  depth: number;
  /** Stream position of the last accepted event (changes on every write). */
  stream: number;
  /** Replacement room after an upgrade, if any. */
  tombstone?: string;
  /** The state group holding the current state (absent in rooms stored before state groups). */
  stateGroup?: string;
  /**
   * The last state group ID handed out (`state_group_seq`). A run planned on a snapshot numbers
   * its new groups from here, and its write checks the counter is still here (optimistic, like
   * the stream position; rooms/staged-events.ts).
   */
  stateGroupSeq?: number;
  /**
   * True for a room hosted by another server that a local user joined (rooms/participation.ts):
   * stored like a hosted room, but Gatehouse only sends its own events there, never relays others'.
   */
  hostedElsewhere?: boolean;
  /**
   * Set while a room hosted elsewhere holds partial state (joined with omit_members;
   * rooms/partial-state.ts): the servers in the room the send_join answer named, the server
   * that answered it and our join. Cleared by the resync's one write (complete-partial-state.lua).
   */
  partialState?: PartialStateRecord;
  /** Bumped when a resync completed the state (every process reads the room's state again). */
  stateEpoch?: string;
}

export interface PartialStateRecord {
  /** servers_in_room of the send_join answer. */
  servers: string[];
  /** The server that answered send_join (asked first for the resync). */
  via: string;
  /** Our join event (the resync asks for the state at it). */
  joinEventId: string;
}

export type EventStatus = "rejected" | "soft_failed" | "outlier";

export interface PersistInput {
  roomId: string;
  eventId: string;
  pdu: Pdu;
  /** Stream position the caller checked state at; null skips the check (room creation). */
  expectedStream: number | null;
  /** Whether the event changes current state (accepted state events). */
  updatesState: boolean;
  /** Set for events kept but not part of the room graph / state. */
  status?: EventStatus;
  /** Destinations to queue the event for. */
  destinations?: readonly string[];
  /** Room metadata, only with the create event. */
  createRoom?: { version: string; creator: string; createdTs: number };
  /** State groups before/after the event and the new current state (rooms/room-state.ts). */
  state?: StatePlan;
  /**
   * For an accepted `m.room.redaction`: the event it redacts, and whether its sender had the
   * redact level in the state it was accepted against (else it applies only to events of the
   * sender's own server; see rooms/redactions.ts). Recorded with the event, atomically.
   */
  redaction?: { target: string; senderHasRedactLevel: boolean };
}

/** A recorded redaction of an event: the redaction event's ID and whether its sender had the redact level. */
export interface RedactionRecord {
  redactionId: string;
  senderHasRedactLevel: boolean;
}

/** A state group to write: `delta` on top of `parent` (null: `delta` is the whole state). */
export interface StateGroupWrite {
  id: string;
  parent: string | null;
  /** field → event ID, or null when the key left the state. */
  delta: Record<string, string | null>;
  /** Deltas since the last full group (0 for a full group). */
  depth: number;
  /**
   * A full group written because the chain grew long: the group it would have been a delta on
   * and that delta. Not read to load the state; it keeps the group tree connected, so forks
   * find their common ancestor across full groups (room-state.ts).
   */
  ancestor?: { id: string; delta: Record<string, string | null> };
  /**
   * A group with a parent: the whole group its chain starts from (stored as `b`; absent in
   * groups stored before it was recorded, whose chains are stored whole again when long).
   */
  base?: string;
}

export interface StatePlan {
  /** New groups (IDs from allocateStateGroups), parents first. */
  groups: StateGroupWrite[];
  /** The state before and after the event ("" is the empty state, before a create event). */
  before: string;
  after: string;
  /** Whole states of new groups the caller already built: cached once written (not stored). */
  known?: [group: string, state: ReadonlyMap<string, string>][];
  /** Current state after the event (absent: unchanged, as for soft-failed events). */
  current?: {
    group: string;
    set: [field: string, eventId: string][];
    del: string[];
    /** The members mirror: user → membership ("" removes). */
    members: [userId: string, membership: string][];
    /** True unless the only change is the event's own state key: the state cache must re-read. */
    reset: boolean;
  };
}

/** What state resolution needs of a state group to find where states fork (see room-state.ts). */
export interface StateGroupMeta {
  depth: number;
  /** The group this one is a delta on (for a full group: the one it was built on, if recorded). */
  up: string | null;
  /** The delta on `up` (absent when `up` is null). */
  delta?: Readonly<Record<string, string | null>>;
  /** The whole group its chain starts from (a whole group: itself); undefined when not recorded. */
  base?: string;
}

/** A group as the persist scripts store it: `[id, JSON]` (`a`/`x`: a whole group's ancestor and delta on it). */
function storedGroup(g: StateGroupWrite): [string, string] {
  return [g.id, JSON.stringify({ p: g.parent, d: g.delta, n: g.depth, ...(g.parent !== null && g.base !== undefined ? { b: g.base } : {}), ...(g.ancestor ? { a: g.ancestor.id, x: g.ancestor.delta } : {}) })];
}

export function metaOf(g: Pick<StateGroupWrite, "id" | "parent" | "depth" | "delta" | "ancestor" | "base">): StateGroupMeta {
  if (g.parent !== null) return { depth: g.depth, up: g.parent, delta: g.delta, ...(g.base !== undefined ? { base: g.base } : {}) };
  return g.ancestor ? { depth: g.depth, up: g.ancestor.id, delta: g.ancestor.delta, base: g.id } : { depth: g.depth, up: null, base: g.id };
}

/**
 * `from` (a LayeredMap) with `deltas` applied, nearest group first (so applied last), sharing
 * `from`'s entries; undefined when a delta removes a key (LayeredMap has no deletion) or `from`
 * is not layered.
 */
function extended(from: ReadonlyMap<string, string>, deltas: readonly Readonly<Record<string, string | null>>[]): LayeredMap<string> | undefined {
  if (!(from instanceof LayeredMap)) return undefined;
  const changes: [string, string][] = [];
  for (let i = deltas.length - 1; i >= 0; i--) {
    for (const [field, id] of Object.entries(deltas[i]!)) {
      if (id === null) return undefined;
      changes.push([field, id]);
    }
  }
  return from.with(changes);
}

/** A group is stored whole again after this many deltas in a small room (see stateGroupDepthLimit). */
export const MAX_STATE_GROUP_DEPTH = 50;
/** Groups read one by one (RoomStore.loadStateGroup) looking for a cached ancestor before the whole chain is read. */
const READ_HOPS_BEFORE_CHAIN = 4;
/** The longest delta chain in any room, so a read walks at most this far. */
export const STATE_GROUP_DEPTH_CAP = 1_000;

/**
 * Deltas before a state of `size` keys is stored whole again: 50, or a quarter of the state in
 * larger rooms. A whole group costs `size` entries; every 50 deltas it cost each 1-key delta
 * size/50 entries of Redis (~1.3 kB per knock at 700 members, more than the delta itself). At
 * size/4 each delta pays at most 4 entries for it, and a cold read walks at most size/4 deltas
 * — no more than reading the whole state once.
 */
export function stateGroupDepthLimit(size: number): number {
  return Math.min(STATE_GROUP_DEPTH_CAP, Math.max(MAX_STATE_GROUP_DEPTH, Math.floor(size / 4)));
}

/**
 * When a chain reaches stateGroupDepthLimit, the new group is stored as ONE delta on the whole
 * group the chain started from (everything that changed since; the read walk starts again at 1)
 * while that delta has at most this many keys, and whole again only beyond it. With the chain
 * limit L, each key added per event and a state of `size` keys, rebasing costs each event
 * about F/(2L) entries and the whole group size/F: F = √(2·L·size) makes both √(size/2L), so a
 * 100,000-member room pays ~14 entries per join instead of 100 (whole every 1,000) — and never
 * more than half the state, above which a whole group is as cheap to read.
 */
export function stateGroupRebaseLimit(size: number, depthLimit = stateGroupDepthLimit(size)): number {
  return Math.min(Math.floor(size / 2), Math.floor(Math.sqrt(2 * depthLimit * size)));
}

/**
 * Keys per multi-key read (MGET/HMGET). A call's arguments are spread onto the stack, and about
 * 120,000 of them overflow it (RangeError): a send_join in a 100,000-member room read that many
 * events at once and answered 500. Reads of more IDs go in chunks, in order.
 */
/** Whole state groups kept in process (RoomStore.groupCache). */
const GROUP_CACHE_SIZE = 64;

export const MULTI_READ_CHUNK = 10_000;

/** Events read per round trip when an answer is streamed (servedEventJson): ~300 kB at 600 B an event. */
export const SERVED_JSON_CHUNK = 500;

async function chunkedRead(ids: readonly string[], read: (chunk: string[]) => Promise<(string | null)[]>): Promise<(string | null)[]> {
  if (ids.length <= MULTI_READ_CHUNK) return read([...ids]);
  const out: (string | null)[] = [];
  for (let i = 0; i < ids.length; i += MULTI_READ_CHUNK) for (const v of await read(ids.slice(i, i + MULTI_READ_CHUNK))) out.push(v);
  return out;
}

export type PersistResult = "persisted" | "duplicate" | "conflict";

export const stateField = (type: string, stateKey: string): string => JSON.stringify([type, stateKey]);
export const parseStateField = (field: string): [string, string] => JSON.parse(field) as [string, string];

/** The state groups of a new room, as persisting its events one by one would write them (rooms/new-room-state.ts). */
export interface NewRoomStateWrite {
  /** Every group, parents first. */
  groups: readonly StateGroupWrite[];
  /** Per event: its ID and the groups before and after it. */
  eventState: readonly (readonly [eventId: string, before: string, after: string])[];
  /** The current state group after the last event. */
  currentGroup: string;
  /** The last group ID allocated (the room's state group counter). */
  stateGroupSeq: number;
  /** Stream position of the last event after which the state cache must re-read (null: none). */
  stateReset: number | null;
  /** Redaction records: redacted event ID, redaction event ID, whether its sender had the redact level. */
  redactions: readonly (readonly [target: string, redactionId: string, senderHasRedactLevel: boolean])[];
}

export interface NewRoomInput {
  room: { roomId: string; version: string; creator: string; createdTs: number };
  /** Every event of the new room, in order (the create event first). */
  events: readonly { eventId: string; pdu: Pdu }[];
  /** The room's state after the last event: state field → event ID. */
  state: ReadonlyMap<string, string>;
  /** Memberships after the last event. */
  members: ReadonlyMap<string, string>;
  /** State groups, event state and redaction records. */
  stateGroups: NewRoomStateWrite;
  depth: number;
  /** A local alias claimed in the same write. */
  alias?: string;
  /** Per event (by ID): the destinations to queue it for (application services), in the same write. */
  queue?: ReadonlyMap<string, readonly string[]>;
}

/** A room hosted elsewhere after a checked send_join (rooms/participation.ts). */
export interface JoinedRoomInput {
  roomId: string;
  version: string;
  /** The create event's sender and origin_server_ts (the room record's creator and created_ts). */
  creator: string;
  createdTs: number;
  /** The state before the join (from send_join): field → event ID. */
  stateBefore: ReadonlyMap<string, string>;
  /** Memberships after the join. */
  members: ReadonlyMap<string, string>;
  /** State and auth chain events, kept as outliers (ones already stored are left as they are). */
  outliers: readonly { eventId: string; pdu: Pdu }[];
  join: { eventId: string; pdu: Pdu };
  /** Application services to queue the join for. */
  destinations?: readonly string[];
  /** A members_omitted answer: the room is stored flagged partial-state (absent: full state). */
  partialState?: PartialStateRecord;
}

type SnapshotReply = [string[], string[], string, string[], (string | null)[], string[] | null, [number[], (string | null)[], (string | null)[]], (string | null)[], string[] | null];

/** A room snapshot as the store reads it (RoomService.snapshotWithProbe makes a RoomSnapshot of it). */
export interface StoreSnapshot {
  room: RoomRecord | null;
  current: CurrentState;
  probe: ProbeResult;
}

/**
 * The room's write lease (lua/room-snapshot.lua): one writer (a RoomService, i.e. one
 * replica) plans the room at a time, so replicas do not plan runs only to lose the stream check.
 */
export interface RoomLease {
  owner: string;
  ms: number;
}

type RedisWithScripts = Redis & {
  gatehousePersistNewRoom(numKeys: number, ...args: string[]): Promise<string>;
  gatehousePersistEvents(numKeys: number, ...args: string[]): Promise<"conflict" | ("persisted" | "duplicate")[]>;
  gatehousePersistJoinedRoom(numKeys: number, ...args: string[]): Promise<string>;
  gatehousePersistBackfill(numKeys: number, ...args: string[]): Promise<number>;
  gatehouseCompletePartialState(numKeys: number, ...args: string[]): Promise<string>;
  gatehouseLoadStateGroup(numKeys: number, ...args: string[]): Promise<string[]>;
  gatehouseReleaseLock(numKeys: number, ...args: string[]): Promise<number>;
  gatehouseReleaseAlias(numKeys: number, ...args: string[]): Promise<number>;
  gatehouseSetFieldsIfAbsent(numKeys: number, ...args: string[]): Promise<number>;
  gatehouseSnapshot(numKeys: number, ...args: string[]): Promise<SnapshotReply | ["leased", number]>;
};

export interface CurrentState {
  stream: number;
  depth: number;
  /** (type, state_key) field → event; immutable (versions share entries, see layered-map.ts). */
  state: ReadonlyMap<string, Pdu>;
  /** Same keys as `state`: the event IDs. */
  stateIds: ReadonlyMap<string, string>;
  /** Servers with at least one joined member in `state`. */
  joinedServers: ReadonlySet<string>;
  extremities: string[];
}

function parseRoomRecord(roomId: string, h: Record<string, string>): RoomRecord | null {
  if (!h.version) return null;
  return {
    roomId,
    version: h.version,
    creator: h.creator ?? "",
    createdTs: Number(h.created_ts ?? 0),
    depth: Number(h.depth ?? 0),
    stream: Number(h.stream ?? 0),
    ...(h.tombstone ? { tombstone: h.tombstone } : {}),
    ...(h.state_group ? { stateGroup: h.state_group } : {}),
    ...(h.state_group_seq ? { stateGroupSeq: Number(h.state_group_seq) } : {}),
    ...(h.elsewhere === "1" ? { hostedElsewhere: true } : {}),
    ...(h.partial_state ? { partialState: JSON.parse(h.partial_state) as PartialStateRecord } : {}),
    ...(h.state_epoch ? { stateEpoch: h.state_epoch } : {}),
  };
}

/** The redaction records of `eventIds` from their stored values (HMGET order; only events with any). */
function recordsOf(eventIds: readonly string[], values: readonly (string | null)[]): Map<string, RedactionRecord[]> {
  const out = new Map<string, RedactionRecord[]>();
  values.forEach((v, i) => {
    if (!v) return;
    out.set(
      eventIds[i]!,
      v.split("\n").map((line) => {
        const [redactionId, level] = line.split(" ");
        return { redactionId: redactionId!, senderHasRedactLevel: level === "1" };
      }),
    );
  });
  return out;
}

/**
 * What a snapshot probes in the same script call: whether `eventIds` are stored and their
 * statuses, the statuses of `statusOf`, and the redaction records of `redactionsOf`.
 */
export interface SnapshotProbe {
  eventIds: readonly string[];
  statusOf: readonly string[];
  redactionsOf?: readonly string[];
}

/** Redaction records read already (by a snapshot probe): every ID of `read`, `records` for those with any. */
export interface KnownRedactions {
  read: ReadonlySet<string>;
  records: Map<string, RedactionRecord[]>;
}

export interface ProbeResult {
  exists: boolean[];
  statuses: (EventStatus | null)[];
  statusOf: (EventStatus | null)[];
  /** Records of the probe's `redactionsOf` that have any (every one of them was read). */
  redactions: Map<string, RedactionRecord[]>;
}

function flatToRecord(flat: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]!] = flat[i + 1]!;
  return out;
}

export class RoomStore {
  private readonly redis: RedisWithScripts;
  /** Current state per room at a stream position (see state-cache.ts). */
  private readonly stateCache = new Lru<string, CachedState>(256);
  /** Parsed events (immutable once written), by room and event ID; bounded by bytes (byte-lru.ts). */
  private readonly eventCache: ByteLru<string, Pdu>;
  /** State groups (immutable once written) as field → event ID, by room and group ID. */
  private groupCache = new Lru<string, ReadonlyMap<string, string>>(GROUP_CACHE_SIZE);
  /** The room's `state_epoch` the cached states were read at (a change drops them). */
  private readonly seenEpochs = new Lru<string, string>(1_024);
  /** Parent, depth and (for delta groups) delta of state groups, by room and group ID (immutable too); bounded by bytes. */
  private readonly groupMetaCache: ByteLru<string, StateGroupMeta>;
  /**
   * The state groups before/after stored events, by room and event ID: written once with the
   * event (never changed), and read for every new event's prev events and the room's extremities.
   * Bounded by bytes.
   */
  private readonly eventStateCache: ByteLru<string, { before: string; after: string }>;
  /** Auth chains of stored state groups' states (groupAuthChainIds), by room, state epoch and group; bounded by bytes. */
  private readonly groupChainCache: ByteLru<string, readonly string[]>;

  /** The process's cache budget (GATEHOUSE_CACHE_MAX_BYTES), for the use cases' caches of what the store reads. */
  readonly cacheBudget: CacheBudget;

  /** Moves outbox entries to destination queues (run inline after each write with destinations). */
  readonly fanout: Fanout;

  constructor(
    redis: Redis,
    readonly keys: RedisKeys,
    private readonly opts: {
      onFanoutError?: (roomId: string, err: Error) => void;
      /**
       * How the state cache served a snapshot, and over how many accepted events a delta advanced
       * it: in this process's event cache (local), read from Redis (remote: usually another
       * writer's), or neither: known from the room's state-event record to be no state event (skipped).
       */
      onStateRead?: (path: "hit" | "delta" | "full", delta?: { local: number; remote: number; skipped: number }) => void;
      /** The process's cache budget (GATEHOUSE_CACHE_MAX_BYTES); a default one of its own when absent. */
      caches?: CacheBudget;
    } = {},
  ) {
    this.redis = redis as RedisWithScripts;
    const caches = opts.caches ?? new CacheBudget();
    this.cacheBudget = caches;
    this.eventCache = caches.cache("events", (k: string, pdu: Pdu) => MAP_ENTRY + keyBytes(k) + estimateBytes(pdu));
    this.groupMetaCache = caches.cache("state_group_meta", (k: string, meta: StateGroupMeta) => MAP_ENTRY + keyBytes(k) + estimateBytes(meta));
    this.eventStateCache = caches.cache("event_state_groups", (k: string, g: { before: string; after: string }) => MAP_ENTRY + keyBytes(k) + 40 + stringBytes(g.before) + stringBytes(g.after));
    this.groupChainCache = caches.cache("state_chains", (k: string, ids: readonly string[]) => {
      let n = MAP_ENTRY + keyBytes(k) + 16 + 8 * ids.length;
      for (const id of ids) n += stringBytes(id);
      return n;
    });
    this.fanout = new Fanout(redis, keys);
    defineLuaCommands(redis, {
      gatehousePersistNewRoom: "persist-new-room",
      gatehousePersistEvents: "persist-events",
      gatehousePersistJoinedRoom: "persist-joined-room",
      gatehousePersistBackfill: "persist-backfill",
      gatehouseReleaseLock: "release-lock",
      gatehouseCompletePartialState: "complete-partial-state",
      gatehouseSnapshot: "room-snapshot",
      gatehouseLoadStateGroup: "load-state-group",
      gatehouseReleaseAlias: "release-alias",
      gatehouseSetFieldsIfAbsent: "set-fields-if-absent",
    });
  }

  async persistEvent(input: PersistInput): Promise<PersistResult> {
    const { expectedStream, createRoom, ...event } = input;
    const results = await this.persistEvents(input.roomId, [event], { expectedStream, ...(createRoom ? { createRoom } : {}) });
    return results === "conflict" ? "conflict" : results[0]!;
  }

  /**
   * Writes a run of events of one room in ONE atomic script (lua/persist-events.lua), as writing
   * them one by one in this order would: each event's state plan was made against the state the
   * ones before it leave. Either 'conflict' (another event was accepted since `expectedStream`:
   * nothing written, the caller plans again) or a result per event ('duplicate': already stored,
   * nothing of it written). Then the global event → room index (one HSET) and one fan-out for
   * the whole run.
   */
  async persistEvents(
    roomId: string,
    events: readonly Omit<PersistInput, "roomId" | "expectedStream" | "createRoom">[],
    opts: {
      expectedStream: number | null;
      createRoom?: PersistInput["createRoom"];
      /** Group IDs numbered from a snapshot's `stateGroupSeq`: the counter must still be `expected`, and becomes `last`. */
      groupSeq?: { expected: number; last: number };
      /** The room's write lease this run was planned under (currentSnapshot): given back once written. */
      leaseOwner?: string;
    },
  ): Promise<"conflict" | ("persisted" | "duplicate")[]> {
    if (events.length === 0) return [];
    const k = this.keys;
    const args: string[] = [
      k.room(roomId), k.state(roomId), k.members(roomId), k.extremities(roomId), k.timeline(roomId),
      k.outbox(roomId), k.eventStatus(roomId), k.stateGroups(roomId), k.eventState(roomId), k.redactions(roomId),
      ...events.map((e) => k.event(roomId, e.eventId)),
      k.stateEvents(roomId),
      k.roomLock(roomId),
      roomId,
      opts.expectedStream === null ? "" : String(opts.expectedStream),
      opts.createRoom ? JSON.stringify(opts.createRoom) : "",
      String(events.length),
      opts.groupSeq ? String(opts.groupSeq.expected) : "",
      opts.groupSeq ? String(opts.groupSeq.last) : "",
    ];
    for (const input of events) {
      const { eventId, pdu } = input;
      const isMember = pdu.type === "m.room.member" && typeof pdu.state_key === "string";
      const plan = input.state;
      args.push(
        eventId,
        JSON.stringify(pdu),
        input.updatesState && typeof pdu.state_key === "string" ? stateField(pdu.type, pdu.state_key) : "",
        input.updatesState && isMember ? (pdu.state_key as string) : "",
        isMember ? String((pdu.content as { membership?: unknown }).membership ?? "") : "",
        JSON.stringify(prevEventIds(pdu)),
        String(pdu.depth ?? 0),
        input.status ?? "",
        (input.destinations ?? []).join(" "),
        plan && plan.groups.length > 0 ? JSON.stringify(plan.groups.map(storedGroup)) : "",
        plan ? `${plan.before} ${plan.after}` : "",
        plan?.current
          ? JSON.stringify({ g: plan.current.group, set: plan.current.set, del: plan.current.del, mem: plan.current.members, reset: plan.current.reset })
          : "",
        input.redaction?.target ?? "",
        input.redaction?.senderHasRedactLevel ? "1" : "0",
        typeof pdu.state_key === "string" ? "1" : "",
      );
    }
    args.push(opts.leaseOwner ?? "", String(STATE_RECORD_WINDOW));
    // On a single Redis the event → room index is written by the script too (one round trip);
    // on a cluster it is another slot: written after the script, idempotently (a duplicate
    // writes it again, which heals a crash between the two; a conflict writes nothing).
    const single = !((this.redis as unknown) instanceof Cluster);
    const results = single
      ? await this.redis.gatehousePersistEvents(13 + events.length, ...args.slice(0, 12 + events.length), k.eventRooms(), ...args.slice(12 + events.length))
      : await this.redis.gatehousePersistEvents(12 + events.length, ...args);
    if (results === "conflict") return results;
    if (!single) await this.redis.hset(k.eventRooms(), Object.fromEntries(events.map((e) => [e.eventId, roomId])));
    if (opts.createRoom) await this.redis.sadd(k.rooms(), roomId);
    let fanout = false;
    events.forEach((input, i) => {
      if (results[i] !== "persisted") return;
      if ((input.destinations?.length ?? 0) > 0 && !input.status) fanout = true;
      this.eventCache.set(`${roomId} ${input.eventId}`, input.pdu);
      for (const g of input.state?.groups ?? []) this.groupMetaCache.set(`${roomId} ${g.id}`, metaOf(g));
      for (const [g, state] of input.state?.known ?? []) this.groupCache.set(`${roomId} ${g}`, state);
      if (input.state) this.eventStateCache.set(`${roomId} ${input.eventId}`, { before: input.state.before, after: input.state.after });
    });
    // Inline fan-out (latency), once per run; a failure leaves the entries in the outbox for the sender's sweep.
    if (fanout) await this.fanout.drain(roomId).catch((err: Error) => this.opts.onFanoutError?.(roomId, err));
    return results;
  }

  /** Milliseconds left on the room's write lease (≤ 0: nobody holds it). */
  async roomLeaseTtl(roomId: string): Promise<number> {
    return this.redis.pttl(this.keys.roomLock(roomId));
  }

  /** Gives back the room's write lease if `owner` still holds it (a run planned under it that wrote nothing). */
  async releaseRoomLease(roomId: string, owner: string): Promise<void> {
    await this.redis.gatehouseReleaseLock(1, this.keys.roomLock(roomId), owner);
  }

  /**
   * Fans out every room's outbox entries left by a failed or interrupted inline fan-out (the
   * sender's sweep calls it). Returns the destinations given PDUs.
   */
  async drainOutboxes(): Promise<string[]> {
    const rooms = await this.listRooms();
    // Rooms hosted elsewhere with an outbox (remote invites for application services, appservice/push.ts).
    const remote = await this.redis.smembers(this.keys.remoteOutboxRooms());
    const queued = new Set<string>();
    for (const list of [rooms, remote]) {
      for (let i = 0; i < list.length; i += 500) {
        for (const roomId of await this.fanout.pendingRooms(list.slice(i, i + 500))) {
          for (const d of await this.fanout.drain(roomId)) queued.add(d);
        }
      }
    }
    // Drained remote rooms leave the set (a new invite lists its room again before writing).
    const pending = new Set(await this.fanout.pendingRooms(remote));
    const done = remote.filter((r) => !pending.has(r));
    if (done.length > 0) await this.redis.srem(this.keys.remoteOutboxRooms(), ...done);
    return [...queued].sort();
  }

  /**
   * `count` new state group IDs for the room, taken now (unused ones, after a conflict, are
   * harmless gaps). The run planner numbers its groups from its snapshot instead (no round trip;
   * staged-events.ts); both move the same counter.
   */
  async allocateStateGroups(roomId: string, count: number): Promise<string[]> {
    if (count === 0) return [];
    const last = await this.redis.hincrby(this.keys.room(roomId), "state_group_seq", count);
    return Array.from({ length: count }, (_, i) => String(last - count + 1 + i));
  }

  /** The state groups before and after each event (absent for events stored before state groups). */
  async eventStateGroups(roomId: string, eventIds: readonly string[]): Promise<Map<string, { before: string; after: string }>> {
    const out = new Map<string, { before: string; after: string }>();
    const missing: string[] = [];
    for (const id of eventIds) {
      const cached = this.eventStateCache.get(`${roomId} ${id}`);
      if (cached) out.set(id, cached);
      else missing.push(id);
    }
    if (missing.length === 0) return out;
    const vals = await chunkedRead(missing, (c) => this.redis.hmget(this.keys.eventState(roomId), ...c));
    vals.forEach((v, i) => {
      if (!v) return;
      const [before = "", after = ""] = v.split(" ");
      const groups = { before, after };
      this.eventStateCache.set(`${roomId} ${missing[i]!}`, groups);
      out.set(missing[i]!, groups);
    });
    return out;
  }

  /** Deltas between a stored state group and the nearest whole one (0 for a whole group). */
  async stateGroupDepth(roomId: string, group: string): Promise<number> {
    if (group === "") return 0;
    return (await this.stateGroupMeta(roomId, group)).depth;
  }

  /** A stored state group's parent, depth and delta (the delta only for groups that have a parent). */
  async stateGroupMeta(roomId: string, group: string): Promise<StateGroupMeta> {
    const cached = this.groupMetaCache.get(`${roomId} ${group}`);
    if (cached !== undefined) return cached;
    const j = await this.redis.hget(this.keys.stateGroups(roomId), group);
    if (!j) throw new Error(`room ${roomId}: state group ${group} is not stored`);
    const g = JSON.parse(j) as { p?: string | null; d: Record<string, string | null>; n?: number; b?: string; a?: string; x?: Record<string, string | null> };
    const meta = metaOf({ id: group, parent: g.p ?? null, depth: g.n ?? 0, delta: g.d, ...(g.b !== undefined ? { base: g.b } : {}), ...(g.a !== undefined && g.x ? { ancestor: { id: g.a, delta: g.x } } : {}) });
    this.groupMetaCache.set(`${roomId} ${group}`, meta);
    return meta;
  }

  /** Statuses of many events in one round trip (events without one are left out). */
  async eventStatuses(roomId: string, eventIds: readonly string[]): Promise<Map<string, EventStatus>> {
    const out = new Map<string, EventStatus>();
    if (eventIds.length === 0) return out;
    const vals = await chunkedRead(eventIds, (c) => this.redis.hmget(this.keys.eventStatus(roomId), ...c));
    vals.forEach((v, i) => {
      if (v) out.set(eventIds[i]!, v as EventStatus);
    });
    return out;
  }

  /** A state group's state when the group cache holds it (no read; see loadStateGroup). */
  cachedStateGroup(roomId: string, group: string): ReadonlyMap<string, string> | undefined {
    return this.groupCache.get(`${roomId} ${group}`);
  }

  /**
   * A state group's state (field → event ID); "" is the empty state. Throws when it is not stored.
   * States are LayeredMaps: a group within reach of a cached one (by the cached deltas, or the
   * chain read from Redis) is that state plus its deltas, sharing all other entries, so the cache
   * costs O(√members) per group rather than O(members).
   */
  async loadStateGroup(roomId: string, group: string): Promise<ReadonlyMap<string, string>> {
    if (group === "") return LayeredMap.empty<string>();
    const cacheKey = `${roomId} ${group}`;
    const cached = this.groupCache.get(cacheKey);
    if (cached) return cached;
    // In-process first: deltas up to a cached ancestor, if every group on the way is known. The
    // first few groups on the way are read one by one (HGET) when their metadata is not cached:
    // a group whose parent is cached (the states after consecutive events, loaded oldest first
    // by a /backfill's history visibility) is then one small read, not the whole chain down to a
    // whole group, decoded in Lua, sent and parsed (~2 MB at 100,000 members) for one delta.
    const deltas: Readonly<Record<string, string | null>>[] = [];
    for (let g: string | null = group; g !== null && deltas.length <= STATE_GROUP_DEPTH_CAP; ) {
      const cachedMeta = this.groupMetaCache.get(`${roomId} ${g}`);
      const meta: StateGroupMeta | undefined = cachedMeta ?? (g !== "" && deltas.length < READ_HOPS_BEFORE_CHAIN ? await this.stateGroupMeta(roomId, g) : undefined);
      if (!meta?.delta || meta.up === null) break;
      deltas.push(meta.delta);
      const from = this.groupCache.get(`${roomId} ${meta.up}`);
      if (from) {
        const state = extended(from, deltas);
        if (state) return this.cacheGroup(cacheKey, state);
        break;
      }
      g = meta.up;
    }
    const chain = await this.redis.gatehouseLoadStateGroup(1, this.keys.stateGroups(roomId), group, String(STATE_GROUP_DEPTH_CAP + 2));
    const parsed = chain.map((j) => JSON.parse(j) as { p: string | null; d: Record<string, string | null> });
    if (parsed.length === 0 || typeof parsed[parsed.length - 1]!.p === "string") {
      throw new Error(`room ${roomId}: state group ${group} or one of its parents is not stored`);
    }
    // A cached group on the chain: its state plus the deltas below it.
    for (let i = 0; i < parsed.length - 1; i++) {
      const from = this.groupCache.get(`${roomId} ${parsed[i]!.p}`);
      if (!from) continue;
      const state = extended(from, parsed.slice(0, i + 1).map((x) => x.d));
      if (state) return this.cacheGroup(cacheKey, state);
      break;
    }
    const whole = new Map<string, string>();
    for (let i = parsed.length - 1; i >= 0; i--) {
      for (const [field, id] of Object.entries(parsed[i]!.d)) {
        if (id === null) whole.delete(field);
        else whole.set(field, id);
      }
    }
    return this.cacheGroup(cacheKey, LayeredMap.from(whole));
  }

  private cacheGroup(cacheKey: string, state: ReadonlyMap<string, string>): ReadonlyMap<string, string> {
    this.groupCache.set(cacheKey, state);
    return state;
  }

  /**
   * Writes a whole new room in one script (persist-new-room.lua): all of its events and final
   * state, or nothing when the room ID or the alias is already taken.
   */
  async persistNewRoom(input: NewRoomInput): Promise<"persisted" | "exists" | "alias_taken"> {
    const { room, events } = input;
    const k = this.keys;
    const last = events.at(-1);
    if (!last) throw new Error("a new room needs at least its create event");
    const groups = input.stateGroups;
    // Outbox entries (room order): [event index (1-based), destinations space-separated].
    const outbox: [number, string][] = [];
    for (const [i, e] of events.entries()) {
      const ds = input.queue?.get(e.eventId) ?? [];
      if (ds.length > 0) outbox.push([i + 1, ds.join(" ")]);
    }
    // Slot rule (redis-keys.ts): the script writes the room's slot only. The alias (a global hash)
    // is claimed first with HSETNX and released if the room ID turns out to be taken; a crash
    // between the claim and the script leaves an alias naming a room that does not exist, which
    // resolves to "room not found" and can be deleted by the admin API.
    if (input.alias) {
      const claimed = await this.redis.hsetnx(k.aliases(), input.alias, room.roomId);
      if (claimed === 0 && (await this.redis.hget(k.aliases(), input.alias)) !== room.roomId) return "alias_taken";
    }
    const result = await this.redis.gatehousePersistNewRoom(
      10 + events.length,
      k.room(room.roomId), k.state(room.roomId), k.members(room.roomId), k.extremities(room.roomId), k.timeline(room.roomId),
      k.stateGroups(room.roomId), k.eventState(room.roomId), k.redactions(room.roomId), k.outbox(room.roomId),
      ...events.map((e) => k.event(room.roomId, e.eventId)),
      k.stateEvents(room.roomId),
      room.roomId, room.version, room.creator, String(room.createdTs), String(input.depth), input.alias ?? "", last.eventId,
      // cjson would encode an empty object as an empty array; both decode to an empty table.
      JSON.stringify(Object.fromEntries(input.state)), JSON.stringify(Object.fromEntries(input.members)),
      JSON.stringify(groups.groups.map(storedGroup)),
      JSON.stringify(groups.eventState.map(([id, before, after]) => [id, `${before} ${after}`])),
      groups.currentGroup,
      String(groups.stateGroupSeq),
      groups.stateReset === null ? "" : String(groups.stateReset),
      JSON.stringify(groups.redactions.map(([target, id, level]) => [target, `${id} ${level ? "1" : "0"}`])),
      String(events.length),
      JSON.stringify(outbox),
      ...events.flatMap((e) => [e.eventId, JSON.stringify(e.pdu)]),
      JSON.stringify(events.flatMap((e, i) => (typeof e.pdu.state_key === "string" ? [i + 1] : []))),
    );
    if (result === "exists") {
      // Release the alias claimed above (only if it still names this room ID).
      if (input.alias) await this.redis.gatehouseReleaseAlias(1, k.aliases(), input.alias, room.roomId);
      return result as "exists";
    }
    if (result === "persisted") {
      // The global indexes (other slots), after the script and idempotently, as persistEvent does.
      await this.redis.hset(k.eventRooms(), Object.fromEntries(events.map((e) => [e.eventId, room.roomId])));
      await this.redis.sadd(k.rooms(), room.roomId);
      if (outbox.length > 0) await this.fanout.drain(room.roomId).catch((err: Error) => this.opts.onFanoutError?.(room.roomId, err));
      for (const e of events) this.eventCache.set(`${room.roomId} ${e.eventId}`, e.pdu);
      for (const g of groups.groups) this.groupMetaCache.set(`${room.roomId} ${g.id}`, metaOf(g));
    }
    return result as "persisted" | "exists" | "alias_taken";
  }

  /**
   * Writes a room hosted elsewhere as a local user's checked send_join left it, in one script
   * (persist-joined-room.lua): its state and auth chain as outliers, the join with its state groups
   * on top, the current state and the join as the only extremity. "hosted" when the room is hosted
   * here (nothing written).
   */
  async persistJoinedRoom(input: JoinedRoomInput): Promise<"persisted" | "duplicate" | "hosted"> {
    const { roomId, join } = input;
    const k = this.keys;
    const [before, after] = await this.allocateStateGroups(roomId, 2);
    const groupBefore: StateGroupWrite = { id: before!, parent: null, delta: Object.fromEntries(input.stateBefore), depth: 0 };
    const joinField = stateField(join.pdu.type, join.pdu.state_key as string);
    const groupAfter: StateGroupWrite = { id: after!, parent: before!, delta: { [joinField]: join.eventId }, depth: 1 };
    const outliers = input.outliers;
    // Listed first (a global key: its own command), so a crash after the script still resumes the resync.
    if (input.partialState) await this.redis.sadd(k.partialStateRooms(), roomId);
    const result = await this.redis.gatehousePersistJoinedRoom(
      10 + outliers.length,
      k.room(roomId), k.state(roomId), k.members(roomId), k.extremities(roomId), k.timeline(roomId),
      k.stateGroups(roomId), k.eventState(roomId), k.eventStatus(roomId), k.outbox(roomId),
      ...outliers.map((e) => k.event(roomId, e.eventId)),
      k.event(roomId, join.eventId),
      roomId, input.version, input.creator, String(input.createdTs), String(join.pdu.depth ?? 0), join.eventId,
      joinField, groupBefore.id, storedGroup(groupBefore)[1], groupAfter.id, storedGroup(groupAfter)[1],
      // cjson would encode an empty object as an empty array; both decode to an empty table.
      JSON.stringify(Object.fromEntries(input.stateBefore)), JSON.stringify(Object.fromEntries(input.members)),
      String(outliers.length), (input.destinations ?? []).join(" "),
      input.partialState ? JSON.stringify(input.partialState) : "",
      ...outliers.flatMap((e) => [e.eventId, JSON.stringify(e.pdu)]),
      JSON.stringify(join.pdu),
    );
    if (result === "persisted" || result === "duplicate") {
      await this.redis.hset(k.eventRooms(), Object.fromEntries([...outliers, join].map((e) => [e.eventId, roomId])));
      await this.redis.sadd(k.rooms(), roomId);
    }
    if (result === "persisted") {
      if ((input.destinations ?? []).length > 0) await this.fanout.drain(roomId).catch((err: Error) => this.opts.onFanoutError?.(roomId, err));
      this.stateCache.delete(roomId);
      this.eventCache.set(`${roomId} ${join.eventId}`, join.pdu);
      for (const g of [groupBefore, groupAfter]) this.groupMetaCache.set(`${roomId} ${g.id}`, metaOf(g));
    }
    return result as "persisted" | "duplicate" | "hosted";
  }

  /**
   * Completes the state of a room joined with partial state, in one script
   * (complete-partial-state.lua): the resync's fetched events as outliers, the fields the
   * send_join answer omitted added to every whole state group of the room (delta groups inherit
   * them) and to the current state and members mirror where no later event set them, the flag
   * cleared and `state_epoch` bumped. "completed", or "not_partial" (another process did it, or
   * the room is gone); "stale" when the room's partial record names another join (a rejoin).
   */
  async completePartialState(
    roomId: string,
    input: { joinEventId: string; added: ReadonlyMap<string, string>; members: ReadonlyMap<string, string>; outliers: readonly { eventId: string; pdu: Pdu }[] },
  ): Promise<"completed" | "not_partial" | "stale"> {
    const k = this.keys;
    const { outliers } = input;
    const result = await this.redis.gatehouseCompletePartialState(
      5 + outliers.length,
      k.room(roomId), k.state(roomId), k.members(roomId), k.stateGroups(roomId), k.eventStatus(roomId),
      ...outliers.map((e) => k.event(roomId, e.eventId)),
      input.joinEventId,
      JSON.stringify(Object.fromEntries(input.added)), JSON.stringify(Object.fromEntries(input.members)),
      String(outliers.length),
      ...outliers.flatMap((e) => [e.eventId, JSON.stringify(e.pdu)]),
    );
    if (outliers.length > 0) await this.redis.hset(k.eventRooms(), Object.fromEntries(outliers.map((e) => [e.eventId, roomId])));
    if (result !== "stale") await this.redis.srem(k.partialStateRooms(), roomId);
    if (result === "completed") {
      // This process's cached states of the room are stale now (others see state_epoch change).
      this.stateCache.delete(roomId);
      this.seenEpochs.delete(roomId);
      this.groupCache = new Lru<string, ReadonlyMap<string, string>>(GROUP_CACHE_SIZE);
    }
    return result as "completed" | "not_partial" | "stale";
  }

  /** Rooms listed as joined with partial state (some may have completed since: check the record). */
  async partialStateRooms(): Promise<string[]> {
    return this.redis.smembers(this.keys.partialStateRooms());
  }

  /** The first event of the room's timeline (lowest stream position, backfilled ones included). */
  async timelineStart(roomId: string): Promise<{ eventId: string; stream: number } | null> {
    const flat = await this.redis.zrange(this.keys.timeline(roomId), 0, 0, "WITHSCORES");
    return flat.length >= 2 ? { eventId: flat[0]!, stream: Number(flat[1]) } : null;
  }

  /**
   * Writes events fetched with /backfill before the start of the timeline (persist-backfill.lua):
   * `events` oldest first with their state groups; `groups` the new groups; `outliers` the state
   * events fetched to build their state. Returns how many were written.
   */
  async persistBackfill(
    roomId: string,
    input: {
      groups: readonly StateGroupWrite[];
      outliers: readonly { eventId: string; pdu: Pdu }[];
      events: readonly { eventId: string; pdu: Pdu; before: string; after: string; score: number }[];
    },
  ): Promise<number> {
    const k = this.keys;
    const written = await this.redis.gatehousePersistBackfill(
      4 + input.outliers.length + input.events.length,
      k.timeline(roomId), k.stateGroups(roomId), k.eventState(roomId), k.eventStatus(roomId),
      ...input.outliers.map((e) => k.event(roomId, e.eventId)),
      ...input.events.map((e) => k.event(roomId, e.eventId)),
      String(input.outliers.length), String(input.events.length),
      JSON.stringify(input.groups.map(storedGroup)),
      ...input.outliers.flatMap((e) => [e.eventId, JSON.stringify(e.pdu)]),
      ...input.events.flatMap((e) => [e.eventId, JSON.stringify(e.pdu), `${e.before} ${e.after}`, String(e.score)]),
    );
    const all = [...input.outliers, ...input.events];
    if (all.length > 0) await this.redis.hset(k.eventRooms(), Object.fromEntries(all.map((e) => [e.eventId, roomId])));
    for (const g of input.groups) this.groupMetaCache.set(`${roomId} ${g.id}`, metaOf(g));
    return written;
  }

  async getRoom(roomId: string): Promise<RoomRecord | null> {
    return parseRoomRecord(roomId, await this.redis.hgetall(this.keys.room(roomId)));
  }

  async setRoomField(roomId: string, field: string, value: string): Promise<void> {
    await this.redis.hset(this.keys.room(roomId), field, value);
  }

  async setRoomFields(roomId: string, fields: Record<string, string>): Promise<void> {
    await this.redis.hset(this.keys.room(roomId), fields);
  }

  /**
   * HSETs `fields` on the room record only if `guard` is not set yet, atomically (one script),
   * so that two writers racing to record something (an upgrade's replacement room) agree on
   * the first. True when this call wrote.
   */
  async setRoomFieldsIfAbsent(roomId: string, guard: string, fields: Record<string, string>): Promise<boolean> {
    const args = Object.entries(fields).flat();
    return (await this.redis.gatehouseSetFieldsIfAbsent(1, this.keys.room(roomId), guard, ...args)) === 1;
  }

  async getRoomField(roomId: string, field: string): Promise<string | null> {
    return this.redis.hget(this.keys.room(roomId), field);
  }

  async aliasTarget(alias: string): Promise<string | null> {
    return this.redis.hget(this.keys.aliases(), alias);
  }

  async setAlias(alias: string, roomId: string): Promise<void> {
    await this.redis.hset(this.keys.aliases(), alias, roomId);
  }

  /** Sets the alias unless it exists; false when it was taken. */
  async setAliasIfAbsent(alias: string, roomId: string): Promise<boolean> {
    return (await this.redis.hsetnx(this.keys.aliases(), alias, roomId)) === 1;
  }

  async removeAlias(alias: string): Promise<void> {
    await this.redis.hdel(this.keys.aliases(), alias);
  }

  async aliasesOf(roomId: string): Promise<string[]> {
    const all = await this.redis.hgetall(this.keys.aliases());
    return Object.entries(all)
      .filter(([, r]) => r === roomId)
      .map(([a]) => a)
      .sort();
  }

  async listRooms(): Promise<string[]> {
    return (await this.redis.smembers(this.keys.rooms())).sort();
  }

  async roomOfEvent(eventId: string): Promise<string | null> {
    return this.redis.hget(this.keys.eventRooms(), eventId);
  }

  async getEvent(roomId: string, eventId: string): Promise<Pdu | null> {
    return (await this.getEvents(roomId, [eventId])).get(eventId) ?? null;
  }

  async getEventJson(roomId: string, eventId: string): Promise<string | null> {
    return this.redis.get(this.keys.event(roomId, eventId));
  }

  /** The stored JSON of several events of one room (null where absent), in one MGET (one slot). */
  async getEventJsons(roomId: string, eventIds: readonly string[]): Promise<(string | null)[]> {
    if (eventIds.length === 0) return [];
    return chunkedRead(eventIds, (c) => this.redis.mget(...c.map((id) => this.keys.event(roomId, id))));
  }

  /** An event from the event cache only (no Redis read): undefined when it is not there. */
  cachedEvent(roomId: string, eventId: string): Pdu | undefined {
    return this.eventCache.get(`${roomId} ${eventId}`);
  }

  async getEvents(roomId: string, eventIds: readonly string[]): Promise<Map<string, Pdu>> {
    const out = new Map<string, Pdu>();
    if (eventIds.length === 0) return out;
    const missing: string[] = [];
    for (const id of eventIds) {
      const cached = this.eventCache.get(`${roomId} ${id}`);
      if (cached) out.set(id, cached);
      else missing.push(id);
    }
    if (missing.length === 0) return out;
    const texts = await chunkedRead(missing, (c) => this.redis.mget(...c.map((id) => this.keys.event(roomId, id))));
    texts.forEach((t, i) => {
      if (!t) return;
      const pdu = JSON.parse(t) as Pdu;
      this.eventCache.set(`${roomId} ${missing[i]!}`, pdu);
      out.set(missing[i]!, pdu);
    });
    return out;
  }

  /**
   * `events` with every valid recorded redaction applied (same order): the redacted copy
   * (redaction.ts, the room version's algorithm) and the redaction that applies (the first
   * valid one, as Synapse picks). Two round trips at most (the records; the redaction events,
   * usually from the event cache), one when none is redacted.
   */
  async withRedactions<E extends { eventId: string; pdu: Pdu }>(
    roomId: string,
    version: RoomVersion,
    events: readonly E[],
    known?: Map<string, RedactionRecord[]>,
  ): Promise<(E & { redactedBy?: { eventId: string; pdu: Pdu } })[]> {
    if (events.length === 0) return [];
    const records = known ?? (await this.redactionsOf(roomId, events.map((e) => e.eventId)));
    if (records.size === 0) return events.map((e) => ({ ...e }));
    const redactions = await this.getEvents(roomId, [...new Set([...records.values()].flat().map((r) => r.redactionId))]);
    return events.map((e) => {
      for (const r of records.get(e.eventId) ?? []) {
        const redaction = redactions.get(r.redactionId);
        if (!redaction || !redactionApplies(redaction, e.pdu, r.senderHasRedactLevel, version).applies) continue;
        return { ...e, pdu: redactEvent(e.pdu, version), redactedBy: { eventId: r.redactionId, pdu: redaction } };
      }
      return { ...e };
    });
  }

  /**
   * Events as the auth rules, current state and state resolution read them: a state event a
   * valid redaction targets is its redacted copy, as in Synapse, whose event cache serves the
   * pruned event once the redaction is persisted (a redacted m.room.power_levels loses `invite`
   * in v1–v10, a redacted m.room.server_acl everything).
   */
  async getStateEvents(roomId: string, version: RoomVersion, eventIds: readonly string[], known?: KnownRedactions): Promise<Map<string, Pdu>> {
    // The events and their redaction records in one round trip (none when a snapshot probe read
    // the records already).
    const covered = known !== undefined && eventIds.every((id) => known.read.has(id));
    const [found, records] = await Promise.all([this.getEvents(roomId, eventIds), covered ? known.records : this.redactionsOf(roomId, eventIds)]);
    const served = await this.withRedactions(roomId, version, [...found].map(([eventId, pdu]) => ({ eventId, pdu })), records);
    return new Map(served.map((e) => [e.eventId, e.pdu]));
  }

  /**
   * The served JSON of `eventIds` (what applyRedactions serves, serialised), `chunk` events per
   * round trip (one MGET and one HMGET of the redaction records), in order; absent events are
   * left out, as getEvents leaves them. An event is stored as JSON.stringify of its PDU, which is
   * what serialising the parsed PDU gives again: the stored bytes are served as they are, without
   * a parse, except for events a valid redaction targets (their redacted copy, serialised). For
   * answers too big to build whole (send_join, /state of a big room: ~600 B per member).
   */
  async *servedEventJson(roomId: string, version: RoomVersion, eventIds: readonly string[], chunk = SERVED_JSON_CHUNK): AsyncGenerator<Buffer[]> {
    for (let i = 0; i < eventIds.length; i += chunk) {
      const ids = eventIds.slice(i, i + chunk);
      const [texts, recordValues] = await Promise.all([
        this.redis.mgetBuffer(...ids.map((id) => this.keys.event(roomId, id))),
        this.redis.hmget(this.keys.redactions(roomId), ...ids),
      ]);
      const records = recordsOf(ids, recordValues);
      const redacted = new Map<string, Pdu>();
      if (records.size > 0) {
        const targeted = ids.flatMap((id, j) => (records.has(id) && texts[j] ? [{ eventId: id, pdu: JSON.parse(texts[j]!.toString("utf8")) as Pdu }] : []));
        for (const e of await this.withRedactions(roomId, version, targeted, records)) if (e.redactedBy) redacted.set(e.eventId, e.pdu);
      }
      const out: Buffer[] = [];
      ids.forEach((id, j) => {
        const stored = texts[j];
        if (!stored) return;
        const r = redacted.get(id);
        out.push(r ? Buffer.from(JSON.stringify(r), "utf8") : stored);
      });
      yield out;
    }
  }

  /** The accepted redactions recorded against each of `eventIds` (only those with any), oldest first. */
  async redactionsOf(roomId: string, eventIds: readonly string[]): Promise<Map<string, RedactionRecord[]>> {
    const out = new Map<string, RedactionRecord[]>();
    if (eventIds.length === 0) return out;
    const values = await chunkedRead(eventIds, (c) => this.redis.hmget(this.keys.redactions(roomId), ...c));
    return recordsOf(eventIds, values);
  }

  /** The stream positions of events in the room's timeline (null for events not in it). */
  async streamsOf(roomId: string, eventIds: readonly string[]): Promise<(number | null)[]> {
    if (eventIds.length === 0) return [];
    const scores = await chunkedRead(eventIds, (c) => this.redis.zmscore(this.keys.timeline(roomId), ...c));
    return scores.map((s) => (s === null ? null : Number(s)));
  }

  async eventStatus(roomId: string, eventId: string): Promise<EventStatus | null> {
    return (await this.redis.hget(this.keys.eventStatus(roomId), eventId)) as EventStatus | null;
  }

  /** Current state as (type, state_key) field → event ID. */
  async getStateIds(roomId: string): Promise<Map<string, string>> {
    return new Map(Object.entries(await this.redis.hgetall(this.keys.state(roomId))));
  }

  /** Current state events, with the stream position they were read at. */
  async getCurrentState(roomId: string): Promise<CurrentState> {
    const { current } = await this.currentSnapshot(roomId);
    return current;
  }

  /**
   * The room record and its current state, consistent with each other (one script call, plus a
   * fetch of events this process has not seen yet). Served from the in-process state cache,
   * brought up to date by the stream delta (state-cache.ts).
   */
  async currentSnapshot(roomId: string, probe?: SnapshotProbe): Promise<StoreSnapshot>;
  /**
   * With `lease`: the snapshot is read only when the room's write lease is free or already
   * `lease.owner`'s, and the owner then holds it for `lease.ms` (or until its persistEvents with
   * that owner gives it back); else `{ leased }`, the lease's remaining milliseconds.
   */
  async currentSnapshot(roomId: string, probe: SnapshotProbe | undefined, lease: RoomLease): Promise<StoreSnapshot | { leased: number }>;
  async currentSnapshot(roomId: string, probe?: SnapshotProbe, lease?: RoomLease): Promise<StoreSnapshot | { leased: number }> {
    const k = this.keys;
    const keys = [k.room(roomId), k.extremities(roomId), k.timeline(roomId), k.eventStatus(roomId), k.state(roomId), k.redactions(roomId), k.roomLock(roomId), k.stateEvents(roomId)];
    const redactionsOf = probe?.redactionsOf ?? [];
    const probeArgs: string[] = probe ? [...probe.eventIds, ...probe.statusOf, ...redactionsOf] : [];
    if (probe) for (const id of probe.eventIds) keys.push(k.event(roomId, id));
    const leaseArgs = lease ? [lease.owner, String(lease.ms)] : ["", "0"];
    const call = (from: string) => this.redis.gatehouseSnapshot(keys.length, ...keys, from, String(MAX_DELTA), String(redactionsOf.length), ...leaseArgs, ...probeArgs);
    let cached = this.stateCache.get(roomId);
    const answer = await call(cached ? String(cached.stream) : "");
    if (answer[0] === "leased") return { leased: Number(answer[1]) };
    let [roomFlat, extremities, at, ids, statuses, full, probed, deltaRedactions, deltaStateEvents] = answer;
    let room = parseRoomRecord(roomId, flatToRecord(roomFlat));
    const epoch = room?.stateEpoch ?? "";
    const epochChanged = (this.seenEpochs.get(roomId) ?? "") !== epoch;
    if (epochChanged) {
      // A partial-state resync added state to the room's whole groups and current state
      // (complete-partial-state.lua): cached states of the room are stale. Rare: the whole group
      // cache goes (64 entries), the room's state is read again.
      this.seenEpochs.set(roomId, epoch);
      this.groupCache = new Lru<string, ReadonlyMap<string, string>>(GROUP_CACHE_SIZE);
    }
    if (cached && (epochChanged || (full === null && (at !== cached.lastEventId || (room?.stream ?? 0) < cached.stream)))) {
      // Redis lost or rewrote history under the cache (restore, flush), or a resync completed
      // the state: read everything again.
      this.stateCache.delete(roomId);
      cached = undefined;
      // The lease (if any) is this owner's now: the second call takes it again, as the first did.
      [roomFlat, extremities, at, ids, statuses, full, probed, deltaRedactions, deltaStateEvents] = (await call("")) as SnapshotReply;
      room = parseRoomRecord(roomId, flatToRecord(roomFlat));
    }
    // The probed events: whether each is stored, and its status; then the statuses of statusOf;
    // then the redaction records of redactionsOf (only those with any).
    const probedEvents = probe?.eventIds.length ?? 0;
    const probeOut: ProbeResult = {
      exists: probed[0].map((x) => x === 1),
      statuses: probed[1].slice(0, probedEvents) as (EventStatus | null)[],
      statusOf: probed[1].slice(probedEvents) as (EventStatus | null)[],
      redactions: recordsOf(redactionsOf, probed[2]),
    };
    const stream = room?.stream ?? 0;
    const depth = room?.depth ?? 0;
    if (!room) {
      this.stateCache.delete(roomId);
      return { room, current: { stream, depth, state: LayeredMap.empty(), stateIds: LayeredMap.empty(), joinedServers: new Set(), extremities }, probe: probeOut };
    }
    // State as the auth rules read it: redactions applied (a redaction of a current state event
    // makes the persist script record a state reset, so caches read it again).
    const version = getRoomVersion(room.version);
    if (!version) throw new Error(`room ${roomId} has unknown version ${room.version}`);
    let entry: CachedState;
    if (full !== null || !cached) {
      const ids = flatToRecord(full ?? []);
      const fields = Object.keys(ids);
      const events = await this.getStateEvents(roomId, version, fields.map((f) => ids[f]!));
      const entries: StateEntry[] = [];
      for (const field of fields) {
        const pdu = events.get(ids[field]!);
        if (pdu) entries.push({ field, eventId: ids[field]!, pdu });
      }
      entry = cachedStateOf(stream, at, entries);
      this.opts.onStateRead?.("full");
    } else if (ids.length === 0) {
      entry = cached;
      this.opts.onStateRead?.("hit");
    } else {
      const accepted = ids.filter((_, i) => !statuses[i]);
      // With the state-event record covering the delta, only its state events can change state:
      // the others are neither read nor parsed (another replica's messages cost nothing here).
      const stateEvents = deltaStateEvents ? new Set(deltaStateEvents) : null;
      const candidates = stateEvents ? accepted.filter((id) => stateEvents.has(id)) : accepted;
      const local = accepted.filter((id) => this.eventCache.has(`${roomId} ${id}`)).length;
      const remote = candidates.filter((id) => !this.eventCache.has(`${roomId} ${id}`)).length;
      this.opts.onStateRead?.("delta", { local, remote, skipped: accepted.length - local - remote });
      const events = await this.getEvents(roomId, candidates);
      const changes: StateEntry[] = [];
      for (const id of candidates) {
        const pdu = events.get(id);
        if (!pdu) throw new Error(`room ${roomId}: event ${id} is in the timeline but not stored`);
        if (typeof pdu.state_key === "string") changes.push({ field: stateField(pdu.type, pdu.state_key), eventId: id, pdu });
      }
      // A state event whose redaction arrived first enters state redacted (the records came with the delta).
      const records = recordsOf(ids, deltaRedactions);
      entry = applyStateEntries(cached, stream, ids[ids.length - 1]!, await this.withRedactions(roomId, version, changes, records));
    }
    if (entry !== cached) this.stateCache.set(roomId, entry);
    return {
      room,
      current: { stream, depth, state: entry.state, stateIds: entry.stateIds, joinedServers: entry.joinedServers, extremities },
      probe: probeOut,
    };
  }

  async getStateEvent(roomId: string, type: string, stateKey: string): Promise<Pdu | null> {
    const id = await this.redis.hget(this.keys.state(roomId), stateField(type, stateKey));
    return id ? this.getEvent(roomId, id) : null;
  }

  async getMembers(roomId: string): Promise<Record<string, string>> {
    return this.redis.hgetall(this.keys.members(roomId));
  }

  async getMembership(roomId: string, userId: string): Promise<string | null> {
    return this.redis.hget(this.keys.members(roomId), userId);
  }

  async getExtremities(roomId: string): Promise<string[]> {
    return this.redis.smembers(this.keys.extremities(roomId));
  }

  /** Event IDs in the order Gatehouse accepted them, with their stream positions. */
  async timeline(roomId: string, fromStream = 0, limit = 1000): Promise<{ eventId: string; stream: number }[]> {
    const flat = await this.redis.zrangebyscore(this.keys.timeline(roomId), fromStream, "+inf", "WITHSCORES", "LIMIT", 0, limit);
    const out: { eventId: string; stream: number }[] = [];
    for (let i = 0; i < flat.length; i += 2) out.push({ eventId: flat[i]!, stream: Number(flat[i + 1]) });
    return out;
  }

  /** Event IDs before stream position `before` (exclusive; the end when null), newest first. */
  async timelineBefore(roomId: string, before: number | null, limit: number): Promise<{ eventId: string; stream: number }[]> {
    const flat = await this.redis.zrevrangebyscore(this.keys.timeline(roomId), before === null ? "+inf" : `(${before}`, "-inf", "WITHSCORES", "LIMIT", 0, limit);
    const out: { eventId: string; stream: number }[] = [];
    for (let i = 0; i < flat.length; i += 2) out.push({ eventId: flat[i]!, stream: Number(flat[i + 1]) });
    return out;
  }

  async streamOf(roomId: string, eventId: string): Promise<number | null> {
    const s = await this.redis.zscore(this.keys.timeline(roomId), eventId);
    return s === null ? null : Number(s);
  }

  /**
   * State before or after `eventId`: its state groups (rooms/room-state.ts). Events stored before
   * state groups existed have none; for them the state is replayed from the timeline in
   * acceptance order, which is what Gatehouse then applied (it linearised rooms).
   */
  async stateAt(roomId: string, eventId: string, at: "before" | "after"): Promise<Map<string, string> | null> {
    const state = await this.readStateAt(roomId, eventId, at);
    return state === null ? null : new Map(state);
  }

  /**
   * stateAt without the copy: the group's state as loaded, shared with the group cache (a
   * 100,000-member room's state is ~100,000 entries, which /state and /state_ids only read).
   */
  async readStateAt(roomId: string, eventId: string, at: "before" | "after"): Promise<ReadonlyMap<string, string> | null> {
    const groups = (await this.eventStateGroups(roomId, [eventId])).get(eventId);
    if (groups) return this.loadStateGroup(roomId, at === "before" ? groups.before : groups.after);
    // Events stored before state groups existed: Gatehouse had linearised the room.
    const upTo = await this.streamOf(roomId, eventId);
    if (upTo === null) return null;
    const ids = await this.redis.zrangebyscore(this.keys.timeline(roomId), 0, at === "after" ? upTo : `(${upTo}`);
    const statuses = await this.redis.hgetall(this.keys.eventStatus(roomId));
    const state = new Map<string, string>();
    const batch = 500;
    for (let i = 0; i < ids.length; i += batch) {
      const chunk = ids.slice(i, i + batch).filter((id) => !statuses[id]);
      const events = await this.getEvents(roomId, chunk);
      for (const id of chunk) {
        const ev = events.get(id);
        if (ev && typeof ev.state_key === "string") state.set(stateField(ev.type, ev.state_key), id);
      }
    }
    return state;
  }

  /**
   * The state group before or after `eventId` (undefined for events stored before state groups
   * existed), with its state as readStateAt gives it; null when the event is not stored.
   */
  async readStateGroupAt(roomId: string, eventId: string, at: "before" | "after"): Promise<{ group: string | undefined; state: ReadonlyMap<string, string> } | null> {
    const groups = (await this.eventStateGroups(roomId, [eventId])).get(eventId);
    if (groups) {
      const group = at === "before" ? groups.before : groups.after;
      return { group, state: await this.loadStateGroup(roomId, group) };
    }
    const state = await this.readStateAt(roomId, eventId, at);
    return state === null ? null : { group: undefined, state };
  }

  /**
   * authChainIds of a stored state group's state, remembered by group (a group's state never
   * changes; a partial-state resync adds to a room's whole groups, so the room's `state_epoch`
   * is part of the key). A group whose parent's chain is remembered and whose delta only adds
   * keys the parent lacks is that chain plus what the added events reach (the walk stops at
   * events of the parent's chain: their own chains are in it); other groups are walked whole
   * from `starts` (the state's events, as IDs or PDUs in hand). The IDs are in the walk's order
   * (the spec gives auth_chain_ids none): a group's extension lists its parent's chain first.
   */
  async groupAuthChainIds(roomId: string, epoch: string, group: string, state: ReadonlyMap<string, string>, starts: () => Iterable<string | Pdu>): Promise<readonly string[]> {
    const key = `${roomId} ${epoch} ${group}`;
    const cached = this.groupChainCache.get(key);
    if (cached) return cached;
    let ids: string[] | undefined;
    const meta = group === "" ? undefined : await this.stateGroupMeta(roomId, group);
    const parentChain = meta?.up != null ? this.groupChainCache.get(`${roomId} ${epoch} ${meta.up}`) : undefined;
    const parentState = parentChain && meta?.up != null ? this.groupCache.get(`${roomId} ${meta.up}`) : undefined;
    if (meta?.delta && parentChain && parentState) {
      const added = Object.entries(meta.delta);
      if (added.every(([field, id]) => id !== null && !parentState.has(field) && state.get(field) === id)) {
        const known = new Set(parentChain);
        ids = [...parentChain];
        await this.walkAuthChain(roomId, added.map(([, id]) => id!), (id) => ids!.push(id), known);
      }
    }
    ids ??= await this.authChainIds(roomId, starts());
    this.groupChainCache.set(key, ids);
    return ids;
  }

  /**
   * Every event reachable through auth_events from the given events (not including them), by ID
   * with its PDU, in the walk's order. The answers use authChainIds (IDs only); tests read this.
   */
  async authChain(roomId: string, eventIds: readonly string[]): Promise<Map<string, Pdu>> {
    const chain = new Map<string, Pdu>();
    await this.walkAuthChain(roomId, eventIds, (id, pdu) => chain.set(id, pdu));
    return chain;
  }

  /**
   * The IDs of every event reachable through auth_events from `starts` (not including them), in
   * the walk's order. A start is an event ID (read from Redis) or a PDU already in hand (a
   * snapshot's state event: only its auth_events are read, redaction keeps them). Only the IDs
   * are kept, not the events: the big answers (send_join, /state, /state_ids of a
   * 100,000-member room) stream the chain's events afterwards (servedEventJson).
   */
  async authChainIds(roomId: string, starts: Iterable<string | Pdu>): Promise<string[]> {
    const ids: string[] = [];
    await this.walkAuthChain(roomId, starts, (id) => ids.push(id));
    return ids;
  }

  /**
   * The auth chain walk: the starts' auth_events, then theirs, each event once. The starts are
   * taken as they come (a 100,000-member room's state is not copied into an array), the IDs to
   * read MULTI_READ_CHUNK per round trip; the frontier holds each ID not seen yet once (a big
   * room's state events name the same few auth events ~300,000 times).
   */
  private async walkAuthChain(roomId: string, starts: Iterable<string | Pdu>, onEvent: (id: string, pdu: Pdu) => void, known?: ReadonlySet<string>): Promise<void> {
    const seen = new Set<string>();
    let frontier = new Set<string>();
    // `known`: a chain already walked (closed under auth_events): neither reported nor followed.
    const follow = (ev: Pdu) => {
      if (!Array.isArray(ev.auth_events)) return;
      for (const p of ev.auth_events as unknown[]) {
        const id = Array.isArray(p) ? String(p[0]) : String(p);
        if (!seen.has(id) && !known?.has(id)) frontier.add(id);
      }
    };
    let toRead: string[] = [];
    const readStarts = async () => {
      for (const ev of (await this.getEvents(roomId, toRead)).values()) follow(ev);
      toRead = [];
    };
    for (const start of starts) {
      if (typeof start !== "string") follow(start);
      else if (toRead.push(start) >= MULTI_READ_CHUNK) await readStarts();
    }
    if (toRead.length > 0) await readStarts();
    while (frontier.size > 0) {
      const todo = [...frontier];
      frontier = new Set();
      for (const id of todo) seen.add(id);
      for (let i = 0; i < todo.length; i += MULTI_READ_CHUNK) {
        const found = await this.getEvents(roomId, todo.slice(i, i + MULTI_READ_CHUNK));
        for (const [id, ev] of found) {
          onEvent(id, ev);
          follow(ev);
        }
      }
    }
  }
}

export function prevEventIds(pdu: Pdu): string[] {
  return (Array.isArray(pdu.prev_events) ? pdu.prev_events : []).map((p: unknown) => (Array.isArray(p) ? String(p[0]) : String(p)));
}

export function authEventIds(pdu: Pdu): string[] {
  return (Array.isArray(pdu.auth_events) ? pdu.auth_events : []).map((p: unknown) => (Array.isArray(p) ? String(p[0]) : String(p)));
}
