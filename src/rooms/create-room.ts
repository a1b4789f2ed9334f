/**
 * createRoom with the Client-Server API's semantics (presets, initial_state, overrides,
 * invites), for a local user. The events are built in the order the spec lists: create,
 * creator's join, power levels, canonical alias, preset state (join rules, history visibility,
 * guest access), initial_state, name, topic, then invites.
 *
 * All or nothing: every event is built, size-checked and authorised in memory against the state
 * the previous ones produce, and only then is the whole room written by one Lua script
 * (RoomService.persistNewRoom), with the state groups that persisting the events one by one
 * would write. Any refusal (bad content, an auth failure at event k, a taken alias) leaves no
 * trace of the room in Redis.
 */
import { invalidParam, badJson, MatrixError, unsupportedRoomVersion } from "../protocol/errors.js";
import { DEFAULT_ROOM_VERSION, getRoomVersion } from "../protocol/room-versions.js";
import { isValidUserId, serverOfUserId, isValidNewLocalpart } from "../protocol/ids.js";
import { isPlainObject } from "../protocol/pdu.js";
import { stateField } from "../store/room-store.js";
import { buildLocalPdu, type LocalEventInput, type RoomContext, type RoomSnapshot } from "./room-service.js";
import type { Pdu } from "../protocol/pdu.js";
import { joinedServerOf } from "../store/state-cache.js";

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

export interface CreateRoomHooks {
  /**
   * Called before each step: building event k (1 = the create event), then "write". Tests inject
   * a fault here to prove that a failure at any step leaves nothing behind.
   */
  beforeStep?: (step: number, label: string) => void | Promise<void>;
}

type InitialStateEntry = { type: string; state_key: string; content: Record<string, unknown> };

function checkJoinRule(rule: unknown, versionId: string, version: NonNullable<ReturnType<typeof getRoomVersion>>, where: string): void {
  if (typeof rule !== "string" || !JOIN_RULES.includes(rule)) throw invalidParam(`unknown join_rule ${String(rule)} in ${where}`);
  if (rule === "knock" && !version.knock) throw invalidParam(`room version ${versionId} does not support knocking (7+ needed)`);
  if (rule === "knock_restricted" && !version.knockRestricted) throw invalidParam(`room version ${versionId} does not support knock_restricted (10+ needed)`);
  if (rule === "restricted" && !version.restrictedJoins) throw invalidParam(`room version ${versionId} does not support restricted joins (8+ needed)`);
}

