/**
 * The resident-server core for hosted rooms: every event enters a room through here, whether
 * Gatehouse creates it (admin actions) or another server sends it (send_knock, send_leave,
 * send_join, /send). The order is always: check → auth against the room's current state →
 * persist atomically together with the outbound queue entries → wake the sender.
 *
 * State at each event (room-state.ts): an event is checked against its auth events, then
 * against the state before it (the resolution of its prev events' states), and is refused when
 * either fails; then against the current state (the resolution of the forward extremities'
 * states), and kept as soft-failed (spec) when that fails and it came from another server, or
 * refused when it was created here or comes through a membership handshake. The current state
 * after an event is the resolution of the new forward extremities' states; an event on top of
 * every extremity (every event Gatehouse creates) simply adds itself.
 */
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { checkEventAuth, selectAuthEvents, type EventLike } from "../protocol/auth/index.js";
import { buildEvent, type EventTemplate } from "../protocol/event-signing.js";
import { CanonicalJsonError } from "../protocol/canonical-json.js";
import { checkPduLimits } from "../protocol/ids.js";
import { checkEventNesting } from "../protocol/pdu-format.js";
import { badJson, forbidden, invalidParam, MatrixError, notFound } from "../protocol/errors.js";
import { getRoomVersion, type RoomVersion } from "../protocol/room-versions.js";
import { createEventIdOfRoom } from "../protocol/state-res/index.js";
import type { Pdu } from "../protocol/pdu.js";
import type { SigningKey } from "../protocol/signing-key.js";
import { serverOfUserId } from "../protocol/ids.js";
import { RoomStore, stateField, authEventIds, prevEventIds, type ProbeResult, type SnapshotProbe, type StoreSnapshot, type RoomRecord, type PersistInput, type PersistResult, type NewRoomInput } from "../store/room-store.js";
import { createEventStatePlan, PlannerCaches, RoomStateService, type GroupState, type RoomStateView, type StateDiffPath } from "./room-state.js";
import type { CacheBudget } from "../store/byte-lru.js";
import { planNewRoom } from "./new-room-state.js";
import { StagedEvents, StaleSnapshotError } from "./staged-events.js";
import { KeyedMutex } from "./room-lock.js";
import { joinedServerOf, Lru } from "../store/state-cache.js";
import { aclExclusionReason, checkServerAcl, compileServerAcl, NO_ACL, type ServerAcl } from "../protocol/server-acl.js";
import type { EventVerifier, VerifyOptions } from "./event-verifier.js";
import type { Logger } from "../logger.js";
import { redactionRecordOf } from "../protocol/redaction-rules.js";

export type StateMap = ReadonlyMap<string, Pdu>;

export interface RoomSnapshot {
  room: RoomRecord;
  version: RoomVersion;
  stream: number;
  depth: number;
  /** Immutable: versions share entries (store/layered-map.ts). */
  state: StateMap;
  /** Same keys as `state`: the event IDs (v3+ PDUs do not carry their own ID). */
  stateIds: ReadonlyMap<string, string>;
  /** Servers with at least one joined member in `state` (kept per state version by the store). */
  joinedServers: ReadonlySet<string>;
  extremities: string[];
}

export interface LocalEventInput {
  type: string;
  sender: string;
  stateKey?: string;
  content: Record<string, unknown>;
  /** origin_server_ts to use instead of the clock (an application service's `ts`). */
  originServerTs?: number;
  /** `m.room.redaction` only: the event redacted, written top level (v1–v10) or in content (v11+). */
  redacts?: string;
}

export interface PersistedEvent {
  eventId: string;
  pdu: Pdu;
  roomId: string;
}

export interface RoomServiceDeps {
  store: RoomStore;
  /** The process's cache budget (GATEHOUSE_CACHE_MAX_BYTES), shared with the store and the sender. */
  caches?: CacheBudget;
  serverName: string;
  signingKey: SigningKey;
  verifier: EventVerifier;
  logger: Logger;
  clock?: () => number;
  /**
   * Called after an event is persisted with the destinations it was queued for. `wake: false`:
   * the caller collects the destinations of a batch (an inbound transaction) and wakes the
   * sender once for all of them with `wakeSender`, so the batch leaves in one transaction per
   * destination instead of one per event.
   */
  onQueued?: (destinations: readonly string[], opts: { wake: boolean }) => void;
  /** Wakes the sender for destinations whose wake-up a batch deferred (see onQueued). */
  wakeSender?: (destinations: readonly string[]) => void;
  /** Called after every persisted event (metrics, knock bookkeeping). */
  onPersisted?: (event: PersistedEvent, origin: string | null) => void;
  onAclDenied?: (roomId: string, origin: string) => void;
  /**
   * Application service queue destinations interested in an event (appservice/push.ts), queued
   * in the same atomic write as the event; `stateBefore` is the room's state before it (null for
   * a create event). State maps are immutable (a new map per state change).
   */
  appserviceDestinations?: (pdu: Pdu, roomId: string, stateBefore: ReadonlyMap<string, Pdu> | null) => Promise<string[]>;
  /**
   * When a room has more forward extremities than this after an event, a dummy event by a local
   * member merges them (0: never). Default 10, as Synapse's dummy_events_threshold.
   */
  maxForwardExtremities?: number;
  /** After a write whose answer promises it (a local event, a new room, a send_* handshake), before that answer: waits for replicas (GATEHOUSE_REDIS_WAIT_REPLICAS; store/replica-wait.ts). */
  afterWrites?: (roomIds: Iterable<string>) => Promise<void>;
  /** A planned write refused because another writer moved the room since its snapshot (it is planned again). */
  onWriteConflict?: (roomId: string) => void;
  /** A run found the room's write lease held by another replica and waited for it (once per wait). */
  onLeaseWait?: (roomId: string) => void;
  /** How the state planner compared a state to a resolution's answer (RoomStateService.diffTo). */
  onStateDiff?: (path: StateDiffPath) => void;
  /**
   * The room's write lease (store/lua/room-snapshot.lua; GATEHOUSE_ROOM_WRITE_LEASE_MS):
   * how long a replica may plan a run before the others stop waiting for it; a replica waits at
   * most twice this for another's lease, then plans without one (the stream check decides, as
   * it always does). 0 or absent: no lease.
   */
  roomWriteLeaseMs?: number;
}

