/**
 * Gatehouse's own users in rooms hosted elsewhere: knock (make_knock/send_knock), rescind
 * (make_leave/send_leave), answer invites that arrive over /v2/invite (the knock was accepted),
 * and join (make_join/send_join). Gatehouse keeps a record per (local user, remote room), and,
 * after a join, the room itself (participation.ts): its state and timeline, in the structures
 * of hosted rooms. A further local user joins or leaves such a room with a local event, sent to
 * every server in the room (as Synapse does for a room it is in).
 */
import type { Redis } from "ioredis";
import { badJson, forbidden, incompatibleRoomVersion, invalidParam, MatrixError, notFound } from "../protocol/errors.js";
import { buildEvent, addEventSignature } from "../protocol/event-signing.js";
import { roomIdFromCreateEvent } from "../protocol/event-hashing.js";
import { getRoomVersion, ROOM_VERSIONS, type RoomVersion } from "../protocol/room-versions.js";
import { isValidRoomId, isValidUserId, parseServerName, serverOfUserId } from "../protocol/ids.js";
import { isPlainObject, type Pdu } from "../protocol/pdu.js";
import { checkEventNesting, validatePduFormat } from "../protocol/pdu-format.js";
import type { SigningKey } from "../protocol/signing-key.js";
import type { RedisKeys } from "../store/redis-keys.js";
import type { FederationClient } from "../net/federation-client.js";
import { remoteRefusal } from "./membership.js";
import type { EventVerifier } from "./event-verifier.js";
import type { Logger } from "../logger.js";
import type { Participation } from "./participation.js";
import type { RoomService } from "./room-service.js";
import { currentMembership } from "../protocol/auth/index.js";
import { stateLookup } from "./room-service.js";

export type RemoteMembership = "knock" | "invite" | "join" | "leave";

export interface StrippedStateEvent {
  type: string;
  state_key: string;
  sender: string;
  content: Record<string, unknown>;
}

export interface RemoteMembershipRecord {
  user_id: string;
  room_id: string;
  membership: RemoteMembership;
  room_version: string;
  /** Servers to use for this room (where we knocked, the inviter's server…). */
  via: string[];
  event_id: string;
  reason?: string;
  /** Stripped state the remote gave us (knock_room_state / invite_room_state). */
  room_state: StrippedStateEvent[];
  /** The room that replaced this one, if its state showed a tombstone. */
  replacement_room?: string;
  /** Join automatically when an invite arrives (knock accepted). */
  auto_join?: boolean;
  updated_ts: number;
}

export interface RemoteRoomsDeps {
  redis: Redis;
  keys: RedisKeys;
  client: FederationClient;
  serverName: string;
  signingKey: SigningKey;
  verifier: EventVerifier;
  logger: Logger;
  clock?: () => number;
  onKnockOut?: (outcome: "sent" | "failed") => void;
  /** An invite from another server was accepted (application services are told: appservice/push.ts). */
  onInvite?: (pdu: Pdu, eventId: string, inviteRoomState: StrippedStateEvent[]) => Promise<unknown>;
  /** Whether a local user exists (rooms/local-users.ts): invites for others are refused, nothing written. */
  localUserExists?: (userId: string) => Promise<boolean>;
  /** Keeps the room after a join (checked send_join response), and local events in it. */
  participation?: Participation;
  rooms?: RoomService;
  /** Ask for partial state on send_join (omit_members=true; GATEHOUSE_PARTIAL_STATE_JOINS). */
  partialStateJoins?: boolean;
}

/** The versions we offer in `ver`: every version we can build events for (IDs are hashes). */
function offeredVersions(): string[] {
  return [...ROOM_VERSIONS.values()].filter((v) => v.eventRefsAreIds).map((v) => v.id);
}

/** Strips a knock/invite state entry to the four keys clients see; accepts stripped or full PDUs. */
export function stripStateEvent(entry: unknown): StrippedStateEvent | null {
  if (!isPlainObject(entry)) return null;
  const { type, state_key, sender, content } = entry;
  if (typeof type !== "string" || typeof state_key !== "string" || typeof sender !== "string" || !isPlainObject(content)) return null;
  return { type, state_key, sender, content };
}

/**
 * Filters stripped state from a remote: full PDUs must belong to the room (for v12, the create
 * event must hash to the room ID); stripped entries are kept as they are (older servers send them).
 */