export async function createRoom(ctx: RoomContext, input: CreateRoomInput, hooks: CreateRoomHooks = {}): Promise<CreatedRoom> {
  const { rooms, store } = ctx;
  const serverName = rooms.serverName;
  if (typeof input.creator !== "string" || !isValidUserId(input.creator) || serverOfUserId(input.creator) !== serverName)
    throw invalidParam(`creator must be a user ID on ${serverName}`);
  const versionId = input.room_version ?? DEFAULT_ROOM_VERSION;
  if (typeof versionId !== "string") throw invalidParam("room_version must be a string");
  const version = getRoomVersion(versionId);
  // Versions 1–2 need server-chosen event IDs and the old reference format; nobody should create them.
  if (!version || !version.eventRefsAreIds) throw unsupportedRoomVersion(`Room version ${versionId} is not supported for new rooms`);
  const preset: Preset = input.preset ?? "private_chat";
  if (!["private_chat", "public_chat", "trusted_private_chat"].includes(preset)) throw invalidParam(`unknown preset ${String(preset)}`);
  if (input.join_rule !== undefined) checkJoinRule(input.join_rule, versionId, version, "join_rule");
  for (const key of ["name", "topic"] as const)
    if (input[key] !== undefined && typeof input[key] !== "string") throw invalidParam(`${key} must be a string`);
  if (input.invite !== undefined && !Array.isArray(input.invite)) throw invalidParam("invite must be a list of user IDs");
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
  if (input.initial_state !== undefined && !Array.isArray(input.initial_state)) throw badJson("initial_state must be a list of state events");
  // initial_state by (type, state_key); a later entry for the same key replaces an earlier one.
  const initial = new Map<string, InitialStateEntry>();
  for (const s of input.initial_state ?? []) {
    if (!isPlainObject(s) || typeof s.type !== "string" || !isPlainObject(s.content)) throw badJson("initial_state entries need type and content");
    if (s.state_key !== undefined && typeof s.state_key !== "string") throw badJson("initial_state state_key must be a string");
    // The create event is the room's first event and there is only one (creation_content sets its content).
    if (s.type === "m.room.create") throw invalidParam("initial_state must not contain m.room.create: use creation_content");
    initial.set(stateField(s.type, s.state_key ?? ""), { type: s.type, state_key: s.state_key ?? "", content: s.content });
  }

  // Join rules. Like Synapse, an initial_state m.room.join_rules event replaces the preset's; the
  // `join_rule` shortcut (Gatehouse's own) is merged into it rather than replacing it, so its
  // other fields (the `allow` list of restricted rooms) are kept. Contradicting rules are refused.
  const joinRulesField = stateField("m.room.join_rules", "");
  const initialJoinRules = initial.get(joinRulesField);
  let joinRulesContent: Record<string, unknown> | undefined;
  if (initialJoinRules) {
    const given = initialJoinRules.content.join_rule;
    if (input.join_rule !== undefined && given !== undefined && given !== input.join_rule)
      throw invalidParam(`join_rule ${input.join_rule} contradicts the initial_state m.room.join_rules (${String(given)})`);
    const merged = { ...initialJoinRules.content, join_rule: input.join_rule ?? given };
    checkJoinRule(merged.join_rule, versionId, version, "initial_state m.room.join_rules");
    // Sent in its initial_state position (step 6), as Synapse does.
    initial.set(joinRulesField, { ...initialJoinRules, content: merged });
  } else {
    joinRulesContent = { join_rule: input.join_rule ?? (preset === "public_chat" ? "public" : "invite") };
  }

  // 1. m.room.create
  let step = 0;
  await hooks.beforeStep?.(++step, "m.room.create");
  const createContent: Record<string, unknown> = { ...(input.creation_content ?? {}), room_version: versionId };
  if (version.createHasCreator) createContent.creator = input.creator;
  else delete createContent.creator;
  const now = rooms.now();
  const legacyRoomId = version.roomIdIsCreateEventHash ? undefined : rooms.newLegacyRoomId();
  const created = buildLocalPdu(
    {
      type: "m.room.create",
      ...(legacyRoomId ? { room_id: legacyRoomId } : {}),
      sender: input.creator,
      state_key: "",
      content: createContent,
      prev_events: [],
      auth_events: [],
      depth: 1,
    },
    { roomVersion: version, serverName, key: rooms.signingKey, clock: () => now },
  );
  const roomId = created.roomId;

  // The room as it grows in memory: every next event is built and authorised against it.
  const events: { eventId: string; pdu: Pdu }[] = [{ eventId: created.eventId, pdu: created.pdu }];
  const createField = stateField("m.room.create", "");
  const state = new Map<string, Pdu>([[createField, created.pdu]]);
  const stateIds = new Map<string, string>([[createField, created.eventId]]);
  let snap: RoomSnapshot = {
    room: { roomId, version: versionId, creator: input.creator, createdTs: now, depth: 1, stream: 1 },
    version,
    stream: 1,
    depth: 1,
    state,
    stateIds,
    joinedServers: new Set(),
    extremities: [created.eventId],
  };
  const send = async (type: string, stateKey: string, content: Record<string, unknown>) => {
    await hooks.beforeStep?.(++step, type);
    let ev;
    try {
      ev = rooms.buildLocalEvent(snap, { type, sender: input.creator, stateKey, content } satisfies LocalEventInput);
    } catch (e) {
      // The auth rules refuse an event of the room being built: the requested initial state is
      // invalid (the spec's M_INVALID_ROOM_STATE, "e.g. the user's power level is set below that
      // necessary to set the room name"), not a forbidden action on an existing room.
      if (e instanceof MatrixError && e.errcode === "M_FORBIDDEN")
        throw new MatrixError(400, "M_INVALID_ROOM_STATE", `${type}${stateKey ? ` (${stateKey})` : ""} would be refused by the auth rules: ${e.message}`);
      throw e;
    }
    events.push({ eventId: ev.eventId, pdu: ev.pdu });
    const field = stateField(type, stateKey);
    state.set(field, ev.pdu);
    stateIds.set(field, ev.eventId);
    const joined = new Set<string>();
    for (const pdu of state.values()) {
      const server = joinedServerOf(pdu);
      if (server) joined.add(server);
    }
    snap = { ...snap, stream: snap.stream + 1, depth: ev.pdu.depth, extremities: [ev.eventId], joinedServers: joined };
  };

  // 2. the creator joins
  await send("m.room.member", input.creator, { membership: "join" });
  // 3. power levels (override merged over the defaults, like the client API)
  const pl = { ...defaultPowerLevels(input.creator, version.privilegedCreators, preset, invitees), ...(input.power_level_content_override ?? {}) };
  await send("m.room.power_levels", "", pl);
  // 4. canonical alias
  if (alias) await send("m.room.canonical_alias", "", { alias });
  // 5. preset state, unless initial_state sets the same key (join rules: merged above)
  if (joinRulesContent) await send("m.room.join_rules", "", joinRulesContent);
  const presetState: [string, Record<string, unknown>][] = [["m.room.history_visibility", { history_visibility: "shared" }]];
  if (preset !== "public_chat") presetState.push(["m.room.guest_access", { guest_access: "can_join" }]);
  for (const [type, content] of presetState) if (!initial.has(stateField(type, ""))) await send(type, "", content);
  // 6. initial_state
  for (const s of initial.values()) await send(s.type, s.state_key, s.content);
  // 7. name and topic
  if (typeof input.name === "string") await send("m.room.name", "", { name: input.name });
  if (typeof input.topic === "string") await send("m.room.topic", "", { topic: input.topic });
  // 8. local invitees are invited here; remote ones by the caller through the invite use case (federation).
  for (const u of invitees.filter((x) => serverOfUserId(x) === serverName)) await send("m.room.member", u, { membership: "invite" });

  // The write: one script, all events or none.
  await hooks.beforeStep?.(++step, "write");
  await rooms.persistNewRoom({
    room: { roomId, version: versionId, creator: input.creator, createdTs: now },
    events,
    depth: snap.depth,
    ...(alias ? { alias } : {}),
  });
  return { room_id: roomId, room_version: versionId, ...(alias ? { room_alias: alias } : {}) };
}