/** How often a write is retried when another replica wrote to the same room in between. */
const MAX_CONFLICT_RETRIES = 20;
/** Longest pause between two looks at another replica's lease (the first is 1 ms, doubling). */
const ROOM_LEASE_POLL_MAX_MS = 16;
/** Most prev_events an event may reference (spec limit 20). */
const MAX_PREV = 20;
/** The event type Synapse uses to merge forward extremities; clients never see it. */
export const DUMMY_EVENT_TYPE = "org.matrix.dummy_event";
/** Dummy events in a row for one room at most (each merges 20 extremities into 1). */
const MAX_DUMMY_EVENTS_PER_RUN = 50;

export const STRIPPED_STATE_TYPES = [
  "m.room.create",
  "m.room.name",
  "m.room.avatar",
  "m.room.topic",
  "m.room.join_rules",
  "m.room.canonical_alias",
  "m.room.encryption",
] as const;

/**
 * buildEvent for an event Gatehouse creates, with content from an operator or client: content
 * that canonical JSON cannot hold (a float, a lone surrogate, an integer beyond 2^53) is 400
 * M_BAD_JSON, and the signed PDU must pass the size limits inbound PDUs pass (65,536 bytes;
 * 255 bytes for sender, room_id, event_id, state_key and type): 413 M_TOO_LARGE.
 */
export function buildLocalPdu(template: EventTemplate, opts: Parameters<typeof buildEvent>[1]): ReturnType<typeof buildEvent> {
  const nesting = checkEventNesting(template);
  if (nesting) throw nesting;
  let built: ReturnType<typeof buildEvent>;
  try {
    built = buildEvent(template, opts);
  } catch (e) {
    if (e instanceof CanonicalJsonError) throw badJson(`Event content is not canonical JSON: ${e.message}`);
    throw e;
  }
  const limits = checkPduLimits(built.pdu);
  if (limits) throw limits;
  return built;
}

/** The create event's ID: from the room ID in v12, from state before. */
export function createEventIdOf(snap: Pick<RoomSnapshot, "room" | "version" | "stateIds">): string | undefined {
  if (snap.version.roomIdIsCreateEventHash) return `$${snap.room.roomId.slice(1)}`;
  return snap.stateIds.get(stateField("m.room.create", ""));
}

export function stateLookup(state: StateMap) {
  return (type: string, stateKey: string): Pdu | undefined => state.get(stateField(type, stateKey));
}

/** Servers with at least one joined member, from a state map. */
export function joinedServers(state: StateMap): Set<string> {
  const servers = new Set<string>();
  for (const ev of state.values()) {
    const server = joinedServerOf(ev);
    if (server) servers.add(server);
  }
  return servers;
}

/**
 * Restricted joins (v8+): the auth rules need the `join_authorised_via_users_server` user's
 * server to have signed the join. Without this callback checkEventAuth denies every such join.
 * persistEvent only receives events whose signatures were already checked: remote events went
 * through EventVerifier, which requires that server's signature (requiredSigningServers), and a
 * restricted join authorised by one of our users was co-signed by us in send_join. So presence of
 * the signature is what is left to check here.
 */
function verifyJoinAuthorisedVia(event: EventLike, via: string): boolean {
  const server = serverOfUserId(via);
  const sigs = event.signatures as Record<string, unknown> | undefined;
  return server !== undefined && typeof sigs?.[server] === "object" && sigs[server] !== null;
}

export interface PersistOptions {
  /** The server the event came from (null for our own), which does not need it sent back. */
  origin: string | null;
  /** 403 instead of keeping a soft-failed event (the membership handshakes). */
  rejectIfSoftFailed: boolean;
  extraDestinations?: readonly string[];
  /** Collects the destinations to wake once for a batch (see RoomServiceDeps.onQueued). */
  deferWake?: Set<string>;
  /**
   * A snapshot the caller already read, probed for the events and their auth events
   * (snapshotWithProbe): the first run is planned on it instead of reading the room again. The
   * write is optimistic: it checks the snapshot's stream position, and a conflict reads the room
   * again and plans again.
   */
  planOn?: ProbedSnapshot;
  /**
   * For prev events Gatehouse holds no state for: the state after each, taken from the sending
   * server at a gap get_missing_events left (rooms/gap-state.ts); resolved with the states of the
   * prev events it holds (room-state.ts stateBefore).
   */
  gapStates?: ReadonlyMap<string, ReadonlyMap<string, string>>;
}

/** A snapshot, and whether the probed events are stored, their statuses and those of `statusOf`. */
export interface ProbedSnapshot {
  snap: RoomSnapshot;
  probed: ProbeResult;
  /** The probe's arguments, to check it fits the events planned on it. */
  probe?: { eventIds: readonly string[]; statusOf: readonly string[] };
}

/** What became of one event given to persistEvents: its outcome, or why it was refused. */
export type RunEventOutcome =
  | { eventId: string; pdu: Pdu; outcome: "persisted" | "duplicate" | "soft_failed"; stateBefore?: RoomSnapshot; plannedOn?: RoomSnapshot }
  | { eventId: string; pdu: Pdu; error: MatrixError };

