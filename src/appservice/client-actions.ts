/**
 * The Client-Server API as an application service uses it: every action is taken by `userId`
 * (the service's sender or a registered namespace user) and goes through the same room use
 * cases as the admin API and federation. Routes (src/client/routes.ts) only parse and map.
 *
 * Rooms hosted elsewhere: joining, knocking and leaving go through rooms/remote-rooms.ts; once a
 * local user joined one, Gatehouse keeps it (rooms/participation.ts) and every other action works
 * there as in a hosted room. A room hosted elsewhere that is not stored (only knocked on or
 * invited to) is answered 400 M_UNRECOGNIZED for sends and reads.
 */
import { KeyedMutex } from "../rooms/room-lock.js";
import { createRoom, type CreateRoomInput } from "../rooms/create-room.js";
import { upgradeRoom } from "../rooms/upgrade.js";
import { stateLookup, type PersistedEvent, type RoomContext, type RoomService } from "../rooms/room-service.js";
import type { RoomQueries } from "../rooms/room-queries.js";
import type { MembershipService } from "../rooms/membership.js";
import type { RemoteRooms } from "../rooms/remote-rooms.js";
import type { RoomHistory } from "../rooms/history.js";
import type { Participation } from "../rooms/participation.js";
import { redactLocally, type ServedEvent } from "../rooms/redactions.js";
import { remoteRefusal } from "../rooms/membership.js";
import { MatrixError, badJson, forbidden, invalidParam, notFound } from "../protocol/errors.js";
import { currentMembership } from "../protocol/auth/index.js";
import { isValidRoomAlias, isValidRoomId, isValidUserId, parseRoomAlias, serverOfRoomAlias, serverOfRoomId, serverOfUserId, isValidServerName } from "../protocol/ids.js";
import { getRoomVersion, DEFAULT_ROOM_VERSION } from "../protocol/room-versions.js";
import { isPlainObject, type Pdu } from "../protocol/pdu.js";
import type { RoomStore } from "../store/room-store.js";
import type { RedisKeys } from "../store/redis-keys.js";
import type { FederationClient } from "../net/federation-client.js";
import type { Redis } from "ioredis";
import type { Logger } from "../logger.js";
import type { AppserviceRegistration } from "./registration.js";
import type { AppserviceRegistry } from "./registry.js";
import type { AppserviceAccounts, Profile } from "./accounts.js";
import type { AppserviceClient } from "./as-client.js";

/** How long a client transaction ID keeps answering with its first event (Synapse keeps them ~30 min; we keep a day). */
const CLIENT_TXN_TTL_SECONDS = 24 * 3600;

/** An event as the Client-Server API shows it. */
export interface ClientEvent {
  event_id: string;
  room_id: string;
  sender: string;
  type: string;
  state_key?: string;
  content: Record<string, unknown>;
  origin_server_ts: number;
  redacts?: string;
  unsigned?: Record<string, unknown>;
}

/** `room_id` is the event's, or (a v12 create event has none) the room's ID derived from its event ID. */
export function toClientEvent(eventId: string, pdu: Pdu): ClientEvent {
  return {
    event_id: eventId,
    room_id: typeof pdu.room_id === "string" ? pdu.room_id : `!${eventId.slice(1)}`,
    sender: pdu.sender,
    type: pdu.type,
    ...(typeof pdu.state_key === "string" ? { state_key: pdu.state_key } : {}),
    content: pdu.content as Record<string, unknown>,
    origin_server_ts: pdu.origin_server_ts,
    ...(typeof pdu.redacts === "string" ? { redacts: pdu.redacts } : {}),
  };
}

/** A served event (redactions applied) as the Client-Server API shows it: a redacted one carries `unsigned.redacted_because`. */
export function toServedClientEvent(e: ServedEvent): ClientEvent {
  const ev = toClientEvent(e.eventId, e.pdu);
  return e.redactedBy ? { ...ev, unsigned: { redacted_because: toClientEvent(e.redactedBy.eventId, e.redactedBy.pdu) } } : ev;
}

