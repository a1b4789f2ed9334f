/**
 * The admin API (bearer token) for the homeserver, bridge or operator beside Gatehouse. It acts
 * for any local user of Gatehouse's server name, like an application service: each action names
 * its `sender` (defaulting to the room's creator).
 */
import { Router } from "express";
import { route } from "../http/errors.js";
import { objectBody } from "../http/body.js";
import { badJson, invalidParam, notFound } from "../protocol/errors.js";
import { isPlainObject, type Pdu } from "../protocol/pdu.js";
import { serverOfUserId } from "../protocol/ids.js";
import { createRoom, type CreateRoomInput } from "../rooms/create-room.js";
import { upgradeRoom } from "../rooms/upgrade.js";
import type { RoomContext } from "../rooms/room-service.js";
import type { RoomQueries } from "../rooms/room-queries.js";
import type { MembershipService } from "../rooms/membership.js";
import { redactLocally, type ServedEvent } from "../rooms/redactions.js";
import { findNonCanonicalNumber } from "../protocol/canonical-json.js";
import type { LocalUsers } from "../rooms/local-users.js";

export const ADMIN_PREFIX = "/_gatehouse/admin/v1";

export interface AdminDeps {
  /** The room service and its store, for the createRoom and upgrade use cases. */
  ctx: RoomContext;
  queries: RoomQueries;
  membership: MembershipService;
  serverName: string;
  /** Local users the admin API acted for are remembered: they exist (rooms/local-users.ts). */
  localUsers: LocalUsers;
  /** Extra routers mounted under the prefix by other features (queue, knock-out, upgrades). */
  extra?: Router[];
}

const body = objectBody;

function optionalString(b: Record<string, unknown>, key: string): string | undefined {
  const v = b[key];
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw invalidParam(`${key} must be a string`);
  return v;
}

function requireString(b: Record<string, unknown>, key: string): string {
  const v = optionalString(b, key);
  if (v === undefined) throw invalidParam(`${key} is required`);
  return v;
}

/** An event as the admin API shows it: the PDU plus its ID. */
export function withEventId(pdu: Pdu, eventId: string): Record<string, unknown> {
  return { event_id: eventId, ...pdu };
}

/**
 * A stored event as the admin API shows it: redacted when a redaction applies, with the
 * redaction event in `unsigned.redacted_because` (as Synapse shows redacted events to clients).
 */
export function servedEvent(e: ServedEvent): Record<string, unknown> {
  if (!e.redactedBy) return withEventId(e.pdu, e.eventId);
  return { ...withEventId(e.pdu, e.eventId), unsigned: { redacted_because: withEventId(e.redactedBy.pdu, e.redactedBy.eventId) } };
}