/** An event checked and planned, ready for the persist script. */
interface PlannedWrite {
  input: Omit<PersistInput, "roomId" | "expectedStream" | "createRoom">;
  /** Destinations it is queued for (none when soft-failed). */
  destinations: string[];
  /** Set when it is kept soft-failed. */
  softFailReason?: string;
  /** Forward extremities once it is written (for the dummy-event merge). */
  extremitiesAfter: number;
  /** The snapshot it was accepted on, when the state before it is that snapshot's current state. */
  onCurrent?: RoomSnapshot;
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * Auth against the event's own auth_events (rule: "passes authorization rules based on the
 * event's auth events"), all of which must be known, accepted events of this room. `authEvents`
 * holds them (and the v12 create event, implied); `statuses` their stored statuses.
 */
function checkAgainstAuthEvents(roomId: string, version: RoomVersion, pdu: Pdu, authEvents: ReadonlyMap<string, Pdu>, statuses: ReadonlyMap<string, string | null>): void {
  const authIds = authEventIds(pdu);
  const createEventIdV12 = version.createEventInAuthEvents ? undefined : createEventIdOfRoom(roomId);
  const own = new Map<string, Pdu>();
  for (const id of authIds) {
    const ev = authEvents.get(id);
    if (ev) own.set(id, ev);
  }
  if (own.size !== new Set(authIds).size) throw forbidden("Event references unknown auth events");
  if (authIds.some((id) => statuses.get(id) === "rejected")) throw forbidden("Event references a rejected auth event");
  const authState = new Map<string, Pdu>();
  for (const ev of own.values()) if (typeof ev.state_key === "string") authState.set(stateField(ev.type, ev.state_key), ev);
  let createEventId: string | undefined;
  if (createEventIdV12) {
    // v12: the create event is implied, never listed; its ID is the room ID with `$`.
    createEventId = createEventIdV12;
    const create = authEvents.get(createEventIdV12);
    if (create) authState.set(stateField("m.room.create", ""), create);
  } else {
    createEventId = authIds.find((id) => own.get(id)?.type === "m.room.create");
  }
  const byAuthEvents = checkEventAuth(pdu, version, stateLookup(authState), {
    createEventId,
    authEvents: [...own.values()],
    verifyJoinAuthorisedVia,
  });
  if (!byAuthEvents.allowed) throw forbidden(`Event was rejected by its auth events: ${byAuthEvents.reason}`);
}

/**
 * The snapshot after a planned event, for the next event of a run; null when the run must end
 * here (the event changed current state, or is a redaction or a state event: the next event
 * reads the room again, with its state cache and redactions).
 */
function advanced(snap: RoomSnapshot, w: PlannedWrite): RoomSnapshot | null {
  const { pdu, eventId } = w.input;
  const stream = snap.stream + 1;
  if (w.input.status) return { ...snap, stream, room: { ...snap.room, stream } };
  if (typeof pdu.state_key === "string" || pdu.type === "m.room.redaction") return null;
  const current = w.input.state?.current;
  if (!current || current.set.length > 0 || current.del.length > 0 || current.reset) return null;
  const prevs = new Set(prevEventIds(pdu));
  const depth = Math.max(snap.depth, typeof pdu.depth === "number" ? pdu.depth : 0);
  return {
    ...snap,
    room: { ...snap.room, stream, depth, stateGroup: current.group },
    stream,
    depth,
    extremities: [...snap.extremities.filter((id) => !prevs.has(id)), eventId],
  };
}

/** What the room use cases work with: the room service and the store it writes through. */
export interface RoomContext {
  rooms: RoomService;
  store: RoomStore;
}

export class RoomService {
  private readonly store: RoomStore;
  readonly serverName: string;
  private readonly mutex = new KeyedMutex();
  private readonly clock: () => number;
  /** Compiled ACLs by the state's event object (a redacted copy is another object). */
  private readonly aclCache = new WeakMap<Pdu, ServerAcl>();
  /** Rooms with a merge of forward extremities scheduled or running. */
  private readonly merging = new Map<string, Promise<void>>();
  /** The room's stream position after this process's last write to it (see PersistOptions.planOn). */
  private readonly writtenAt = new Lru<string, number>(4_096);
  /** State before/after events and current state as resolutions (state groups). */
  readonly roomState: RoomStateService;
  /** This service's name on rooms' write leases (one per RoomService: one per replica). */
  private readonly leaseOwner = randomBytes(12).toString("base64url");

  constructor(private readonly deps: RoomServiceDeps) {
    this.store = deps.store;
    this.roomState = new RoomStateService(deps.store, new PlannerCaches(deps.caches), { ...(deps.onStateDiff ? { onDiff: deps.onStateDiff } : {}) });
    this.serverName = deps.serverName;
    this.clock = deps.clock ?? Date.now;
  }

  get signingKey(): SigningKey {
    return this.deps.signingKey;
  }

  now(): number {
    return this.clock();
  }

  /** The hosted room and its version record, or 404. */
  async requireRoom(roomId: string): Promise<{ room: RoomRecord; version: RoomVersion }> {
    const room = await this.store.getRoom(roomId);
    if (!room) throw notFound(`Unknown room ${roomId}`);
    const version = getRoomVersion(room.version);
    if (!version) throw new Error(`room ${roomId} has unknown version ${room.version}`);
    return { room, version };
  }

  async snapshot(roomId: string): Promise<RoomSnapshot> {
    return (await this.snapshotWithProbe(roomId)).snap;
  }

  /** A snapshot, plus (same round trip) whether `probe.eventIds` are stored, their statuses and those of `statusOf`. */
  async snapshotWithProbe(roomId: string, probe?: { eventIds: readonly string[]; statusOf: readonly string[] }): Promise<ProbedSnapshot> {
    return this.probedSnapshot(roomId, probe, await this.store.currentSnapshot(roomId, this.withRecords(roomId, probe)));
  }

  /**
   * snapshotWithProbe under the room's write lease, for planning a run: when another replica
   * holds it (it is planning the room), waits until it is given back (its write) or runs out,
   * instead of planning a run that its write would only make lose the stream check. After
   * twice the lease's length the run is planned without it (the stream check still decides).
   */
  private async leasedSnapshot(roomId: string, probe: { eventIds: readonly string[]; statusOf: readonly string[] }): Promise<ProbedSnapshot & { leased: boolean }> {
    const leaseMs = this.deps.roomWriteLeaseMs ?? 0;
    if (leaseMs <= 0) return { ...(await this.snapshotWithProbe(roomId, probe)), leased: false };
    const started = performance.now();
    const withRecords = this.withRecords(roomId, probe);
    let waited = false;
    let pause = 1;
    for (;;) {
      const read = await this.store.currentSnapshot(roomId, withRecords, { owner: this.leaseOwner, ms: leaseMs });
      if (!("leased" in read)) return { ...this.probedSnapshot(roomId, probe, read), leased: true };
      if (!waited) this.deps.onLeaseWait?.(roomId);
      waited = true;
      // Wait with a cheap look at the lease (PTTL), not the whole snapshot, until it is free.
      let left = read.leased;
      do {
        if (performance.now() - started > 2 * leaseMs) return { ...(await this.snapshotWithProbe(roomId, probe)), leased: false };
        await sleep(left > 0 ? Math.min(pause, left) : pause);
        pause = Math.min(2 * pause, ROOM_LEASE_POLL_MAX_MS);
        left = await this.store.roomLeaseTtl(roomId);
      } while (left > 0);
    }
  }