/** Who acts: the authenticated service and the user it acts as. */
export interface Actor {
  reg: AppserviceRegistration;
  userId: string;
}

export interface ClientActionsDeps {
  ctx: RoomContext;
  queries: RoomQueries;
  membership: MembershipService;
  remoteRooms: RemoteRooms;
  /** History visibility and redactions for the events a user reads (/messages, /event). */
  history: RoomHistory;
  federation: Pick<FederationClient, "call">;
  registry: AppserviceRegistry;
  accounts: AppserviceAccounts;
  asClient: AppserviceClient;
  redis: Redis;
  keys: RedisKeys;
  logger: Logger;
  /** Rooms hosted elsewhere: history before what is stored, fetched when /messages reaches it. */
  participation?: Pick<Participation, "backfill">;
}

const POWER_LEVEL_NUMBERS = ["ban", "events_default", "invite", "kick", "redact", "state_default", "users_default"];

/**
 * Power levels content the auth rules accept (integers, and objects of integers for `events`,
 * `users` and `notifications`); 400 M_INVALID_ROOM_STATE otherwise.
 */
function checkPowerLevelsContent(content: unknown, what: string): void {
  if (content === undefined) return;
  const bad = (detail: string) => new MatrixError(400, "M_INVALID_ROOM_STATE", `${what}: ${detail}`);
  if (!isPlainObject(content)) throw bad("must be an object");
  for (const k of POWER_LEVEL_NUMBERS) if (content[k] !== undefined && !Number.isSafeInteger(content[k])) throw bad(`${k} must be an integer`);
  for (const k of ["events", "users", "notifications"]) {
    const v = content[k];
    if (v === undefined) continue;
    if (!isPlainObject(v) || Object.values(v).some((n) => !Number.isSafeInteger(n))) throw bad(`${k} must map to integers`);
  }
  if (isPlainObject(content.users) && Object.keys(content.users).some((u) => !isValidUserId(u))) throw bad("users keys must be user IDs");
}

const MEMBERSHIPS = ["invite", "join", "knock", "leave", "ban"];

export class ClientActions {
  private readonly rooms: RoomService;
  private readonly store: RoomStore;
  private readonly txnLock = new KeyedMutex();

  constructor(private readonly d: ClientActionsDeps) {
    this.rooms = d.ctx.rooms;
    this.store = d.ctx.store;
  }

  get serverName(): string {
    return this.rooms.serverName;
  }

  // ---- rooms: hosted here or elsewhere ---------------------------------------------------------

  /** Hosted here, or hosted elsewhere and stored since a local user joined (rooms/participation.ts). */
  private async isHosted(roomId: string): Promise<boolean> {
    return (await this.store.getRoom(roomId)) !== null;
  }

  /** Hosted here: joins and leaves are local events. In a room hosted elsewhere they go through remote-rooms.ts. */
  private async isHostedHere(roomId: string): Promise<boolean> {
    const room = await this.store.getRoom(roomId);
    return room !== null && !room.hostedElsewhere;
  }

  /**
   * The hosted room `roomId`, or the reason it cannot be used: 400 M_UNRECOGNIZED for a room
   * hosted elsewhere (Gatehouse only keeps the state of rooms it hosts), 404 for an unknown one.
   */
  private async requireHosted(roomId: string, actor: Actor): Promise<void> {
    if (typeof roomId !== "string" || !isValidRoomId(roomId)) throw invalidParam("not a room ID");
    if (await this.isHosted(roomId)) return;
    const remote = await this.d.remoteRooms.get(actor.userId, roomId);
    const server = serverOfRoomId(roomId);
    if (remote || (server !== undefined && server !== this.serverName))
      throw new MatrixError(400, "M_UNRECOGNIZED", `${roomId} is hosted by another server: Gatehouse only joins, knocks on and leaves rooms hosted elsewhere; sending or reading there is not supported yet`);
    throw notFound(`Unknown room ${roomId}`);
  }