export function adminRouter(deps: AdminDeps): Router {
  const { membership, queries } = deps;
  const rooms = deps.ctx.rooms;
  const router = Router();
  const p = ADMIN_PREFIX;

  // After an action succeeded: the local user it was done for exists from now on.
  const acted = (userId: string): Promise<void> => deps.localUsers.remember(userId);

  const senderFor = async (roomId: string, b: Record<string, unknown>): Promise<string> => {
    const sender = optionalString(b, "sender");
    if (sender !== undefined) return sender;
    const { room } = await rooms.requireRoom(roomId);
    return room.creator;
  };

  // Admin bodies end up in events: a number canonical JSON cannot hold is refused on the raw text
  // (JSON.parse would turn 1.0 into 1 and hide it), before any write, as Synapse refuses floats.
  router.use(p, (req, _res, next) => {
    const problem = req.rawBody ? findNonCanonicalNumber(req.rawBody) : null;
    next(problem ? badJson(`Request body is not canonical JSON: ${problem}`) : undefined);
  });

  router.get(`${p}/server`, (_req, res) => {
    res.json({ server_name: deps.serverName, signing_key_id: rooms.signingKey.keyId, public_key: rooms.signingKey.publicKeyBase64 });
  });

  router.post(
    `${p}/rooms`,
    route(async (req, res) => {
      const input = body(req) as unknown as CreateRoomInput;
      if (typeof input.creator !== "string") throw invalidParam("creator (a local user ID) is required");
      const created = await createRoom(deps.ctx, input);
      await acted(input.creator);
      const invited: string[] = [];
      const failed: Record<string, string> = {};
      for (const u of input.invite ?? []) {
        if (serverOfUserId(u) === deps.serverName) continue; // invited during creation
        try {
          await membership.invite(created.room_id, input.creator, u);
          invited.push(u);
        } catch (e) {
          failed[u] = (e as Error).message;
        }
      }
      res.json({ ...created, ...(Object.keys(failed).length ? { invite_failures: failed } : {}) });
    }),
  );

  router.get(
    `${p}/rooms`,
    route(async (_req, res) => {
      res.json({ rooms: await queries.listRooms() });
    }),
  );

  router.get(
    `${p}/rooms/:roomId`,
    route(async (req, res) => {
      res.json(await queries.summary(req.params.roomId as string));
    }),
  );

  // Reads serve events with redactions applied. The admin API acts for the operator, not for a
  // user, so history visibility does not apply to it (the client API filters per user).
  router.get(
    `${p}/rooms/:roomId/state`,
    route(async (req, res) => {
      const { events } = await queries.state(req.params.roomId as string);
      res.json({ state: events.map(servedEvent) });
    }),
  );

  router.get(
    `${p}/rooms/:roomId/state/:type{/:stateKey}`,
    route(async (req, res) => {
      const ev = await queries.stateEvent(req.params.roomId as string, req.params.type as string, (req.params.stateKey as string | undefined) ?? "");
      if (!ev) throw notFound("State event not found");
      res.json(ev.content);
    }),
  );

  router.put(
    `${p}/rooms/:roomId/state/:type{/:stateKey}`,
    route(async (req, res) => {
      const roomId = req.params.roomId as string;
      const b = body(req);
      const content = b.content;
      if (!isPlainObject(content)) throw badJson("content must be an object");
      const sender = await senderFor(roomId, b);
      const ev = await rooms.sendLocalEvent(roomId, { type: req.params.type as string, sender, stateKey: (req.params.stateKey as string | undefined) ?? "", content });
      await acted(sender);
      res.json({ event_id: ev.eventId });
    }),
  );

  router.post(
    `${p}/rooms/:roomId/send/:type`,
    route(async (req, res) => {
      const roomId = req.params.roomId as string;
      const b = body(req);
      if (!isPlainObject(b.content)) throw badJson("content must be an object");
      const sender = await senderFor(roomId, b);
      const ev = await rooms.sendLocalEvent(roomId, { type: req.params.type as string, sender, content: b.content });
      await acted(sender);
      res.json({ event_id: ev.eventId });
    }),
  );

  router.get(
    `${p}/rooms/:roomId/members`,
    route(async (req, res) => {
      res.json({ members: await queries.members(req.params.roomId as string) });
    }),
  );

  router.get(
    `${p}/rooms/:roomId/knocks`,
    route(async (req, res) => {
      res.json(await queries.knocks(req.params.roomId as string));
    }),
  );

  const memberAction = (action: "accept" | "deny" | "invite" | "kick" | "ban" | "unban") =>
    route(async (req, res) => {
      const roomId = req.params.roomId as string;
      const b = body(req);
      const target = (req.params.userId as string | undefined) ?? requireString(b, "user_id");
      const reason = optionalString(b, "reason");
      const sender = await senderFor(roomId, b);
      let ev;
      switch (action) {
        case "accept":
          ev = await membership.acceptKnock(roomId, sender, target, reason);
          break;
        case "deny":
          ev = await membership.denyKnock(roomId, sender, target, reason);
          break;
        case "invite":
          ev = await membership.invite(roomId, sender, target, reason);
          break;
        case "kick":
          ev = await membership.kick(roomId, sender, target, reason);
          break;
        case "ban":
          ev = await membership.ban(roomId, sender, target, reason);
          break;
        case "unban":
          ev = await membership.unban(roomId, sender, target);
          break;
      }
      await acted(sender);
      res.json({ event_id: ev.eventId });
    });

  router.post(`${p}/rooms/:roomId/knocks/:userId/accept`, memberAction("accept"));
  router.post(`${p}/rooms/:roomId/knocks/:userId/deny`, memberAction("deny"));
  router.post(`${p}/rooms/:roomId/invite`, memberAction("invite"));
  router.post(`${p}/rooms/:roomId/kick`, memberAction("kick"));
  router.post(`${p}/rooms/:roomId/ban`, memberAction("ban"));
  router.post(`${p}/rooms/:roomId/unban`, memberAction("unban"));

  router.post(
    `${p}/rooms/:roomId/join`,
    route(async (req, res) => {
      const b = body(req);
      const userId = requireString(b, "user_id");
      const ev = await membership.localMembership(req.params.roomId as string, userId, "join");
      await acted(userId);
      res.json({ event_id: ev.eventId });
    }),
  );
  router.post(
    `${p}/rooms/:roomId/leave`,
    route(async (req, res) => {
      const b = body(req);
      const userId = requireString(b, "user_id");
      const ev = await membership.localMembership(req.params.roomId as string, userId, "leave");
      await acted(userId);
      res.json({ event_id: ev.eventId });
    }),
  );

  router.get(
    `${p}/rooms/:roomId/events/:eventId`,
    route(async (req, res) => {
      const { status, ...served } = await queries.event(req.params.roomId as string, req.params.eventId as string);
      res.json({ ...servedEvent(served), ...(status ? { gatehouse_status: status } : {}) });
    }),
  );

  router.post(
    `${p}/rooms/:roomId/redact/:eventId`,
    route(async (req, res) => {
      const roomId = req.params.roomId as string;
      const b = body(req);
      const reason = optionalString(b, "reason");
      const sender = await senderFor(roomId, b);
      const ev = await redactLocally(deps.ctx, roomId, { sender, eventId: req.params.eventId as string, ...(reason !== undefined ? { reason } : {}) });
      await acted(sender);
      res.json({ event_id: ev.eventId });
    }),
  );

  router.post(
    `${p}/rooms/:roomId/upgrade`,
    route(async (req, res) => {
      const b = body(req);
      const upgraded = await upgradeRoom(deps.ctx, req.params.roomId as string, { sender: b.sender, new_version: b.new_version });
      if (typeof b.sender === "string") await acted(b.sender);
      res.json(upgraded);
    }),
  );

  for (const r of deps.extra ?? []) router.use(r);
  return router;
}