  /** The probe plus the redaction records of the auth events (and of the v12 create event, implied), which the auth rules read redacted: in the same script call (planRun). */
  private withRecords(roomId: string, probe?: { eventIds: readonly string[]; statusOf: readonly string[] }): SnapshotProbe | undefined {
    return probe && { ...probe, redactionsOf: [...probe.statusOf, createEventIdOfRoom(roomId)] };
  }

  private probedSnapshot(roomId: string, probe: { eventIds: readonly string[]; statusOf: readonly string[] } | undefined, read: StoreSnapshot): ProbedSnapshot {
    const { room, current, probe: probed } = read;
    if (!room) throw notFound(`Unknown room ${roomId}`);
    const version = getRoomVersion(room.version);
    if (!version) throw new Error(`room ${roomId} has unknown version ${room.version}`);
    const snap: RoomSnapshot = { room, version, ...current };
    return { snap, probed, ...(probe ? { probe } : {}) };
  }

  /** Runs `fn` with writes to the room serialised in this process. */
  withRoomLock<T>(roomId: string, fn: () => Promise<T>): Promise<T> {
    return this.mutex.run(roomId, fn);
  }

  /**
   * Builds (without persisting) an event as it would be created now: prev_events from the forward
   * extremities, auth_events from current state, depth one past the deepest prev event.
   */
  buildLocalEvent(snap: RoomSnapshot, input: LocalEventInput, senderServerName = this.serverName): PersistedEvent {
    return this.buildFromSnapshot(snap, input, senderServerName, true);
  }

  /** An unsigned template for a remote user's membership event (make_knock / make_join / make_leave). */
  buildTemplate(snap: RoomSnapshot, input: LocalEventInput): Record<string, unknown> {
    const { prevEvents, authEvents, depth } = this.graphFields(snap, input);
    return {
      type: input.type,
      room_id: snap.room.roomId,
      sender: input.sender,
      ...(input.stateKey !== undefined ? { state_key: input.stateKey } : {}),
      content: input.content,
      origin_server_ts: this.clock(),
      depth,
      prev_events: prevEvents,
      auth_events: authEvents,
    };
  }

  private graphFields(snap: RoomSnapshot, input: LocalEventInput): { prevEvents: string[]; authEvents: string[]; depth: number } {
    const skeleton = { type: input.type, sender: input.sender, state_key: input.stateKey, content: input.content };
    const lookup = stateLookup(snap.state);
    const authKeys = selectAuthEvents(skeleton, lookup, snap.version);
    const authEvents: string[] = [];
    for (const [type, stateKey] of authKeys) {
      const id = snap.stateIds.get(stateField(type, stateKey));
      if (id) authEvents.push(id);
    }
    const prevEvents = [...snap.extremities].sort().slice(0, MAX_PREV);
    return { prevEvents, authEvents, depth: Math.min(snap.depth + 1, Number.MAX_SAFE_INTEGER) };
  }

  private buildFromSnapshot(snap: RoomSnapshot, input: LocalEventInput, senderServerName: string, authorise: boolean): PersistedEvent {
    // Our own events obey the limits we hold other servers' PDUs to, checked before anything is
    // written (buildLocalPdu): nesting, canonical JSON, the spec's size limits.
    const { prevEvents, authEvents, depth } = this.graphFields(snap, input);
    const inContent = input.redacts !== undefined && snap.version.redactsInContent;
    const built = buildLocalPdu(
      {
        type: input.type,
        room_id: snap.room.roomId,
        sender: input.sender,
        ...(input.stateKey !== undefined ? { state_key: input.stateKey } : {}),
        ...(input.redacts !== undefined && !inContent ? { redacts: input.redacts } : {}),
        content: inContent ? { ...input.content, redacts: input.redacts } : input.content,
        ...(input.originServerTs !== undefined ? { origin_server_ts: input.originServerTs } : {}),
        prev_events: prevEvents,
        auth_events: authEvents,
        depth,
      },
      { roomVersion: snap.version, serverName: senderServerName, key: this.deps.signingKey, clock: this.clock },
    );
    if (authorise && input.type === "m.room.server_acl" && input.stateKey === "") {
      const reason = aclExclusionReason(input.content, this.serverName);
      if (reason) throw invalidParam(`This m.room.server_acl would lock ${this.serverName} out of the room: ${reason}`);
    }
    if (authorise) {
      const verdict = checkEventAuth(built.pdu, snap.version, stateLookup(snap.state), { createEventId: createEventIdOf(snap) });
      if (!verdict.allowed) throw forbidden(verdict.reason);
    }
    return { eventId: built.eventId, pdu: built.pdu, roomId: snap.room.roomId };
  }

  /** Creates, authorises and persists an event by a local user in a hosted room. */
  async sendLocalEvent(roomId: string, input: LocalEventInput, extraDestinations: readonly string[] = []): Promise<PersistedEvent> {
    if (serverOfUserId(input.sender) !== this.serverName) throw forbidden(`${input.sender} is not a user on ${this.serverName}`);
    const event = await this.withRoomLock(roomId, async () => {
      for (let attempt = 0; attempt < MAX_CONFLICT_RETRIES; attempt++) {
        const snap = await this.snapshot(roomId);
        const event = this.buildFromSnapshot(snap, input, this.serverName, true);
        const planned = await this.planAccepted(snap, this.roomState, event, { origin: null, extraDestinations });
        const results = await this.store.persistEvents(roomId, [planned.input], { expectedStream: snap.stream });
        if (results === "conflict") {
          this.deps.onWriteConflict?.(roomId);
          continue;
        }
        if (results[0] === "persisted") this.writtenAt.set(roomId, snap.stream + 1);
        this.afterWrite(roomId, planned, results[0]!, { origin: null });
        return event;
      }
      throw new MatrixError(503, "M_UNKNOWN", `room ${roomId} is too busy, try again`);
    });
    // Outside the room lock: the wait holds this answer, not the room's next writer.
    await this.deps.afterWrites?.([roomId]);
    return event;
  }