  /** Reads need the actor to be joined to the hosted room (403 M_FORBIDDEN otherwise). */
  private async requireJoined(roomId: string, actor: Actor): Promise<void> {
    await this.requireHosted(roomId, actor);
    if ((await this.d.queries.membershipOf(roomId, actor.userId)) !== "join") throw forbidden(`${actor.userId} is not joined to ${roomId}`);
  }

  /** A room ID or alias to a room ID and servers to try (local aliases here, others over federation). */
  async resolve(roomIdOrAlias: string, via: string[]): Promise<{ roomId: string; servers: string[] }> {
    if (isValidRoomId(roomIdOrAlias)) {
      const server = serverOfRoomId(roomIdOrAlias);
      return { roomId: roomIdOrAlias, servers: via.length > 0 ? via : server && server !== this.serverName ? [server] : [] };
    }
    if (!isValidRoomAlias(roomIdOrAlias)) throw invalidParam(`${roomIdOrAlias} is neither a room ID nor a room alias`);
    const found = await this.resolveAlias(roomIdOrAlias);
    return { roomId: found.room_id, servers: [...new Set([...via, ...found.servers])] };
  }

  // ---- account -------------------------------------------------------------------------------

  register(reg: AppserviceRegistration, body: Record<string, unknown>): Promise<string> {
    if (body.type !== "m.login.application_service")
      throw new MatrixError(400, "M_UNKNOWN", "Application services register users with type m.login.application_service");
    return this.d.accounts.register(reg, body.username);
  }

  // ---- createRoom, membership ------------------------------------------------------------------

  async createRoom(actor: Actor, body: Record<string, unknown>): Promise<{ room_id: string; room_alias?: string }> {
    for (const key of ["name", "topic", "room_alias_name", "room_version", "preset", "visibility"] as const) {
      if (body[key] !== undefined && typeof body[key] !== "string") throw badJson(`${key} must be a string`);
    }
    if (body.invite !== undefined && (!Array.isArray(body.invite) || body.invite.some((u) => typeof u !== "string" || !isValidUserId(u))))
      throw invalidParam("invite must be a list of user IDs");
    if (body.initial_state !== undefined) {
      if (!Array.isArray(body.initial_state)) throw badJson("initial_state must be a list");
      for (const s of body.initial_state) {
        if (!isPlainObject(s) || typeof s.type !== "string" || !isPlainObject(s.content) || (s.state_key !== undefined && typeof s.state_key !== "string"))
          throw badJson("initial_state entries need type, content and a string state_key");
        if (s.type === "m.room.create" || s.type === "m.room.member")
          throw new MatrixError(400, "M_INVALID_ROOM_STATE", `${s.type} cannot be set through initial_state`);
      }
    }
    const versionId = (body.room_version as string | undefined) ?? DEFAULT_ROOM_VERSION;
    const version = getRoomVersion(versionId);
    if (!version || !version.eventRefsAreIds) throw new MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", `Room version ${versionId} is not supported`);
    if (typeof body.room_alias_name === "string") {
      const alias = `#${body.room_alias_name}:${this.serverName}`;
      const owner = this.d.registry.exclusiveOwner("aliases", alias, actor.reg);
      if (owner) throw new MatrixError(400, "M_EXCLUSIVE", `${alias} is in an exclusive namespace of another application service`);
    }
    const input: CreateRoomInput = {
      creator: actor.userId,
      ...(body.preset !== undefined ? { preset: body.preset as CreateRoomInput["preset"] } : {}),
      room_version: versionId,
      ...(body.name !== undefined ? { name: body.name as string } : {}),
      ...(body.topic !== undefined ? { topic: body.topic as string } : {}),
      ...(body.room_alias_name !== undefined ? { room_alias_name: body.room_alias_name as string } : {}),
      ...(body.initial_state !== undefined ? { initial_state: body.initial_state as CreateRoomInput["initial_state"] } : {}),
      ...(body.creation_content !== undefined ? { creation_content: body.creation_content as Record<string, unknown> } : {}),
      ...(body.power_level_content_override !== undefined ? { power_level_content_override: body.power_level_content_override as Record<string, unknown> } : {}),
      ...(body.invite !== undefined ? { invite: body.invite as string[] } : {}),
    };
    this.checkCreateRoomInput(input);
    const created = await createRoom(this.d.ctx, input);
    // Local invitees were invited during creation; users on other servers over federation now.
    // The room exists by then: a server that refuses or cannot be reached does not undo it.
    for (const u of input.invite ?? []) {
      if (serverOfUserId(u) === this.serverName) continue;
      await this.d.membership.invite(created.room_id, actor.userId, u).catch((e: unknown) => {
        this.d.logger.warn({ roomId: created.room_id, invitee: u, err: (e as Error).message }, "createRoom: invite over federation failed");
      });
    }
    return { room_id: created.room_id, ...(created.room_alias ? { room_alias: created.room_alias } : {}) };
  }

