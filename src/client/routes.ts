/**
 * The Client-Server API routes for application services (`/_matrix/client/v3/...`; `r0/` is
 * rewritten to `v3/` by the app, as Synapse serves both). Each route parses, then calls one
 * ClientActions use case; errors are MatrixErrors mapped by the one error handler.
 */
import { Router, type Request } from "express";
import { route } from "../http/errors.js";
import { objectBody } from "../http/body.js";
import { badJson, invalidParam } from "../protocol/errors.js";
import { ROOM_VERSIONS, DEFAULT_ROOM_VERSION } from "../protocol/room-versions.js";
import { massagedTs } from "./auth.js";
import type { Actor, ClientActions } from "../appservice/client-actions.js";
import type { AppservicePing } from "../appservice/ping.js";

/** Spec versions whose client API subset Gatehouse serves for application services. */
export const CLIENT_SPEC_VERSIONS = ["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12"];

const paths = (p: string): string => `/_matrix/client/v3${p}`;

const body = objectBody;

function optionalString(b: Record<string, unknown>, key: string): string | undefined {
  const v = b[key];
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw badJson(`${key} must be a string`);
  return v;
}

function actor(req: Request): Actor {
  return { reg: req.appservice!, userId: req.userId! };
}

/** `server_name` / `via` query parameters (repeatable). */
function viaOf(req: Request): string[] {
  const out: string[] = [];
  for (const key of ["server_name", "via"]) {
    const v = req.query[key];
    for (const s of Array.isArray(v) ? v : v === undefined ? [] : [v]) {
      if (typeof s !== "string") throw invalidParam(`${key} must be a server name`);
      out.push(s);
    }
  }
  return out;
}

const p = (req: Request, name: string): string => req.params[name] as string;

/** Unauthenticated: GET /_matrix/client/versions. */
export function versionsRouter(): Router {
  const router = Router();
  router.get("/_matrix/client/versions", (_req, res) => {
    res.json({ versions: CLIENT_SPEC_VERSIONS, unstable_features: {} });
  });
  return router;
}

