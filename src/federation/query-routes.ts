/**
 * Queries other servers make about Gatehouse's users and aliases. Gatehouse has no user
 * accounts or devices of its own (it acts for users of its server name), so profiles, device
 * lists and keys are answered as empty rather than 404: Synapse asks for them whenever it shares
 * a room with our users, and a 404 makes it retry and log warnings.
 *
 *   GET  /_matrix/federation/v1/query/directory?room_alias=#a:us   local aliases → room + servers
 *   GET  /_matrix/federation/v1/query/profile?user_id=@u:us        {} (no profile data is kept)
 *   GET  /_matrix/federation/v1/user/devices/{userId}              no devices
 *   POST /_matrix/federation/v1/user/keys/query                    no device keys
 *   POST /_matrix/federation/v1/user/keys/claim                    no one-time keys
 */
import { Router } from "express";
import { route } from "../http/errors.js";
import { invalidParam, missingParam, notFound } from "../protocol/errors.js";
import { isValidUserId, parseRoomAlias, serverOfUserId } from "../protocol/ids.js";
import { isPlainObject } from "../protocol/pdu.js";
import { type RoomService } from "../rooms/room-service.js";
import type { RoomQueries } from "../rooms/room-queries.js";

export function queryRouter(rooms: RoomService, queries: RoomQueries): Router {
  const router = Router();
  const ours = (userId: unknown): string => {
    if (typeof userId !== "string" || !isValidUserId(userId)) throw invalidParam("user_id must be a user ID");
    if (serverOfUserId(userId) !== rooms.serverName) throw invalidParam(`${userId} is not a user on ${rooms.serverName}`);
    return userId;
  };

  router.get(
    "/_matrix/federation/v1/query/directory",
    route(async (req, res) => {
      const alias = req.query.room_alias;
      if (typeof alias !== "string") throw missingParam("room_alias is required");
      if (!parseRoomAlias(alias)) throw invalidParam("room_alias is not a room alias");
      const roomId = await queries.resolveAlias(alias);
      if (!roomId) throw notFound(`Room alias ${alias} not found`);
      const snap = await rooms.snapshot(roomId);
      const servers = [rooms.serverName, ...[...snap.joinedServers].filter((s) => s !== rooms.serverName).sort()];
      res.json({ room_id: roomId, servers });
    }),
  );

  router.get(
    "/_matrix/federation/v1/query/profile",
    route(async (req, res) => {
      ours(req.query.user_id);
      res.json({});
    }),
  );

  router.get(
    "/_matrix/federation/v1/user/devices/:userId",
    route(async (req, res) => {
      const userId = ours(req.params.userId);
      res.json({ user_id: userId, stream_id: 0, devices: [] });
    }),
  );

  router.post(
    "/_matrix/federation/v1/user/keys/query",
    route(async (req, res) => {
      const wanted = isPlainObject(req.body) && isPlainObject(req.body.device_keys) ? Object.keys(req.body.device_keys) : [];
      const device_keys: Record<string, Record<string, never>> = {};
      for (const u of wanted) if (serverOfUserId(u) === rooms.serverName) device_keys[u] = {};
      res.json({ device_keys });
    }),
  );

  router.post(
    "/_matrix/federation/v1/user/keys/claim",
    route(async (_req, res) => {
      res.json({ one_time_keys: {} });
    }),
  );

  return router;
}