  /**
   * Persists an event that is already built and signed (by us or another server), after checking
   * it against its own auth events and against current state. `origin` is the server it came from
   * (null for our own), which does not need it sent back.
   *
   * `rejectIfSoftFailed` answers 403 instead of keeping a soft-failed event: the membership
   * handshakes (send_knock, send_join, send_leave) promise the caller the event took effect.
   */
  async persistEvent(
    roomId: string,
    eventId: string,
    pdu: Pdu,
    opts: PersistOptions,
  ): Promise<{ eventId: string; pdu: Pdu; outcome: "persisted" | "duplicate" | "soft_failed"; stateBefore?: RoomSnapshot; plannedOn?: RoomSnapshot }> {
    const [result] = await this.persistEvents(roomId, [{ eventId, pdu }], opts);
    if ("error" in result!) throw result.error;
    // A handshake's answer promises the event took effect: with GATEHOUSE_REDIS_WAIT_REPLICAS it
    // is held for the replicas too, as an inbound /send or a local event is (outside the lock).
    if (opts.rejectIfSoftFailed && result!.outcome === "persisted") await this.deps.afterWrites?.([roomId]);
    return result!;
  }

  /**
   * persistEvent for several events of one room in a row (consecutive PDUs of an inbound
   * transaction), each checked as persistEvent checks it, against the state the ones before it
   * leave, and written in runs: **one atomic write per run** (store/lua/persist-events.lua),
   * one fan-out per run. A run ends after a state event or a redaction (the next one reads the
   * room again), and at the end. An event refused (403) is left out of its run and answered on
   * its own; a conflict (another replica wrote the room) plans the run again, so a refused or
   * failed run writes nothing. The answer has one entry per event, in order.
   */
  async persistEvents(roomId: string, events: readonly { eventId: string; pdu: Pdu }[], opts: PersistOptions): Promise<RunEventOutcome[]> {
    return this.withRoomLock(roomId, async () => {
      const out: RunEventOutcome[] = [];
      let conflicts = 0;
      let planOn = opts.planOn;
      // Whether this service may still hold the room's write lease (planRun takes it; a write
      // gives it back; whatever else ends the loop gives it back below).
      let holding = false;
      try {
        while (out.length < events.length) {
          let run: Awaited<ReturnType<RoomService["planRun"]>> | "stale";
          // planRun may take the lease and then throw.
          holding = true;
          try {
            run = await this.planRun(roomId, events, out.length, opts, planOn);
          } catch (e) {
            if (!(e instanceof StaleSnapshotError)) throw e;
            run = "stale";
          }
          planOn = undefined;
          if (run !== "stale") holding = run.leased;
          const results =
            run === "stale"
              ? "conflict"
              : run.writes.length === 0
                ? []
                : await this.store.persistEvents(
                    roomId,
                    run.writes.map((w) => w.input),
                    { expectedStream: run.stream, ...(run.groupSeq ? { groupSeq: run.groupSeq } : {}), ...(run.leased ? { leaseOwner: this.leaseOwner } : {}) },
                  );
          // The persist script gave the lease back unless it answered 'conflict'.
          if (run !== "stale" && run.writes.length > 0 && results !== "conflict") holding = false;
          if (results === "conflict" || run === "stale") {
            // Another replica wrote to the room in between: read it again and plan the run again.
            this.deps.onWriteConflict?.(roomId);
            if (++conflicts < MAX_CONFLICT_RETRIES) continue;
            const busy = new MatrixError(503, "M_UNKNOWN", `room ${roomId} is too busy, try again`);
            while (out.length < events.length) out.push({ ...events[out.length]!, error: busy });
            break;
          }
          conflicts = 0;
          const written = results.filter((r) => r === "persisted").length;
          if (written > 0) this.writtenAt.set(roomId, run.stream + written);
          const answers = new Map<number, RunEventOutcome>(run.settled);
          run.writes.forEach((w, j) => {
            const outcome = this.afterWrite(roomId, w, results[j]!, opts);
            const base = { eventId: w.input.eventId, pdu: w.input.pdu, outcome, plannedOn: w.plannedOn };
            answers.set(w.index, outcome === "duplicate" || !w.onCurrent ? base : { ...base, stateBefore: w.onCurrent });
          });
          for (let i = out.length; i < run.end; i++) out.push(answers.get(i)!);
        }
      } finally {
        if (holding) await this.store.releaseRoomLease(roomId, this.leaseOwner).catch((err: Error) => this.deps.logger.warn({ roomId, err: err.message }, "giving back the room's write lease failed; it expires"));
      }
      return out;
    });
  }