export function acceptRoomState(entries: unknown, roomId: string, version: RoomVersion): StrippedStateEvent[] {
  if (!Array.isArray(entries)) return [];
  const out: StrippedStateEvent[] = [];
  for (const e of entries) {
    const stripped = stripStateEvent(e);
    if (!stripped || !isPlainObject(e)) continue;
    if ("hashes" in e || "auth_events" in e) {
      // A full PDU: it must be in this room.
      if (stripped.type === "m.room.create" && version.roomIdIsCreateEventHash) {
        try {
          if (roomIdFromCreateEvent(e, version) !== roomId) continue;
        } catch {
          continue;
        }
      } else if (e.room_id !== roomId) continue;
    }
    out.push(stripped);
  }
  return out;
}

function replacementOf(state: StrippedStateEvent[]): string | undefined {
  const t = state.find((s) => s.type === "m.room.tombstone" && s.state_key === "");
  const r = t?.content.replacement_room;
  return typeof r === "string" ? r : undefined;
}

export class RemoteRooms {
  private readonly clock: () => number;
  /** Joins in progress for auto_join, so an invite retried by the remote starts one join. */
  private readonly autoJoins = new Set<string>();

  constructor(private readonly d: RemoteRoomsDeps) {
    this.clock = d.clock ?? Date.now;
  }

  /** Whether send_join asks for partial state: the setting, and a place to keep the room. */
  private partialJoins(): boolean {
    return this.d.partialStateJoins === true && this.d.participation !== undefined;
  }

  // ---- records ---------------------------------------------------------------------------------

  async get(userId: string, roomId: string): Promise<RemoteMembershipRecord | null> {
    const raw = await this.d.redis.hget(this.d.keys.remoteMemberships(userId), roomId);
    return raw ? (JSON.parse(raw) as RemoteMembershipRecord) : null;
  }

  async list(userId?: string): Promise<RemoteMembershipRecord[]> {
    const users = userId ? [userId] : await this.d.redis.smembers(this.d.keys.remoteMembers());
    const out: RemoteMembershipRecord[] = [];
    for (const u of users) {
      for (const raw of Object.values(await this.d.redis.hgetall(this.d.keys.remoteMemberships(u)))) out.push(JSON.parse(raw) as RemoteMembershipRecord);
    }
    return out.sort((a, b) => a.updated_ts - b.updated_ts);
  }

  private async save(record: RemoteMembershipRecord): Promise<void> {
    // Two slots on a Redis Cluster: the user listed first (a listed user without records is harmless).
    await this.d.redis.sadd(this.d.keys.remoteMembers(), record.user_id);
    await this.d.redis.hset(this.d.keys.remoteMemberships(record.user_id), record.room_id, JSON.stringify(record));
  }

  private checkLocalUser(userId: unknown): string {
    if (typeof userId !== "string" || !isValidUserId(userId) || serverOfUserId(userId) !== this.d.serverName)
      throw invalidParam(`user_id must be a user on ${this.d.serverName}`);
    return userId;
  }

  private checkVia(roomId: string, via: unknown, fallback: string[] = []): string[] {
    const list = Array.isArray(via) ? via : via === undefined ? [] : [via];
    const servers = [...list, ...fallback].filter((s): s is string => typeof s === "string" && parseServerName(s) !== null);
    // A pre-v12 room ID names the server that created it: a sensible last resort.
    const idServer = roomId.includes(":") ? roomId.slice(roomId.indexOf(":") + 1) : null;
    if (idServer && parseServerName(idServer)) servers.push(idServer);
    const unique = [...new Set(servers)].filter((s) => s !== this.d.serverName);
    if (unique.length === 0) throw invalidParam("via must name at least one server in the room");
    return unique;
  }

