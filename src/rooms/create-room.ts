/**
 * createRoom with the Client-Server API's semantics (presets, initial_state, overrides,
 * invites), for a local user. The events are written in the order the spec lists: create,
 * creator's join, power levels, canonical alias, preset state (join rules, history visibility,
 * guest access), initial_state, name, topic, then invites.
 */
import { buildEvent } from "../protocol/event-signing.js";
import { badJson, forbidden, invalidParam, MatrixError, unsupportedRoomVersion } from "../protocol/errors.js";
import { DEFAULT_ROOM_VERSION, getRoomVersion } from "../protocol/room-versions.js";
import { isValidUserId, serverOfUserId, isValidNewLocalpart } from "../protocol/ids.js";
import { isPlainObject } from "../protocol/pdu.js";
import { stateField } from "../store/room-store.js";
import type { RoomContext } from "./room-service.js";

export type Preset = "private_chat" | "public_chat" | "trusted_private_chat";

export interface CreateRoomInput {
  creator: string;
  preset?: Preset;
  room_version?: string;
  name?: string;
  topic?: string;
  room_alias_name?: string;
  /** Shortcut for an m.room.join_rules event; `knock` and `knock_restricted` are the point of Gatehouse. */
  join_rule?: string;
  initial_state?: { type: string; state_key?: string; content: Record<string, unknown> }[];
  creation_content?: Record<string, unknown>;
  power_level_content_override?: Record<string, unknown>;
  invite?: string[];
}

export interface CreatedRoom {
  room_id: string;
  room_version: string;
  room_alias?: string;
}

/** Power levels Synapse gives a new room (the spec leaves them to the server). */
export function defaultPowerLevels(creator: string, privilegedCreators: boolean, preset: Preset, invitees: string[]): Record<string, unknown> {
  const users: Record<string, number> = privilegedCreators ? {} : { [creator]: 100 };
  if (preset === "trusted_private_chat") for (const u of invitees) users[u] = 100;
  return {
    users,
    users_default: 0,
    events: {
      "m.room.name": 50,
      "m.room.power_levels": 100,
      "m.room.history_visibility": 100,
      "m.room.canonical_alias": 50,
      "m.room.avatar": 50,
      "m.room.tombstone": 100,
      "m.room.server_acl": 100,
      "m.room.encryption": 100,
    },
    events_default: 0,
    state_default: 50,
    ban: 50,
    kick: 50,
    redact: 50,
    invite: preset === "public_chat" ? 0 : 50,
  };
}

const JOIN_RULES = ["public", "invite", "knock", "restricted", "knock_restricted", "private"];