  /**
   * Plans the events from `start` on against one snapshot (one round trip: the room, whether the
   * events are stored, their statuses and their auth events'), each against the state the ones
   * before it leave (a staged source, staged-events.ts), up to the end of the run.
   */
  private async planRun(
    roomId: string,
    events: readonly { eventId: string; pdu: Pdu }[],
    start: number,
    opts: PersistOptions,
    planOn?: ProbedSnapshot,
  ): Promise<{
    end: number;
    stream: number;
    writes: (PlannedWrite & { index: number; plannedOn: RoomSnapshot })[];
    settled: [number, RunEventOutcome][];
    /** The room's state group counter at the snapshot and after the run's groups (numbered by the planner). */
    groupSeq?: { expected: number; last: number };
    /** Planned under the room's write lease (leasedSnapshot), which the write gives back. */
    leased: boolean;
  }> {
    const rest = events.slice(start);
    const authIdsAll = [...new Set(rest.flatMap((e) => authEventIds(e.pdu)))];
    const probe = { eventIds: rest.map((e) => e.eventId), statusOf: authIdsAll };
    // The caller's snapshot serves unless this process wrote to the room since it was read (then
    // the write would only conflict: under concurrent requests, read again instead).
    const fits =
      planOn?.probe &&
      planOn.snap.stream >= (this.writtenAt.get(roomId) ?? 0) &&
      sameList(planOn.probe.eventIds, probe.eventIds) &&
      sameList(planOn.probe.statusOf, probe.statusOf);
    // Else under the room's write lease: another replica planning the room is waited for.
    const { snap: first, probed, leased } = fits ? { ...planOn!, leased: false } : await this.leasedSnapshot(roomId, probe);
    const version = first.version;
    const authStatus = new Map(authIdsAll.map((id, i) => [id, probed.statusOf[i] ?? null]));
    // The run's new state groups are numbered from the snapshot's counter (checked by the write).
    const staged = new StagedEvents(this.store, roomId, first.room.stateGroupSeq ?? 0);
    const roomState = this.roomState.withSource(staged);
    // The run's auth events, read once (none is an event of the run: a state event ends a run).
    // Redacted auth events as their redacted copies (as Synapse's event cache serves them).
    const createEventIdV12 = version.createEventInAuthEvents ? undefined : createEventIdOfRoom(roomId);
    const known = { read: new Set([...authIdsAll, createEventIdOfRoom(roomId)]), records: probed.redactions };
    const authEventsAll = await staged.getStateEvents(roomId, version, createEventIdV12 ? [...authIdsAll, createEventIdV12] : authIdsAll, known);
    const writes: (PlannedWrite & { index: number; plannedOn: RoomSnapshot })[] = [];
    const settled: [number, RunEventOutcome][] = [];
    let snap = first;
    let i = 0;
    while (i < rest.length) {
      const { eventId, pdu } = rest[i]!;
      const index = start + i;
      const exists = probed.exists[i] === true;
      const status = probed.statuses[i] ?? null;
      i++;
      // Already accepted (a retried send_join / send_leave, or a PDU we have): a duplicate. Checked
      // before the auth rules, because the event may itself have changed the state it is checked
      // against (a leave cannot follow itself), which would turn a harmless retry into a 403.
      if ((exists && status === null) || staged.has(eventId)) {
        const existing = staged.has(eventId) ? pdu : await this.store.getEvent(roomId, eventId);
        if (existing) {
          settled.push([index, { eventId, pdu: existing, outcome: "duplicate" }]);
          continue;
        }
      }
      if (exists && writes.length > 0) {
        // Stored with a status: the write answers 'duplicate' for it; planned on its own, so the
        // run's state does not take it in.
        i--;
        break;
      }
      let planned: PlannedWrite;
      try {
        checkAgainstAuthEvents(roomId, version, pdu, authEventsAll, authStatus);
        planned = await this.planEvent(snap, roomState, { eventId, pdu, roomId }, opts);
      } catch (e) {
        if (!(e instanceof MatrixError)) throw e;
        settled.push([index, { eventId, pdu, error: e }]);
        continue;
      }
      writes.push({ ...planned, index, plannedOn: snap });
      staged.stage(eventId, pdu, planned.input.state, planned.input.status);
      const next = exists ? null : advanced(snap, planned);
      if (!next) break;
      snap = next;
    }
    const groupSeq = staged.groupSeqUsed;
    return { end: start + i, stream: first.stream, writes, settled, leased, ...(groupSeq ? { groupSeq } : {}) };
  }

  /**
   * Checks a remote event against the state before it (refused: 403) and the current state
   * (soft-failed, or refused when `rejectIfSoftFailed`), and plans its write.
   */
  private async planEvent(snap: RoomSnapshot, roomState: RoomStateService, event: PersistedEvent, opts: PersistOptions): Promise<PlannedWrite> {
    const { roomId, eventId, pdu } = event;
    const version = snap.version;
    if (snap.room.partialState) {
      // A room joined with partial state (rooms/partial-state.ts): the state before the event
      // and the current state lack most members, so the event is checked against its own auth
      // events only (done by the caller, checkAgainstAuthEvents), as Synapse does until the
      // resync; the resync checks it again against the complete state.
      const { state: before } = await roomState.stateBefore(this.stateView(snap), prevEventIds(pdu), opts.gapStates);
      return this.planAccepted(snap, roomState, event, { origin: opts.origin, extraDestinations: opts.extraDestinations ?? [], before });
    }
    const view = this.stateView(snap);
    const prevs = prevEventIds(pdu);
    const createEventIdNow = createEventIdOf(snap);
    // Rejected when it fails the auth rules against the state before it (spec step 5).
    const { state: before, missingPrevs } = await roomState.stateBefore(view, prevs, opts.gapStates);
    const onCurrent = before === view.current;
    const beforeLookup = onCurrent ? stateLookup(snap.state) : await roomState.lookupFor(roomId, version, before.ids, pdu);
    const atEvent = checkEventAuth(pdu, version, beforeLookup, { createEventId: createEventIdNow, verifyJoinAuthorisedVia });
    if (!atEvent.allowed) throw forbidden(`Event was rejected by the state before it: ${atEvent.reason}`);
    // Soft-failed when it fails them against the current state (spec step 6).
    const currentIds = await roomState.currentForSoftFail(view, before, missingPrevs);
    const currentLookup =
      currentIds === before.ids ? beforeLookup : currentIds === view.current.ids ? stateLookup(snap.state) : await roomState.lookupFor(roomId, version, currentIds, pdu);
    const verdict = currentLookup === beforeLookup ? atEvent : checkEventAuth(pdu, version, currentLookup, { createEventId: createEventIdNow, verifyJoinAuthorisedVia });
    if (!verdict.allowed) {
      if (opts.rejectIfSoftFailed) throw forbidden(verdict.reason);
      const state = await roomState.plan(view, eventId, pdu, before, "soft_failed");
      return { input: { eventId, pdu, updatesState: false, status: "soft_failed", state }, destinations: [], softFailReason: verdict.reason, extremitiesAfter: 0 };
    }
    const planned = await this.planAccepted(snap, roomState, event, { origin: opts.origin, extraDestinations: opts.extraDestinations ?? [], before });
    // The handshakes answer with the state before the event; read back from its state group when it is not the snapshot.
    return onCurrent ? { ...planned, onCurrent: snap } : planned;
  }