  /**
   * Runs make_X then send_X against each server in `via` until one succeeds. The template is
   * checked (spec: room_id, sender, state_key, type and membership must be what we asked for)
   * before we sign it.
   */
  private async handshake(
    membership: "knock" | "join" | "leave",
    userId: string,
    roomId: string,
    via: string[],
    extraContent: Record<string, unknown>,
  ): Promise<{ server: string; version: RoomVersion; eventId: string; pdu: Pdu; response: unknown }> {
    let lastError: MatrixError | null = null;
    for (const server of via) {
      try {
        const query = membership === "leave" ? "" : "?" + offeredVersions().map((v) => `ver=${encodeURIComponent(v)}`).join("&");
        const made = await this.d.client.call<{ room_version?: unknown; event?: unknown }>(
          "GET",
          server,
          `/_matrix/federation/v1/make_${membership}/${encodeURIComponent(roomId)}/${encodeURIComponent(userId)}${query}`,
        );
        const versionId = typeof made.room_version === "string" ? made.room_version : "1";
        const version = getRoomVersion(versionId);
        if (!version || !version.eventRefsAreIds) throw incompatibleRoomVersion(versionId);
        if (membership === "knock" && !version.knock) throw forbidden(`room version ${versionId} does not support knocking`);
        const t = made.event;
        if (!isPlainObject(t)) throw new MatrixError(502, "M_UNKNOWN", `${server} sent no event template`);
        const content = isPlainObject(t.content) ? t.content : {};
        if (t.room_id !== roomId || t.sender !== userId || t.state_key !== userId || t.type !== "m.room.member" || content.membership !== membership)
          throw new MatrixError(502, "M_UNKNOWN", `${server} sent a malformed make_${membership} template`);
        const { signatures: _s, hashes: _h, unsigned: _u, origin: _o, event_id: _e, ...fields } = t as Record<string, unknown>;
        const built = buildEvent(
          { ...(fields as Record<string, unknown>), content: { ...content, ...extraContent, membership }, origin_server_ts: this.clock() } as never,
          { roomVersion: version, serverName: this.d.serverName, key: this.d.signingKey, clock: this.clock },
        );
        const path =
          membership === "knock"
            ? `/_matrix/federation/v1/send_knock/${encodeURIComponent(roomId)}/${encodeURIComponent(built.eventId)}`
            : `/_matrix/federation/v2/send_${membership}/${encodeURIComponent(roomId)}/${encodeURIComponent(built.eventId)}${membership === "join" && this.partialJoins() ? "?omit_members=true" : ""}`;
        const response = await this.d.client.call("PUT", server, path, built.pdu);
        return { server, version, eventId: built.eventId, pdu: built.pdu, response };
      } catch (e) {
        lastError = remoteRefusal(e, `${membership} ${roomId} via ${server}`);
        this.d.logger.info({ roomId, server, membership, err: lastError.message }, "remote membership handshake failed");
        // A definite refusal by the room (403, incompatible version) will not change on another server.
        if (lastError.status === 403 || lastError.errcode === "M_INCOMPATIBLE_ROOM_VERSION") break;
      }
    }
    throw lastError ?? new MatrixError(502, "M_UNKNOWN", "no server to ask");
  }

  // ---- knock, rescind, join, leave ------------------------------------------------------------

  async knock(input: { user_id: unknown; room_id: unknown; via?: unknown; reason?: unknown; auto_join?: unknown; follow_tombstones?: unknown }): Promise<RemoteMembershipRecord> {
    const userId = this.checkLocalUser(input.user_id);
    if (typeof input.room_id !== "string" || !isValidRoomId(input.room_id)) throw invalidParam("room_id must be a room ID");
    if (input.reason !== undefined && typeof input.reason !== "string") throw invalidParam("reason must be a string");
    let roomId = input.room_id;
    let via = this.checkVia(roomId, input.via);
    const followed: string[] = [];
    for (let hop = 0; ; hop++) {
      let result;
      try {
        result = await this.handshake("knock", userId, roomId, via, input.reason ? { reason: input.reason } : {});
        this.d.onKnockOut?.("sent");
      } catch (e) {
        this.d.onKnockOut?.("failed");
        // A tombstoned room refuses knocks naming its replacement (Gatehouse does, with
        // replacement_room): follow it like a client following m.room.tombstone.
        const replacement = e instanceof MatrixError ? (e.extra.replacement_room as unknown) : undefined;
        if (input.follow_tombstones !== false && typeof replacement === "string" && hop < 5 && !followed.includes(replacement)) {
          followed.push(roomId);
          roomId = replacement;
          continue;
        }
        throw e;
      }
      const state = acceptRoomState((result.response as { knock_room_state?: unknown })?.knock_room_state, roomId, result.version);
      const replacement = replacementOf(state);
      const record: RemoteMembershipRecord = {
        user_id: userId,
        room_id: roomId,
        membership: "knock",
        room_version: result.version.id,
        via: [result.server, ...via.filter((s) => s !== result.server)],
        event_id: result.eventId,
        ...(typeof input.reason === "string" ? { reason: input.reason } : {}),
        room_state: state,
        ...(replacement ? { replacement_room: replacement } : {}),
        ...(input.auto_join === true ? { auto_join: true } : {}),
        updated_ts: this.clock(),
      };
      await this.save(record);
      // The room answered with a tombstone in its state: knock on the replacement too.
      if (replacement && input.follow_tombstones !== false && hop < 5 && !followed.includes(replacement)) {
        followed.push(roomId);
        roomId = replacement;
        via = this.checkVia(roomId, undefined, via);
        continue;
      }
      return record;
    }
  }

