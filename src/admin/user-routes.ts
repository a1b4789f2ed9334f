/**
 * Admin API for local users (rooms/local-users.ts): invites from other servers are taken only
 * for local users who exist. The admin API remembers the users it acts for; an operator adds
 * others explicitly (say, before a remote server invites a user the admin API never acted for).
 *   GET    /users             users known through the admin API
 *   GET    /users/{userId}    whether the user exists, and why (admin, registered, appservice_query)
 *   POST   /users/{userId}    add it (idempotent)
 *   DELETE /users/{userId}    remove it from the admin API's set (a registration stays)
 */
import { Router } from "express";
import { route } from "../http/errors.js";
import { invalidParam } from "../protocol/errors.js";
import type { LocalUsers } from "../rooms/local-users.js";
import { ADMIN_PREFIX } from "./routes.js";

export function userAdminRouter(users: LocalUsers): Router {
  const router = Router();
  const p = `${ADMIN_PREFIX}/users`;
  router.get(p, route(async (_req, res) => { res.json({ users: await users.list() }); }));
  router.get(
    `${p}/:userId`,
    route(async (req, res) => {
      const userId = req.params.userId as string;
      if (!users.isLocal(userId)) throw invalidParam("user ID must be a valid local user ID");
      const source = await users.exists(userId);
      res.json({ user_id: userId, exists: source !== null, ...(source ? { source } : {}) });
    }),
  );
  router.post(
    `${p}/:userId`,
    route(async (req, res) => {
      const added = await users.add(req.params.userId);
      res.json({ user_id: req.params.userId, added });
    }),
  );
  router.delete(
    `${p}/:userId`,
    route(async (req, res) => {
      const removed = await users.remove(req.params.userId);
      res.json({ user_id: req.params.userId, removed });
    }),
  );
  return router;
}