  /**
   * What the client API checks before the shared createRoom use case (rooms/create-room.ts),
   * which builds, size-checks (buildLocalPdu: 413 M_TOO_LARGE) and authorises every event in
   * memory and writes the room in one script, all or nothing: an event the auth rules would refuse
   * there is 400 M_INVALID_ROOM_STATE. Here only what the request itself gets wrong: power levels
   * that are not integers, and a creator inviting themselves.
   */
  private checkCreateRoomInput(input: CreateRoomInput): void {
    checkPowerLevelsContent(input.power_level_content_override, "power_level_content_override");
    for (const st of input.initial_state ?? []) if (st.type === "m.room.power_levels") checkPowerLevelsContent(st.content, "initial_state m.room.power_levels");
    if ((input.invite ?? []).includes(input.creator)) throw invalidParam("the creator cannot invite themselves");
  }

  /** POST /join/{roomIdOrAlias} and /rooms/{roomId}/join. */
  async join(actor: Actor, roomIdOrAlias: string, via: string[]): Promise<{ room_id: string }> {
    const { roomId, servers } = await this.resolve(roomIdOrAlias, via);
    if (await this.isHostedHere(roomId)) {
      if ((await this.d.queries.membershipOf(roomId, actor.userId)) !== "join") await this.d.membership.localMembership(roomId, actor.userId, "join");
      return { room_id: roomId };
    }
    await this.d.remoteRooms.join({ user_id: actor.userId, room_id: roomId, via: servers });
    return { room_id: roomId };
  }

  async leave(actor: Actor, roomId: string): Promise<void> {
    if (await this.isHostedHere(roomId)) {
      await this.d.membership.localMembership(roomId, actor.userId, "leave");
      return;
    }
    const record = await this.d.remoteRooms.get(actor.userId, roomId);
    if (!record) throw notFound(`${actor.userId} has no membership in ${roomId}`);
    await this.d.remoteRooms.leave({ user_id: actor.userId, room_id: roomId });
  }

  /** Gatehouse keeps no per-user room list, so there is nothing to forget; refused while joined (spec). */
  async forget(actor: Actor, roomId: string): Promise<void> {
    if (!isValidRoomId(roomId)) throw invalidParam("not a room ID");
    const hosted = await this.isHosted(roomId);
    const membership = hosted ? await this.d.queries.membershipOf(roomId, actor.userId) : (await this.d.remoteRooms.get(actor.userId, roomId))?.membership;
    if (membership === "join" || membership === "invite" || membership === "knock")
      throw new MatrixError(400, "M_UNKNOWN", `${actor.userId} is still in ${roomId} (${membership}): leave it first`);
    if (!hosted && membership === undefined) throw notFound(`Unknown room ${roomId}`);
  }