  async leave(input: { user_id: unknown; room_id: unknown; via?: unknown }): Promise<RemoteMembershipRecord> {
    const userId = this.checkLocalUser(input.user_id);
    if (typeof input.room_id !== "string") throw invalidParam("room_id is required");
    const existing = await this.get(userId, input.room_id);
    const via = this.checkVia(input.room_id, input.via, existing?.via ?? []);
    const local = await this.localEventIfParticipating(userId, input.room_id, "leave");
    const result = local ?? (await this.handshake("leave", userId, input.room_id, via, {}));
    const record: RemoteMembershipRecord = {
      ...(existing ?? { room_state: [], via }),
      user_id: userId,
      room_id: input.room_id,
      membership: "leave",
      room_version: result.version.id,
      event_id: result.eventId,
      updated_ts: this.clock(),
    } as RemoteMembershipRecord;
    await this.save(record);
    return record;
  }

  async join(input: { user_id: unknown; room_id: unknown; via?: unknown }): Promise<RemoteMembershipRecord> {
    const userId = this.checkLocalUser(input.user_id);
    if (typeof input.room_id !== "string" || !isValidRoomId(input.room_id)) throw invalidParam("room_id must be a room ID");
    const existing = await this.get(userId, input.room_id);
    const via = this.checkVia(input.room_id, input.via, existing?.via ?? []);
    const local = await this.localEventIfParticipating(userId, input.room_id, "join");
    const result = local ?? (await this.handshake("join", userId, input.room_id, via, {}));
    const answer = result.response as { state?: unknown; event?: unknown };
    if (!local && this.d.participation) {
      // Checked, then stored; a bad answer is refused (502) with nothing stored.
      await this.d.participation.storeJoin({ server: result.server, roomId: input.room_id, version: result.version, joinEventId: result.eventId, joinPdu: result.pdu, response: answer, partial: this.partialJoins() });
    }
    if (!Array.isArray(answer?.state)) throw new MatrixError(502, "M_UNKNOWN", `${result.server} answered send_join without state`);
    const record: RemoteMembershipRecord = {
      user_id: userId,
      room_id: input.room_id,
      membership: "join",
      room_version: result.version.id,
      via: [result.server, ...via.filter((s) => s !== result.server)],
      event_id: result.eventId,
      room_state: acceptRoomState(answer.state, input.room_id, result.version).filter((s) =>
        ["m.room.create", "m.room.name", "m.room.topic", "m.room.avatar", "m.room.join_rules", "m.room.canonical_alias", "m.room.encryption", "m.room.tombstone"].includes(s.type),
      ),
      ...(existing?.reason ? { reason: existing.reason } : {}),
      updated_ts: this.clock(),
    };
    await this.save(record);
    return record;
  }

  /**
   * In a room hosted elsewhere that Gatehouse is in (a local user joined), a join or leave is a
   * local event built on the room's extremities and sent to every server in it, with no
   * handshake (as Synapse does). Null when Gatehouse is not in the room: the handshake follows.
   */
  private async localEventIfParticipating(
    userId: string,
    roomId: string,
    membership: "join" | "leave",
  ): Promise<{ server: string; version: RoomVersion; eventId: string; pdu: Pdu; response: unknown } | null> {
    const { rooms, participation } = this.d;
    if (!rooms || !participation) return null;
    const snap = await participation.snapshotIfElsewhere(roomId);
    if (!snap || !participation.localUserJoined(snap)) return null;
    // Leaving a room our user is not joined to (a pending invite or knock) goes through make_leave.
    const current = currentMembership(stateLookup(snap.state), userId);
    if (membership === "leave" && current !== "join") return null;
    const ev = await rooms.sendLocalEvent(roomId, { type: "m.room.member", sender: userId, stateKey: userId, content: { membership } });
    return { server: this.d.serverName, version: snap.version, eventId: ev.eventId, pdu: ev.pdu, response: { state: [] } };
  }

  /**
   * Another server's member event for one of our users in a room hosted elsewhere, received over
   * /send (a kick, a ban, an invite): the user's record follows it (a ban is recorded as "leave",
   * the record's memberships being the four a local user can hold). Rooms without a record
   * (hosted here) are left alone.
   */
  async noteMembership(roomId: string, pdu: Pdu): Promise<void> {
    const userId = pdu.state_key;
    if (typeof userId !== "string" || serverOfUserId(userId) !== this.d.serverName) return;
    const existing = await this.get(userId, roomId);
    const membership = (pdu.content as { membership?: unknown }).membership;
    if (!existing || typeof membership !== "string" || !["knock", "invite", "join", "leave", "ban"].includes(membership)) return;
    const record = { ...existing, membership: (membership === "ban" ? "leave" : membership) as RemoteMembership, updated_ts: this.clock() };
    if (typeof (pdu.content as { reason?: unknown }).reason === "string") record.reason = (pdu.content as { reason: string }).reason;
    await this.save(record);
  }

