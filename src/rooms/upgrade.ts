/**
 * Upgrading a hosted room to a new room version (spec: Client-Server API "Room Upgrades", server
 * behaviour): a new room whose create event names the old one as `predecessor`, the transferable
 * state copied, local aliases moved, `m.room.tombstone` in the old room, and the old room
 * restricted. Every step is safe to repeat: progress is recorded on the old room (`upgrade_to`
 * and the new create event are written before anything else), so an upgrade interrupted at any
 * point resumes into the same replacement room.
 */
import { buildEvent } from "../protocol/event-signing.js";
import { forbidden, invalidParam, MatrixError, unsupportedRoomVersion } from "../protocol/errors.js";
import { canSendState } from "../protocol/auth/index.js";
import { canonicalJson } from "../protocol/canonical-json.js";
import { getRoomVersion, type RoomVersion } from "../protocol/room-versions.js";
import { isValidUserId, serverOfUserId } from "../protocol/ids.js";
import type { Pdu } from "../protocol/pdu.js";
import { stateField, parseStateField } from "../store/room-store.js";
import { stateLookup, type RoomContext, type RoomService, type RoomSnapshot } from "./room-service.js";

/** State copied to the new room, in this order (spec list; bans and space children follow). */
export const TRANSFERABLE_STATE = [
  "m.room.server_acl",
  "m.room.encryption",
  "m.room.name",
  "m.room.avatar",
  "m.room.topic",
  "m.room.guest_access",
  "m.room.history_visibility",
  "m.room.join_rules",
] as const;

export interface UpgradeResult {
  replacement_room: string;
  room_version: string;
  resumed: boolean;
}

const sameContent = (a: unknown, b: unknown) => canonicalJson(a ?? null) === canonicalJson(b ?? null);

/** Power levels for the new room: old levels, with the new version's creator rules applied. */
export function upgradedPowerLevels(old: Record<string, unknown> | undefined, creator: string, target: RoomVersion): Record<string, unknown> {
  const pl: Record<string, unknown> = structuredClone(old ?? {});
  const users = { ...((pl.users as Record<string, unknown>) ?? {}) };
  if (target.privilegedCreators) {
    // v12: creators have infinite power and must not appear in `users`.
    delete users[creator];
    // The spec asks v12 rooms to give m.room.tombstone an explicit level above state_default.
    const events = { ...((pl.events as Record<string, unknown>) ?? {}) };
    const stateDefault = typeof pl.state_default === "number" ? pl.state_default : 50;
    const current = typeof events["m.room.tombstone"] === "number" ? (events["m.room.tombstone"] as number) : 0;
    if (current <= stateDefault) events["m.room.tombstone"] = Math.max(150, stateDefault + 1);
    pl.events = events;
  } else {
    users[creator] = Math.max(typeof users[creator] === "number" ? (users[creator] as number) : 0, 100);
  }
  pl.users = users;
  if (target.integerPowerLevels) {
    // v10+: string levels from older rooms become integers.
    for (const key of ["ban", "kick", "redact", "invite", "events_default", "state_default", "users_default"]) {
      if (typeof pl[key] === "string" && /^-?\d+$/.test(pl[key] as string)) pl[key] = Number(pl[key]);
    }
  }
  return pl;
}

export async function upgradeRoom(ctx: RoomContext, roomId: string, input: { sender?: unknown; new_version?: unknown }): Promise<UpgradeResult> {
  const { rooms } = ctx;
  // Fix: two upgrade calls for the same room in one process ran side by side, each able to build
  // its own replacement room and send the copied state (and the tombstone) twice. Serialised here
  // (a key of its own: sendLocalEvent takes the room's key); across replicas see the claim below.
  return rooms.withRoomLock(`upgrade:${roomId}`, () => upgradeRoomLocked(ctx, roomId, input));
}