  async knock(actor: Actor, roomIdOrAlias: string, via: string[], reason: string | undefined): Promise<{ room_id: string }> {
    const { roomId, servers } = await this.resolve(roomIdOrAlias, via);
    if (await this.isHosted(roomId)) {
      await this.rooms.sendLocalEvent(roomId, { type: "m.room.member", sender: actor.userId, stateKey: actor.userId, content: { membership: "knock", ...(reason ? { reason } : {}) } });
      return { room_id: roomId };
    }
    const record = await this.d.remoteRooms.knock({ user_id: actor.userId, room_id: roomId, via: servers, ...(reason !== undefined ? { reason } : {}) });
    return { room_id: record.room_id };
  }

  async memberAction(actor: Actor, roomId: string, action: "invite" | "kick" | "ban" | "unban", target: string, reason: string | undefined): Promise<void> {
    await this.requireHosted(roomId, actor);
    if (!isValidUserId(target)) throw invalidParam(`Invalid user ID ${target}`);
    switch (action) {
      case "invite":
        await this.ensureLocalUserKnown(target);
        await this.d.membership.invite(roomId, actor.userId, target, reason);
        return;
      case "kick":
        await this.d.membership.kick(roomId, actor.userId, target, reason);
        return;
      case "ban":
        await this.d.membership.ban(roomId, actor.userId, target, reason);
        return;
      case "unban":
        await this.d.membership.unban(roomId, actor.userId, target);
        return;
    }
  }

  /**
   * A local user that no service registered but that is in a service's namespaces: ask the
   * service (`GET /_matrix/app/v1/users/{userId}`) and register it for that service on 200.
   */
  async ensureLocalUserKnown(userId: string): Promise<void> {
    if (serverOfUserId(userId) !== this.serverName || (await this.d.accounts.exists(userId))) return;
    for (const reg of this.d.registry.interestedIn("users", userId)) {
      if (await this.d.asClient.queryUser(reg, userId)) {
        await this.d.accounts.register(reg, userId).catch((e: unknown) => {
          if (!(e instanceof MatrixError && e.errcode === "M_USER_IN_USE")) throw e;
        });
        return;
      }
    }
  }

  async upgrade(actor: Actor, roomId: string, newVersion: unknown): Promise<{ replacement_room: string }> {
    await this.requireHosted(roomId, actor);
    if (typeof newVersion !== "string") throw badJson("new_version must be a string");
    const result = await upgradeRoom(this.d.ctx, roomId, { sender: actor.userId, new_version: newVersion });
    return { replacement_room: result.replacement_room };
  }

  // ---- events ----------------------------------------------------------------------------------

  /**
   * PUT /send/{type}/{txnId} and /redact/{eventId}/{txnId}: idempotent per (service, user,
   * txnId): a repeated transaction answers with the first event's ID and writes nothing.
   */
  async sendOnce(actor: Actor, txnId: string, roomId: string, build: () => Promise<PersistedEvent>): Promise<string> {
    const key = this.d.keys.clientTxn(actor.reg.id, actor.userId, txnId);
    return this.txnLock.run(key, async () => {
      const seen = await this.d.redis.get(key);
      if (seen) {
        const [room, eventId] = JSON.parse(seen) as [string, string];
        if (room === roomId) return eventId;
        throw invalidParam(`transaction ${txnId} was already used in another room`);
      }
      const ev = await build();
      await this.d.redis.set(key, JSON.stringify([roomId, ev.eventId]), "EX", CLIENT_TXN_TTL_SECONDS);
      return ev.eventId;
    });
  }

  async send(actor: Actor, roomId: string, type: string, txnId: string, content: unknown, ts: number | undefined): Promise<string> {
    if (!isPlainObject(content)) throw badJson("the body must be a JSON object (the event content)");
    await this.requireHosted(roomId, actor);
    if (type === "m.room.redaction") throw invalidParam("use /redact to redact events");
    return this.sendOnce(actor, txnId, roomId, () =>
      this.rooms.sendLocalEvent(roomId, { type, sender: actor.userId, content, ...(ts !== undefined ? { originServerTs: ts } : {}) }),
    );
  }