  // ---- inbound /v2/invite ---------------------------------------------------------------------

  /**
   * An invite for one of our users (typically: our knock was accepted). Checks it, countersigns
   * it and records it; answers `{event}`. Joins right away when the knock asked for auto_join.
   */
  async receiveInvite(origin: string, roomId: string, pathEventId: string, body: unknown): Promise<{ event: Pdu }> {
    if (!isPlainObject(body)) throw badJson("Request body must be an object");
    const versionId = body.room_version;
    if (typeof versionId !== "string") throw new MatrixError(400, "M_MISSING_PARAM", "room_version is required");
    const version = getRoomVersion(versionId);
    if (!version || !version.eventRefsAreIds) throw incompatibleRoomVersion(versionId);
    const event = body.event;
    const formatError = validatePduFormat(event, version);
    if (formatError) throw invalidParam(formatError.message);
    // We countersign it and our user may join from it: an event we decide on (json-nesting.ts).
    const nesting = checkEventNesting(event);
    if (nesting) throw nesting;
    const pdu = event as Pdu;
    const content = pdu.content as Record<string, unknown>;
    if (pdu.type !== "m.room.member" || content.membership !== "invite") throw invalidParam("Event is not an invite");
    if (pdu.room_id !== roomId) throw invalidParam("room_id does not match the path");
    const target = pdu.state_key!;
    if (serverOfUserId(target) !== this.d.serverName) throw invalidParam(`${target} is not a user on ${this.d.serverName}`);
    if (serverOfUserId(pdu.sender) !== origin) throw forbidden(`The inviter ${pdu.sender} is not on the requesting server ${origin}`);
    // Only users who exist (local-users.ts); 403 M_FORBIDDEN is the spec's refusal of an invite.
    if (this.d.localUserExists && !(await this.d.localUserExists(target))) throw forbidden(`${target} is not a user on ${this.d.serverName}`);
    const checked = await this.d.verifier.verify(pdu, version);
    if (!checked.ok) throw forbidden(checked.reason);
    if (checked.eventId !== pathEventId) throw invalidParam("Event ID in the path does not match the event");
    const state = acceptRoomState(body.invite_room_state, roomId, version);
    if (version.roomIdIsCreateEventHash && !state.some((s) => s.type === "m.room.create")) {
      // Spec v1.16: SHOULD reject v12+ invites whose stripped state lacks the create event.
      throw new MatrixError(400, "M_MISSING_PARAM", "invite_room_state must include the m.room.create event");
    }
    const signed = addEventSignature(pdu, this.d.serverName, this.d.signingKey, version);
    const existing = await this.get(target, roomId);
    const record: RemoteMembershipRecord = {
      user_id: target,
      room_id: roomId,
      membership: "invite",
      room_version: version.id,
      via: [...new Set([origin, ...(existing?.via ?? [])])],
      event_id: checked.eventId,
      ...(typeof content.reason === "string" ? { reason: content.reason } : existing?.reason ? { reason: existing.reason } : {}),
      room_state: state,
      ...(existing?.auto_join ? { auto_join: true } : {}),
      updated_ts: this.clock(),
    };
    await this.save(record);
    await this.d.onInvite?.(pdu, checked.eventId, state);
    if (existing?.membership === "knock" && existing.auto_join) this.scheduleAutoJoin(target, roomId);
    return { event: signed };
  }

  private scheduleAutoJoin(userId: string, roomId: string): void {
    const key = `${userId}\u0000${roomId}`;
    if (this.autoJoins.has(key)) return;
    this.autoJoins.add(key);
    // After the invite answer has gone back: the inviting server must persist the invite first.
    setTimeout(() => {
      this.join({ user_id: userId, room_id: roomId })
        .then(() => this.d.logger.info({ userId, roomId }, "joined after the knock was accepted"))
        .catch((e) => this.d.logger.warn({ userId, roomId, err: (e as Error).message }, "auto-join after accepted knock failed"))
        .finally(() => this.autoJoins.delete(key));
    }, 500).unref();
  }

  async requireRecord(userId: string, roomId: string): Promise<RemoteMembershipRecord> {
    const r = await this.get(userId, roomId);
    if (!r) throw notFound(`${userId} has no membership record for ${roomId}`);
    return r;
  }
}