  /**
   * Persists a new room's create event (it starts the room record; nobody else is in the room, so
   * nothing is queued). Fix: createRoom and upgrades wrote it with the store directly, so create
   * events were missing from onPersisted (gatehouse_events_persisted_total).
   */
  async persistCreateEvent(roomId: string, eventId: string, pdu: Pdu, createRoom: NonNullable<PersistInput["createRoom"]>): Promise<PersistResult> {
    const state = createEventStatePlan(eventId);
    const destinations = (await this.deps.appserviceDestinations?.(pdu, roomId, null)) ?? [];
    const result = await this.store.persistEvent({ roomId, eventId, pdu, expectedStream: null, updatesState: false, createRoom, state, destinations });
    if (result === "persisted") {
      if (destinations.length > 0) this.deps.onQueued?.(destinations, { wake: true });
      this.deps.onPersisted?.({ eventId, pdu, roomId }, null);
      await this.deps.afterWrites?.([roomId]);
    }
    return result;
  }

  /**
   * Writes a room built in memory (createRoom) in one atomic script: all its events or none, with
   * the state groups, state before/after each event, current state and redaction records that
   * persisting the events one by one would write (planned in memory, new-room-state.ts).
   * 400 M_ROOM_IN_USE when the alias was taken since it was checked.
   */
  async persistNewRoom(input: Omit<NewRoomInput, "state" | "members" | "stateGroups">): Promise<void> {
    const version = getRoomVersion(input.room.version);
    if (!version) throw new Error(`new room ${input.room.roomId} has unknown version ${input.room.version}`);
    const planned = await planNewRoom(input.room.roomId, version, input.events);
    // Application services interested in each event (its state before it, as persist asks),
    // queued in the same write; no other server is in a new room.
    const queue = new Map<string, string[]>();
    if (this.deps.appserviceDestinations) {
      let stateBefore: Map<string, Pdu> | null = null;
      for (const e of input.events) {
        const destinations = await this.deps.appserviceDestinations(e.pdu, input.room.roomId, stateBefore);
        if (destinations.length > 0) queue.set(e.eventId, destinations);
        // A new map per state change: state maps are never changed once built.
        if (typeof e.pdu.state_key === "string") stateBefore = new Map(stateBefore ?? []).set(stateField(e.pdu.type, e.pdu.state_key), e.pdu);
      }
    }
    const result = await this.store.persistNewRoom({ ...input, state: planned.state, members: planned.members, stateGroups: planned, queue });
    if (result === "alias_taken") throw new MatrixError(400, "M_ROOM_IN_USE", `Room alias ${input.alias} already taken`);
    // Only an identical v12 create event (same creator, content and millisecond) collides.
    if (result === "exists") throw new MatrixError(503, "M_UNKNOWN", `Room ${input.room.roomId} already exists, try again`);
    for (const e of input.events) {
      const destinations = queue.get(e.eventId);
      if (destinations) this.deps.onQueued?.(destinations, { wake: true });
      this.deps.onPersisted?.({ eventId: e.eventId, pdu: e.pdu, roomId: input.room.roomId }, null);
    }
    // The new room's ID is answered only once the replicas have it (GATEHOUSE_REDIS_WAIT_REPLICAS).
    await this.deps.afterWrites?.([input.room.roomId]);
  }

  /** Wakes the sender for the destinations a batch collected with `deferWake` (see persistEvent). */
  wakeSender(destinations: Iterable<string>): void {
    const list = [...destinations];
    if (list.length > 0) this.deps.wakeSender?.(list);
  }

  /** Verifies a PDU from another server (format, signatures, hash) and returns its ID and kept copy. */
  async verifyRemoteEvent(raw: unknown, version: RoomVersion, opts?: VerifyOptions): Promise<{ eventId: string; pdu: Pdu; hashOk: boolean }> {
    const checked = await this.deps.verifier.verify(raw, version, opts);
    if (!checked.ok) throw checked.error;
    return checked;
  }

  /** What room-state.ts needs to know of a snapshot. */
  private stateView(snap: RoomSnapshot): RoomStateView {
    return {
      roomId: snap.room.roomId,
      version: snap.version,
      extremities: snap.extremities,
      current: { ids: snap.stateIds, group: snap.room.stateGroup },
    };
  }

  /** Plans the write of an event accepted against `snap`'s current state: destinations, state groups, redaction record. */
  private async planAccepted(
    snap: RoomSnapshot,
    roomState: RoomStateService,
    event: PersistedEvent,
    opts: { origin: string | null; extraDestinations: readonly string[]; before?: GroupState },
  ): Promise<PlannedWrite> {
    const { pdu, eventId, roomId } = event;
    const view = this.stateView(snap);
    const before = opts.before ?? (await roomState.stateBefore(view, prevEventIds(pdu))).state;
    const state = await roomState.plan(view, eventId, pdu, before, "accepted");
    const updatesState = typeof pdu.state_key === "string";
    // Servers in the room once this event applies (a join adds its server; a leave of the last
    // member of a server still goes to that server, which must learn it left).
    // joined(after) ⊆ joined(before) ∪ {the server of a member event that joins}: no copy of state.
    // In a room hosted elsewhere Gatehouse sends only its own events (each server sends its own):
    // another server's event is never relayed. In rooms hosted here it is (the resident's role).
    const relay = !(snap.room.hostedElsewhere && opts.origin !== null);
    // Partial state: the members we know are few; servers_in_room of the send_join answer too.
    const destinations = new Set(relay ? [...snap.joinedServers, ...(snap.room.partialState?.servers ?? []), ...opts.extraDestinations] : []);
    if (relay && updatesState && pdu.type === "m.room.member" && (pdu.content as { membership?: unknown }).membership === "join" && typeof pdu.state_key === "string") {
      const joiner = serverOfUserId(pdu.state_key);
      if (joiner) destinations.add(joiner);
    }
    destinations.delete(this.serverName);
    if (opts.origin) destinations.delete(opts.origin);
    if (this.deps.appserviceDestinations) for (const d of await this.deps.appserviceDestinations(pdu, roomId, snap.state)) destinations.add(d);
    const list = [...destinations].sort();
    // The redact level is judged in the state before the redaction (the state it was accepted
    // against), not the current state: an event on an older branch keeps the power it had there.
    const redactionState =
      pdu.type !== "m.room.redaction" || before.ids === view.current.ids ? stateLookup(snap.state) : await roomState.lookupFor(roomId, snap.version, before.ids, pdu);
    const redaction = redactionRecordOf(pdu, redactionState, snap.version);
    // A redaction of a current state event changes what the auth rules read there: every
    // process's state cache reads the state again (with redactions applied).
    if (redaction && state.current && [...snap.stateIds.values()].includes(redaction.target)) state.current.reset = true;
    // Extremities after this event: the ones it did not reference, plus itself.
    const prevs = new Set(prevEventIds(pdu));
    const extremitiesAfter = snap.extremities.filter((id) => !prevs.has(id)).length + 1;
    return {
      // The plan's current state replaces the single-field update.
      input: { eventId, pdu, updatesState: false, destinations: list, state, ...(redaction ? { redaction } : {}) },
      destinations: list,
      extremitiesAfter,
    };
  }