export async function createRoom(ctx: RoomContext, input: CreateRoomInput): Promise<CreatedRoom> {
  const { rooms, store } = ctx;
  const serverName = rooms.serverName;
  if (typeof input.creator !== "string" || !isValidUserId(input.creator) || serverOfUserId(input.creator) !== serverName)
    throw invalidParam(`creator must be a user ID on ${serverName}`);
  const versionId = input.room_version ?? DEFAULT_ROOM_VERSION;
  const version = getRoomVersion(versionId);
  // Versions 1–2 need server-chosen event IDs and the old reference format; nobody should create them.
  if (!version || !version.eventRefsAreIds) throw unsupportedRoomVersion(`Room version ${versionId} is not supported for new rooms`);
  const preset: Preset = input.preset ?? "private_chat";
  if (!["private_chat", "public_chat", "trusted_private_chat"].includes(preset)) throw invalidParam(`unknown preset ${preset}`);
  if (input.join_rule !== undefined) {
    if (!JOIN_RULES.includes(input.join_rule)) throw invalidParam(`unknown join_rule ${input.join_rule}`);
    if (input.join_rule === "knock" && !version.knock) throw invalidParam(`room version ${versionId} does not support knocking (7+ needed)`);
    if (input.join_rule === "knock_restricted" && !version.knockRestricted)
      throw invalidParam(`room version ${versionId} does not support knock_restricted (10+ needed)`);
  }
  const invitees = input.invite ?? [];
  for (const u of invitees) if (typeof u !== "string" || !isValidUserId(u)) throw invalidParam(`invalid user ID in invite: ${String(u)}`);
  if (input.creation_content !== undefined && !isPlainObject(input.creation_content)) throw badJson("creation_content must be an object");
  if (input.power_level_content_override !== undefined && !isPlainObject(input.power_level_content_override))
    throw badJson("power_level_content_override must be an object");
  let alias: string | undefined;
  if (input.room_alias_name !== undefined) {
    if (typeof input.room_alias_name !== "string" || !isValidNewLocalpart(input.room_alias_name.toLowerCase(), serverName) || input.room_alias_name.includes(":"))
      throw invalidParam("room_alias_name is not a valid alias localpart");
    alias = `#${input.room_alias_name}:${serverName}`;
    if (await store.aliasTarget(alias)) throw new MatrixError(400, "M_ROOM_IN_USE", `Room alias ${alias} already taken`);
  }
  for (const s of input.initial_state ?? []) {
    if (!isPlainObject(s) || typeof s.type !== "string" || !isPlainObject(s.content)) throw badJson("initial_state entries need type and content");
  }

  // 1. m.room.create
  const createContent: Record<string, unknown> = { ...(input.creation_content ?? {}), room_version: versionId };
  if (version.createHasCreator) createContent.creator = input.creator;
  else delete createContent.creator;
  const now = rooms.now();
  let roomId: string;
  let createPdu;
  let createId: string;
  if (version.roomIdIsCreateEventHash) {
    const built = buildEvent(
      { type: "m.room.create", sender: input.creator, state_key: "", content: createContent, prev_events: [], auth_events: [], depth: 1 },
      { roomVersion: version, serverName, key: rooms.signingKey, clock: () => now },
    );
    roomId = built.roomId;
    createPdu = built.pdu;
    createId = built.eventId;
  } else {
    roomId = rooms.newLegacyRoomId();
    const built = buildEvent(
      { type: "m.room.create", room_id: roomId, sender: input.creator, state_key: "", content: createContent, prev_events: [], auth_events: [], depth: 1 },
      { roomVersion: version, serverName, key: rooms.signingKey, clock: () => now },
    );
    createPdu = built.pdu;
    createId = built.eventId;
  }
  const persisted = await rooms.persistCreateEvent(roomId, createId, createPdu, { version: versionId, creator: input.creator, createdTs: now });
  if (persisted !== "persisted") throw new Error(`create event for ${roomId} was not persisted: ${persisted}`);

  const send = (type: string, stateKey: string, content: Record<string, unknown>) =>
    rooms.sendLocalEvent(roomId, { type, sender: input.creator, stateKey, content });

  // 2. the creator joins
  await send("m.room.member", input.creator, { membership: "join" });
  // 3. power levels (override merged over the defaults, like the client API)
  const pl = { ...defaultPowerLevels(input.creator, version.privilegedCreators, preset, invitees), ...(input.power_level_content_override ?? {}) };
  await send("m.room.power_levels", "", pl);
  // 4. canonical alias
  if (alias) {
    await send("m.room.canonical_alias", "", { alias });
    await store.setAlias(alias, roomId);
  }
  // 5. preset state, unless initial_state sets the same key
  const initial = new Map((input.initial_state ?? []).map((s) => [stateField(s.type, s.state_key ?? ""), s]));
  const joinRule = input.join_rule ?? (preset === "public_chat" ? "public" : "invite");
  const presetState: [string, Record<string, unknown>][] = [
    ["m.room.join_rules", { join_rule: joinRule }],
    ["m.room.history_visibility", { history_visibility: "shared" }],
  ];
  if (preset !== "public_chat") presetState.push(["m.room.guest_access", { guest_access: "can_join" }]);
  for (const [type, content] of presetState) {
    if (type === "m.room.join_rules" && input.join_rule !== undefined) {
      await send(type, "", content);
      initial.delete(stateField(type, ""));
      continue;
    }
    if (!initial.has(stateField(type, ""))) await send(type, "", content);
  }
  // 6. initial_state
  for (const s of initial.values()) await send(s.type, s.state_key ?? "", s.content);
  // 7. name and topic
  if (typeof input.name === "string") await send("m.room.name", "", { name: input.name });
  if (typeof input.topic === "string") await send("m.room.topic", "", { topic: input.topic });
  // 8. invites are sent by the caller through the invite use case (they need federation).
  if (invitees.some((u) => serverOfUserId(u) === serverName)) {
    for (const u of invitees.filter((x) => serverOfUserId(x) === serverName)) {
      await send("m.room.member", u, { membership: "invite" });
    }
  }
  return { room_id: roomId, room_version: versionId, ...(alias ? { room_alias: alias } : {}) };
}