  async redact(actor: Actor, roomId: string, eventId: string, txnId: string, reason: unknown): Promise<string> {
    if (reason !== undefined && typeof reason !== "string") throw badJson("reason must be a string");
    await this.requireHosted(roomId, actor);
    // The same use case as the admin API's redact: the target must be in the room, create and
    // server ACL events cannot be redacted, others' events need the redact level.
    return this.sendOnce(actor, txnId, roomId, () =>
      redactLocally(this.d.ctx, roomId, { sender: actor.userId, eventId, ...(reason !== undefined ? { reason: reason as string } : {}) }),
    );
  }

  async setState(actor: Actor, roomId: string, type: string, stateKey: string, content: unknown, ts: number | undefined): Promise<string> {
    if (!isPlainObject(content)) throw badJson("the body must be a JSON object (the state content)");
    await this.requireHosted(roomId, actor);
    if (type === "m.room.member") throw invalidParam("set memberships through /join, /leave, /invite, /kick and /ban");
    if (type === "m.room.create") throw forbidden("m.room.create cannot be replaced");
    const ev = await this.rooms.sendLocalEvent(roomId, { type, sender: actor.userId, stateKey, content, ...(ts !== undefined ? { originServerTs: ts } : {}) });
    return ev.eventId;
  }

  async stateEvent(actor: Actor, roomId: string, type: string, stateKey: string): Promise<Record<string, unknown>> {
    await this.requireJoined(roomId, actor);
    const ev = await this.d.queries.stateEvent(roomId, type, stateKey);
    if (!ev) throw notFound(`No ${type} state with key ${JSON.stringify(stateKey)} in ${roomId}`);
    return ev.content as Record<string, unknown>;
  }

  async state(actor: Actor, roomId: string): Promise<ClientEvent[]> {
    await this.requireJoined(roomId, actor);
    const { events } = await this.d.queries.state(roomId);
    return events.map(toServedClientEvent);
  }

  async members(actor: Actor, roomId: string, filter: { membership?: unknown; not_membership?: unknown }): Promise<ClientEvent[]> {
    for (const key of ["membership", "not_membership"] as const) {
      const v = filter[key];
      if (v !== undefined && (typeof v !== "string" || !MEMBERSHIPS.includes(v))) throw invalidParam(`${key} must be one of ${MEMBERSHIPS.join(", ")}`);
    }
    await this.requireJoined(roomId, actor);
    const { events } = await this.d.queries.state(roomId);
    return events
      .filter((e) => e.pdu.type === "m.room.member")
      .filter((e) => {
        const m = (e.pdu.content as { membership?: unknown }).membership;
        return (filter.membership === undefined || m === filter.membership) && (filter.not_membership === undefined || m !== filter.not_membership);
      })
      .map(toServedClientEvent);
  }

  async joinedMembers(actor: Actor, roomId: string): Promise<Record<string, { display_name?: string; avatar_url?: string }>> {
    await this.requireJoined(roomId, actor);
    const { snap } = await this.d.queries.state(roomId);
    const lookup = stateLookup(snap.state);
    const joined: Record<string, { display_name?: string; avatar_url?: string }> = {};
    for (const ev of snap.state.values()) {
      if (ev.type !== "m.room.member" || typeof ev.state_key !== "string" || currentMembership(lookup, ev.state_key) !== "join") continue;
      const c = ev.content as Record<string, unknown>;
      joined[ev.state_key] = {
        ...(typeof c.displayname === "string" ? { display_name: c.displayname } : {}),
        ...(typeof c.avatar_url === "string" ? { avatar_url: c.avatar_url } : {}),
      };
    }
    return joined;
  }