async function upgradeRoomLocked(ctx: RoomContext, roomId: string, input: { sender?: unknown; new_version?: unknown }): Promise<UpgradeResult> {
  const { rooms, store } = ctx;
  const old = await rooms.snapshot(roomId);
  const sender = typeof input.sender === "string" ? input.sender : old.room.creator;
  if (!isValidUserId(sender) || serverOfUserId(sender) !== rooms.serverName) throw invalidParam(`sender must be a user on ${rooms.serverName}`);
  if (typeof input.new_version !== "string") throw invalidParam("new_version is required");
  const target = getRoomVersion(input.new_version);
  if (!target || !target.eventRefsAreIds) throw unsupportedRoomVersion(`Room version ${input.new_version} is not supported`);

  const lookup = stateLookup(old.state);
  const existingTombstone = lookup("m.room.tombstone", "")?.content as { replacement_room?: unknown } | undefined;
  if (typeof existingTombstone?.replacement_room === "string") {
    // Fix: an upgrade interrupted after the tombstone (step 5) used to return here and never
    // restrict the old room (step 6); finish it (a no-op once done). The version returned is the
    // replacement room's own, not whatever this repeated call asked for.
    const replacement = existingTombstone.replacement_room;
    await restrictOldRoom(rooms, roomId, sender);
    await store.setRoomFields(roomId, { tombstone: replacement });
    const replacementVersion = (await store.getRoom(replacement))?.version ?? target.id;
    return { replacement_room: replacement, room_version: replacementVersion, resumed: true };
  }
  const pl = lookup("m.room.power_levels", "")?.content as Record<string, unknown> | undefined;
  if (!canSendState(sender, "m.room.tombstone", pl, lookup("m.room.create", ""), old.version))
    throw forbidden(`${sender} may not send m.room.tombstone in ${roomId}`);
  // Fix: the power check alone let a user who is not joined to the old room (or is banned) through:
  // the new room was created and filled, then the tombstone failed the auth rules, on every retry.
  // Authorise a tombstone now (built, not persisted) with the full auth rules.
  rooms.buildLocalEvent(old, { type: "m.room.tombstone", sender, stateKey: "", content: { body: "dry run", replacement_room: roomId } });

  // 1. The replacement room: reuse the one an interrupted attempt recorded, else build it and
  //    record it before persisting anything, so the room ID (a hash in v12) is chosen once.
  let newRoomId = await store.getRoomField(roomId, "upgrade_to");
  let resumed = newRoomId !== null;
  if (!newRoomId) {
    const oldCreate = lookup("m.room.create", "")!;
    const createContent: Record<string, unknown> = {
      room_version: target.id,
      predecessor: target.roomIdIsCreateEventHash
        ? { room_id: roomId }
        : { room_id: roomId, event_id: [...old.extremities].sort()[0] },
    };
    if (typeof oldCreate.content.type === "string") createContent.type = oldCreate.content.type;
    if (target.createHasCreator) createContent.creator = sender;
    if (oldCreate.content["m.federate"] === false) createContent["m.federate"] = false;
    const provisionalId = target.roomIdIsCreateEventHash ? undefined : rooms.newLegacyRoomId();
    const built = buildEvent(
      { type: "m.room.create", sender, state_key: "", content: createContent, prev_events: [], auth_events: [], depth: 1, ...(provisionalId ? { room_id: provisionalId } : {}) },
      { roomVersion: target, serverName: rooms.serverName, key: rooms.signingKey, clock: () => rooms.now() },
    );
    // Fix: recorded only if no other replica recorded a replacement first (was a plain HSET: the
    // later writer won and the first writer's room was left behind, half built).
    const claimed = await store.setRoomFieldsIfAbsent(roomId, "upgrade_to", {
      upgrade_to: built.roomId,
      upgrade_create: JSON.stringify({ eventId: built.eventId, pdu: built.pdu }),
      upgrade_version: target.id,
    });
    newRoomId = claimed ? built.roomId : (await store.getRoomField(roomId, "upgrade_to"))!;
    resumed = !claimed;
  }
  if (!(await store.getRoom(newRoomId))) {
    const pending = JSON.parse((await store.getRoomField(roomId, "upgrade_create"))!) as { eventId: string; pdu: Pdu };
    const version = getRoomVersion((await store.getRoomField(roomId, "upgrade_version"))!)!;
    await rooms.persistCreateEvent(newRoomId, pending.eventId, pending.pdu, { version: version.id, creator: pending.pdu.sender, createdTs: pending.pdu.origin_server_ts });
  }

  const fresh = async () => rooms.snapshot(newRoomId!);
  let snap = await fresh();
  const upgrader = snap.room.creator;
  // Fix: copied state is sent by the new room's creator (joined, with full power there); it was
  // sent by this call's `sender`, so a resume by another admin failed the new room's auth rules.
  const setIfDifferent = async (snap: RoomSnapshot, type: string, stateKey: string, content: Record<string, unknown>) => {
    const current = snap.state.get(stateField(type, stateKey));
    if (current && sameContent(current.content, content)) return;
    await rooms.sendLocalEvent(newRoomId!, { type, sender: upgrader, stateKey, content });
  };

  // 2. The upgrading user joins and the power levels are carried over.
  if (snap.state.get(stateField("m.room.member", upgrader))?.content.membership !== "join") {
    await rooms.sendLocalEvent(newRoomId, { type: "m.room.member", sender: upgrader, stateKey: upgrader, content: { membership: "join" } });
  }
  snap = await fresh();
  const newPl = upgradedPowerLevels(pl, upgrader, snap.version);
  // The upgrader keeps full power in the new room (creator in v12, 100 before), so the state
  // below can be copied after the power levels.
  await setIfDifferent(snap, "m.room.power_levels", "", newPl);

  // 3. Transferable state, space children and bans.
  snap = await fresh();
  for (const type of TRANSFERABLE_STATE) {
    const ev = lookup(type, "");
    if (!ev) continue;
    let content = ev.content as Record<string, unknown>;
    if (type === "m.room.join_rules") content = adaptJoinRule(content, snap.version);
    await setIfDifferent(snap, type, "", content);
  }
  const isSpace = (lookup("m.room.create", "")?.content as { type?: unknown }).type === "m.space";
  for (const [field, ev] of old.state) {
    const [type, stateKey] = parseStateField(field);
    if (isSpace && type === "m.space.child") await setIfDifferent(snap, type, stateKey, ev.content as Record<string, unknown>);
    if (type === "m.room.member" && (ev.content as { membership?: unknown }).membership === "ban") {
      const reason = (ev.content as { reason?: unknown }).reason;
      await setIfDifferent(snap, type, stateKey, { membership: "ban", ...(typeof reason === "string" ? { reason } : {}) });
    }
  }

  // 4. Local aliases move to the new room, with the canonical alias.
  const aliases = await store.aliasesOf(roomId);
  for (const alias of aliases) await store.setAlias(alias, newRoomId);
  const canonical = lookup("m.room.canonical_alias", "");
  // Fix: an attempt interrupted after clearing the old room's canonical alias (below) resumed by
  // copying that empty content over the new room's alias. Only a non-empty alias is copied.
  if (canonical && Object.keys(canonical.content).length > 0) {
    await setIfDifferent(await fresh(), "m.room.canonical_alias", "", canonical.content as Record<string, unknown>);
    await rooms.sendLocalEvent(roomId, { type: "m.room.canonical_alias", sender, stateKey: "", content: {} });
  }

  // 5. The tombstone, then 6. the old room is restricted.
  await rooms.sendLocalEvent(roomId, {
    type: "m.room.tombstone",
    sender,
    stateKey: "",
    content: { body: "This room has been replaced", replacement_room: newRoomId },
  });
  await restrictOldRoom(rooms, roomId, sender);
  await store.setRoomFields(roomId, { tombstone: newRoomId });
  return { replacement_room: newRoomId, room_version: snap.version.id, resumed };
}

