/**
 * Admin API for local users in rooms hosted elsewhere:
 *   POST /remote/knock   {user_id, room_id, via: [servers], reason?, auto_join?, follow_tombstones?}
 *   POST /remote/join    {user_id, room_id, via?}
 *   POST /remote/leave   {user_id, room_id, via?}   (rescinds a knock, rejects an invite, leaves)
 *   GET  /remote/memberships[?user_id=]
 */
import { Router } from "express";
import { route } from "../http/errors.js";
import { badJson } from "../protocol/errors.js";
import { isPlainObject } from "../protocol/pdu.js";
import type { RemoteRooms, RemoteMembershipRecord } from "../rooms/remote-rooms.js";
import type { LocalUsers } from "../rooms/local-users.js";
import { ADMIN_PREFIX } from "./routes.js";

export function remoteAdminRouter(remote: RemoteRooms, localUsers: LocalUsers): Router {
  const router = Router();
  const p = `${ADMIN_PREFIX}/remote`;
  const body = (b: unknown): { user_id: unknown; room_id: unknown } & Record<string, unknown> => {
    if (!isPlainObject(b)) throw badJson("Request body must be a JSON object");
    return b as { user_id: unknown; room_id: unknown } & Record<string, unknown>;
  };
  // The user acted for exists from now on (the invite that accepts its knock must be taken).
  const acted = async (record: RemoteMembershipRecord): Promise<RemoteMembershipRecord> => {
    await localUsers.remember(record.user_id);
    return record;
  };
  router.post(`${p}/knock`, route(async (req, res) => { res.json(await acted(await remote.knock(body(req.body)))); }));
  router.post(`${p}/join`, route(async (req, res) => { res.json(await acted(await remote.join(body(req.body)))); }));
  router.post(`${p}/leave`, route(async (req, res) => { res.json(await acted(await remote.leave(body(req.body)))); }));
  router.get(
    `${p}/memberships`,
    route(async (req, res) => {
      const userId = typeof req.query.user_id === "string" ? req.query.user_id : undefined;
      res.json({ memberships: await remote.list(userId) });
    }),
  );
  return router;
}