export function clientRouter(actions: ClientActions, ping: AppservicePing): Router {
  const router = Router();

  router.get(
    paths("/account/whoami"),
    route((req, res) => {
      res.json({ user_id: req.userId, is_guest: false });
    }),
  );

  router.get(
    paths("/capabilities"),
    route((_req, res) => {
      const available: Record<string, string> = {};
      // The versions createRoom and upgrades accept (1 and 2 need server-chosen event IDs).
      for (const v of ROOM_VERSIONS.values()) if (v.eventRefsAreIds) available[v.id] = "stable";
      res.json({
        capabilities: {
          "m.room_versions": { default: DEFAULT_ROOM_VERSION, available },
          "m.change_password": { enabled: false },
          "m.set_displayname": { enabled: true },
          "m.set_avatar_url": { enabled: true },
          "m.3pid_changes": { enabled: false },
        },
      });
    }),
  );

  router.post(
    paths("/register"),
    route(async (req, res) => {
      if (req.query.kind !== undefined && req.query.kind !== "user") throw invalidParam("application services register users (kind=user)");
      const userId = await actions.register(req.appservice!, body(req));
      // No access token or device: the user acts through the service's as_token with user_id.
      res.json({ user_id: userId, home_server: actions.serverName });
    }),
  );

  router.post(
    paths("/createRoom"),
    route(async (req, res) => {
      res.json(await actions.createRoom(actor(req), body(req)));
    }),
  );

  router.post(
    paths("/join/:roomIdOrAlias"),
    route(async (req, res) => {
      body(req);
      res.json(await actions.join(actor(req), p(req, "roomIdOrAlias"), viaOf(req)));
    }),
  );
  router.post(
    paths("/rooms/:roomId/join"),
    route(async (req, res) => {
      body(req);
      res.json(await actions.join(actor(req), p(req, "roomId"), viaOf(req)));
    }),
  );
  router.post(
    paths("/knock/:roomIdOrAlias"),
    route(async (req, res) => {
      const reason = optionalString(body(req), "reason");
      res.json(await actions.knock(actor(req), p(req, "roomIdOrAlias"), viaOf(req), reason));
    }),
  );
  router.post(
    paths("/rooms/:roomId/leave"),
    route(async (req, res) => {
      body(req);
      await actions.leave(actor(req), p(req, "roomId"));
      res.json({});
    }),
  );
  router.post(
    paths("/rooms/:roomId/forget"),
    route(async (req, res) => {
      await actions.forget(actor(req), p(req, "roomId"));
      res.json({});
    }),
  );
  for (const action of ["invite", "kick", "ban", "unban"] as const) {
    router.post(
      paths(`/rooms/:roomId/${action}`),
      route(async (req, res) => {
        const b = body(req);
        const target = b.user_id;
        if (typeof target !== "string") throw badJson("user_id is required");
        await actions.memberAction(actor(req), p(req, "roomId"), action, target, optionalString(b, "reason"));
        res.json({});
      }),
    );
  }
  router.get(
    paths("/joined_rooms"),
    route(async (req, res) => {
      res.json({ joined_rooms: await actions.joinedRooms(actor(req)) });
    }),
  );

  router.post(
    paths("/rooms/:roomId/upgrade"),
    route(async (req, res) => {
      res.json(await actions.upgrade(actor(req), p(req, "roomId"), body(req).new_version));
    }),
  );

  router.put(
    paths("/rooms/:roomId/send/:eventType/:txnId"),
    route(async (req, res) => {
      const eventId = await actions.send(actor(req), p(req, "roomId"), p(req, "eventType"), p(req, "txnId"), req.body, massagedTs(req));
      res.json({ event_id: eventId });
    }),
  );
  router.put(
    paths("/rooms/:roomId/redact/:eventId/:txnId"),
    route(async (req, res) => {
      const eventId = await actions.redact(actor(req), p(req, "roomId"), p(req, "eventId"), p(req, "txnId"), body(req).reason);
      res.json({ event_id: eventId });
    }),
  );
  router.put(
    paths("/rooms/:roomId/state/:eventType{/:stateKey}"),
    route(async (req, res) => {
      const stateKey = (req.params.stateKey as string | undefined) ?? "";
      const eventId = await actions.setState(actor(req), p(req, "roomId"), p(req, "eventType"), stateKey, req.body, massagedTs(req));
      res.json({ event_id: eventId });
    }),
  );
  router.get(
    paths("/rooms/:roomId/state/:eventType{/:stateKey}"),
    route(async (req, res) => {
      res.json(await actions.stateEvent(actor(req), p(req, "roomId"), p(req, "eventType"), (req.params.stateKey as string | undefined) ?? ""));
    }),
  );
  router.get(
    paths("/rooms/:roomId/state"),
    route(async (req, res) => {
      res.json(await actions.state(actor(req), p(req, "roomId")));
    }),
  );
  router.get(
    paths("/rooms/:roomId/members"),
    route(async (req, res) => {
      res.json({ chunk: await actions.members(actor(req), p(req, "roomId"), { membership: req.query.membership, not_membership: req.query.not_membership }) });
    }),
  );
  router.get(
    paths("/rooms/:roomId/joined_members"),
    route(async (req, res) => {
      res.json({ joined: await actions.joinedMembers(actor(req), p(req, "roomId")) });
    }),
  );
  router.get(
    paths("/rooms/:roomId/event/:eventId"),
    route(async (req, res) => {
      res.json(await actions.event(actor(req), p(req, "roomId"), p(req, "eventId")));
    }),
  );
  router.get(
    paths("/rooms/:roomId/messages"),
    route(async (req, res) => {
      res.json(await actions.messages(actor(req), p(req, "roomId"), { dir: req.query.dir, from: req.query.from, limit: req.query.limit }));
    }),
  );

  router.get(
    paths("/directory/room/:roomAlias"),
    route(async (req, res) => {
      res.json(await actions.resolveAlias(p(req, "roomAlias")));
    }),
  );
  router.put(
    paths("/directory/room/:roomAlias"),
    route(async (req, res) => {
      await actions.createAlias(actor(req), p(req, "roomAlias"), body(req).room_id);
      res.json({});
    }),
  );
  router.delete(
    paths("/directory/room/:roomAlias"),
    route(async (req, res) => {
      await actions.deleteAlias(actor(req), p(req, "roomAlias"));
      res.json({});
    }),
  );

  router.get(
    paths("/profile/:userId"),
    route(async (req, res) => {
      res.json(await actions.profile(p(req, "userId")));
    }),
  );
  for (const field of ["displayname", "avatar_url"] as const) {
    router.get(
      paths(`/profile/:userId/${field}`),
      route(async (req, res) => {
        const profile = await actions.profile(p(req, "userId"));
        res.json(profile[field] !== undefined ? { [field]: profile[field] } : {});
      }),
    );
    router.put(
      paths(`/profile/:userId/${field}`),
      route(async (req, res) => {
        const b = body(req);
        if (!(field in b)) throw badJson(`${field} is required`);
        await actions.setProfile(actor(req), p(req, "userId"), field, b[field]);
        res.json({});
      }),
    );
  }

  router.post(
    "/_matrix/client/v1/appservice/:appserviceId/ping",
    route(async (req, res) => {
      res.json(await ping.ping(req.appservice!, p(req, "appserviceId"), body(req).transaction_id));
    }),
  );

  return router;
}
