/** Inbound PUT /_matrix/federation/v2/invite/{roomId}/{eventId}: invites for Gatehouse's own users. */
import { Router } from "express";
import { route } from "../http/errors.js";
import type { RemoteRooms } from "../rooms/remote-rooms.js";

export function inviteRouter(remote: RemoteRooms): Router {
  const router = Router();
  router.put(
    "/_matrix/federation/v2/invite/:roomId/:eventId",
    route(async (req, res) => {
      res.json(await remote.receiveInvite(req.origin!, req.params.roomId as string, req.params.eventId as string, req.body));
    }),
  );
  return router;
}