  /** Hosted rooms the actor is joined to (the client API's /joined_rooms). */
  async joinedRooms(actor: Actor): Promise<string[]> {
    const out: string[] = [];
    for (const roomId of await this.d.queries.listRooms()) if ((await this.d.queries.membershipOf(roomId, actor.userId)) === "join") out.push(roomId);
    return out;
  }

  async event(actor: Actor, roomId: string, eventId: string): Promise<ClientEvent> {
    await this.requireJoined(roomId, actor);
    const found = await this.d.queries.event(roomId, eventId);
    // History visibility, redactions, and no rejected, soft-failed or dummy events (404 as Synapse).
    const [visible] = await this.d.history.visibleEventsForUser(roomId, actor.userId, [{ eventId: found.eventId, pdu: found.pdu }]);
    if (!visible) throw notFound("Event not found");
    return toServedClientEvent(visible);
  }

  /** GET /messages: `from`/`end` tokens are stream positions (`s<n>`). */
  async messages(actor: Actor, roomId: string, q: { dir?: unknown; from?: unknown; limit?: unknown }): Promise<{ chunk: ClientEvent[]; start: string; end?: string }> {
    const dir = q.dir ?? "b";
    if (dir !== "b" && dir !== "f") throw invalidParam("dir must be b or f");
    let from: number | null = null;
    if (q.from !== undefined) {
      // Backfilled history (rooms hosted elsewhere) sits at negative stream positions.
      if (typeof q.from !== "string" || !/^s-?\d{1,15}$/.test(q.from)) throw invalidParam("from is not a token this server gave out");
      from = Number(q.from.slice(1));
    }
    let limit = 10;
    if (q.limit !== undefined) {
      if (typeof q.limit !== "string" || !/^\d{1,6}$/.test(q.limit)) throw invalidParam("limit must be a non-negative integer");
      limit = Math.min(Number(q.limit), 1000);
    }
    await this.requireJoined(roomId, actor);
    if (limit === 0) return { chunk: [], start: `s${from ?? 0}` };
    let page = await this.d.queries.timeline(roomId, { dir, from, limit });
    // The start of what is stored: in a room hosted elsewhere, ask a server in it for more (backfill).
    if (dir === "b" && page.next === null && this.d.participation) {
      const more = await this.d.participation.backfill(roomId, limit - page.events.length).catch((e: unknown) => {
        this.d.logger.warn({ roomId, err: (e as Error).message }, "backfill failed");
        return 0;
      });
      if (more > 0) {
        page = await this.d.queries.timeline(roomId, { dir, from, limit });
        // There may be more before what was just fetched: the next page asks again.
        const last = page.events.at(-1);
        if (page.next === null && last) page = { ...page, next: last.stream };
      }
    }
    // History visibility and redactions (and no dummy events) through the same use case as /event.
    const visible = await this.d.history.visibleEventsForUser(roomId, actor.userId, page.events.map((e) => ({ eventId: e.eventId, pdu: e.pdu })));
    const chunk = visible.map(toServedClientEvent);
    const start = from !== null ? `s${from}` : dir === "b" ? `s${(page.events[0]?.stream ?? 0) + 1}` : "s0";
    return { chunk, start, ...(page.next !== null ? { end: `s${page.next}` } : {}) };
  }

  // ---- directory -------------------------------------------------------------------------------