  /** After a planned event's write: the sender's wake-up, onPersisted, the extremity merge. */
  private afterWrite(roomId: string, w: PlannedWrite, result: "persisted" | "duplicate", opts: { origin: string | null; deferWake?: Set<string> }): "persisted" | "duplicate" | "soft_failed" {
    if (result === "duplicate") return "duplicate";
    const { eventId, pdu } = w.input;
    if (w.softFailReason !== undefined) {
      this.deps.logger.info({ roomId, eventId, reason: w.softFailReason }, "soft-failed event");
      return "soft_failed";
    }
    if (w.destinations.length > 0) {
      // The entries are in Redis with the event; the wake-up is only a hint (workers sweep for
      // destinations with entries and no job), so deferring it to the end of a batch is safe.
      if (opts.deferWake) for (const d of w.destinations) opts.deferWake.add(d);
      this.deps.onQueued?.(w.destinations, { wake: !opts.deferWake });
    }
    this.deps.onPersisted?.({ eventId, pdu, roomId }, opts.origin);
    const limit = this.deps.maxForwardExtremities ?? 10;
    if (limit > 0 && w.extremitiesAfter > limit) this.scheduleExtremityMerge(roomId, limit);
    return "persisted";
  }

  /**
   * Concurrent knocks each reference the extremities they saw, so a burst forks the room graph
   * into as many branches; every snapshot then reads them all and every event we build can merge
   * only 20. Like Synapse, Gatehouse merges them with dummy events (`org.matrix.dummy_event`,
   * hidden from clients) sent by a local joined member, each referencing 20 extremities, until at
   * most `limit` are left. One merge per room at a time, started after the current request.
   */
  private scheduleExtremityMerge(roomId: string, limit: number): void {
    if (this.merging.has(roomId)) return;
    const run = (async () => {
      await new Promise((resolve) => setImmediate(resolve));
      for (let i = 0; i < MAX_DUMMY_EVENTS_PER_RUN; i++) {
        const snap = await this.snapshot(roomId);
        if (snap.extremities.length <= limit) return;
        const sender = this.localMemberWhoCanSend(snap, DUMMY_EVENT_TYPE);
        if (!sender) return;
        await this.sendLocalEvent(roomId, { type: DUMMY_EVENT_TYPE, sender, content: {} });
      }
    })()
      .catch((err: unknown) => this.deps.logger.warn({ roomId, err: (err as Error).message }, "could not merge forward extremities"))
      .finally(() => this.merging.delete(roomId));
    this.merging.set(roomId, run);
  }

  /** A local joined member allowed to send a (non-state) event of `type`, if any. */
  private localMemberWhoCanSend(snap: RoomSnapshot, type: string): string | undefined {
    const createEventId = createEventIdOf(snap);
    const lookup = stateLookup(snap.state);
    for (const ev of snap.state.values()) {
      if (ev.type !== "m.room.member" || typeof ev.state_key !== "string") continue;
      if ((ev.content as { membership?: unknown }).membership !== "join" || serverOfUserId(ev.state_key) !== this.serverName) continue;
      const probe = { type, room_id: snap.room.roomId, sender: ev.state_key, content: {}, prev_events: [], auth_events: [], depth: 1, origin_server_ts: 0 } as unknown as Pdu;
      if (checkEventAuth(probe, snap.version, lookup, { createEventId }).allowed) return ev.state_key;
    }
    return undefined;
  }

  /** Waits for scheduled extremity merges (tests, shutdown). */
  async settled(): Promise<void> {
    while (this.merging.size > 0) await Promise.all(this.merging.values());
  }

  /** The create event and the recommended stripped-state events, as full PDUs (spec v1.16+). */
  strippedStateEvents(snap: RoomSnapshot): Pdu[] {
    const out: Pdu[] = [];
    for (const type of STRIPPED_STATE_TYPES) {
      const ev = snap.state.get(stateField(type, ""));
      if (ev) out.push(ev);
    }
    return out;
  }

  /** The room's server ACL, compiled once per ACL event. */
  aclOf(snap: RoomSnapshot): ServerAcl {
    const event = snap.state.get(stateField("m.room.server_acl", ""));
    if (!event) return NO_ACL;
    let acl = this.aclCache.get(event);
    if (!acl) {
      acl = compileServerAcl(event.content);
      this.aclCache.set(event, acl);
    }
    return acl;
  }

  /** 403 when the room's ACL denies `origin` (checked before anything else a request does). */
  requireAclAllows(snap: RoomSnapshot, origin: string): void {
    const denied = checkServerAcl(this.aclOf(snap), origin);
    if (denied) {
      this.deps.onAclDenied?.(snap.room.roomId, origin);
      throw denied;
    }
  }

  /** Allocates a room ID for versions before 12 (`!opaque:server`). */
  newLegacyRoomId(): string {
    return `!${randomBytes(12).toString("base64url").replace(/[-_]/g, "x")}:${this.serverName}`;
  }
}

export { prevEventIds };