/**
 * Step 6: `events_default` and `invite` of the old room at least max(50, users_default + 1).
 * Fix: a level already higher is kept (it used to be lowered to that value; Synapse only raises),
 * and only an auth refusal is tolerated ("if possible"); other errors (Redis, a busy room) used
 * to be swallowed too, leaving the old room unrestricted for good; now they fail the call, and
 * repeating it finishes this step.
 */
async function restrictOldRoom(rooms: RoomService, roomId: string, sender: string): Promise<void> {
  const oldPlNow = (await rooms.snapshot(roomId)).state.get(stateField("m.room.power_levels", ""))?.content as Record<string, unknown> | undefined;
  const level = (v: unknown, dflt: number) => (typeof v === "number" ? v : typeof v === "string" && /^-?\d+$/.test(v) ? Number(v) : dflt);
  const restrictTo = Math.max(50, level(oldPlNow?.users_default, 0) + 1);
  const restricted = {
    ...(oldPlNow ?? {}),
    events_default: Math.max(level(oldPlNow?.events_default, 0), restrictTo),
    invite: Math.max(level(oldPlNow?.invite, 0), restrictTo),
  };
  if (sameContent(oldPlNow, restricted)) return;
  try {
    await rooms.sendLocalEvent(roomId, { type: "m.room.power_levels", sender, stateKey: "", content: restricted });
  } catch (e) {
    // The spec says "if possible": a sender without power-level rights leaves the old room as it is.
    if (!(e instanceof MatrixError && e.status === 403)) throw e;
  }
}

/** A join rule the new version supports: knock rules degrade to `invite` where knocking is missing. */
function adaptJoinRule(content: Record<string, unknown>, target: RoomVersion): Record<string, unknown> {
  const rule = content.join_rule;
  if (rule === "knock" && !target.knock) return { ...content, join_rule: "invite" };
  if (rule === "knock_restricted" && !target.knockRestricted) return { ...content, join_rule: target.knock ? "knock" : "invite" };
  if (rule === "restricted" && !target.restrictedJoins) return { ...content, join_rule: "invite" };
  return content;
}