  async resolveAlias(alias: string): Promise<{ room_id: string; servers: string[] }> {
    const parsed = parseRoomAlias(alias);
    if (!parsed) throw invalidParam(`${alias} is not a room alias`);
    if (parsed.serverName !== this.serverName) {
      try {
        const r = await this.d.federation.call<{ room_id?: unknown; servers?: unknown }>("GET", parsed.serverName, `/_matrix/federation/v1/query/directory?room_alias=${encodeURIComponent(alias)}`);
        if (typeof r.room_id !== "string") throw new MatrixError(502, "M_UNKNOWN", `${parsed.serverName} answered without room_id`);
        const servers = Array.isArray(r.servers) ? r.servers.filter((s): s is string => typeof s === "string" && isValidServerName(s)) : [];
        return { room_id: r.room_id, servers: servers.length > 0 ? servers : [parsed.serverName] };
      } catch (e) {
        throw remoteRefusal(e, `resolving ${alias}`);
      }
    }
    let roomId = await this.d.queries.resolveAlias(alias);
    if (!roomId) {
      // Spec: an alias in a service's namespace that does not exist yet is asked of the service, which may create it.
      for (const reg of this.d.registry.interestedIn("aliases", alias)) {
        if (await this.d.asClient.queryAlias(reg, alias)) {
          roomId = await this.d.queries.resolveAlias(alias);
          if (roomId) break;
        }
      }
    }
    if (!roomId) throw notFound(`Room alias ${alias} not found`);
    const snap = await this.rooms.snapshot(roomId);
    return { room_id: roomId, servers: [this.serverName, ...[...snap.joinedServers].filter((s) => s !== this.serverName).sort()] };
  }

  async createAlias(actor: Actor, alias: string, roomId: unknown): Promise<void> {
    if (typeof roomId !== "string" || !isValidRoomId(roomId)) throw badJson("room_id must be a room ID");
    if (!isValidRoomAlias(alias)) throw invalidParam(`${alias} is not a valid room alias`);
    if (serverOfRoomAlias(alias) !== this.serverName) throw invalidParam(`Room aliases must be on ${this.serverName}`);
    const owner = this.d.registry.exclusiveOwner("aliases", alias, actor.reg);
    if (owner) throw new MatrixError(400, "M_EXCLUSIVE", `${alias} is in an exclusive namespace of another application service`);
    await this.requireHosted(roomId, actor);
    if (!(await this.store.setAliasIfAbsent(alias, roomId))) throw new MatrixError(409, "M_UNKNOWN", `Room alias ${alias} already exists`);
    await this.d.redis.hset(this.d.keys.aliasCreators(), alias, actor.userId);
  }

  /** Deletes a local alias: its creator, or the service whose namespace holds it. */
  async deleteAlias(actor: Actor, alias: string): Promise<void> {
    if (!isValidRoomAlias(alias)) throw invalidParam(`${alias} is not a valid room alias`);
    if (!(await this.d.queries.resolveAlias(alias))) throw notFound(`Room alias ${alias} not found`);
    const creator = await this.d.redis.hget(this.d.keys.aliasCreators(), alias);
    if (creator !== actor.userId && !this.d.registry.interested(actor.reg, "aliases", alias))
      throw forbidden(`${actor.userId} did not create ${alias} and it is not in the application service's namespaces`);
    await this.store.removeAlias(alias);
    await this.d.redis.hdel(this.d.keys.aliasCreators(), alias);
  }

  // ---- profiles --------------------------------------------------------------------------------

  async profile(userId: string): Promise<Profile> {
    if (!isValidUserId(userId)) throw invalidParam(`${userId} is not a user ID`);
    if (serverOfUserId(userId) !== this.serverName) throw notFound(`Profiles of users on other servers are not looked up (${userId})`);
    await this.ensureLocalUserKnown(userId);
    if (!(await this.d.accounts.exists(userId))) throw notFound(`Unknown user ${userId}`);
    return this.d.accounts.profile(userId);
  }

  async setProfile(actor: Actor, userId: string, field: "displayname" | "avatar_url", value: unknown): Promise<void> {
    if (userId !== actor.userId) throw forbidden(`${actor.userId} cannot change the profile of ${userId}`);
    if (value !== null && typeof value !== "string") throw badJson(`${field} must be a string or null`);
    if (typeof value === "string" && Buffer.byteLength(value) > 256) throw new MatrixError(400, "M_TOO_LARGE", `${field} is longer than 256 bytes`);
    await this.d.accounts.setProfileField(userId, field, value);
  }
}
