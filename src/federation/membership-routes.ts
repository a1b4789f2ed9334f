/**
 * make_knock / send_knock, make_join / send_join, make_leave / send_leave. Each route parses,
 * calls one use case and maps the result; ACL, validation and auth live in MembershipService.
 */
import { Router, type Request, type RequestHandler } from "express";
import { route } from "../http/errors.js";
import { sendJsonChunks } from "../http/json-stream.js";
import { invalidParam } from "../protocol/errors.js";
import type { MembershipService, HandshakeMembership } from "../rooms/membership.js";

function versions(query: unknown): string[] | undefined {
  const ver = (query as Record<string, unknown>).ver;
  if (ver === undefined) return undefined;
  const list = Array.isArray(ver) ? ver : [ver];
  return list.filter((v): v is string => typeof v === "string");
}

/**
 * send_join's `omit_members` (spec v1.6+: a boolean query parameter): "true" asks for a
 * partial-state answer; absent or "false" for the full one; anything else is 400 M_INVALID_PARAM
 * (as Synapse's parse_boolean answers).
 */
export function omitMembersOf(query: unknown): boolean {
  const v = (query as Record<string, unknown>).omit_members;
  if (v === undefined || v === "false") return false;
  if (v === "true") return true;
  throw invalidParam("omit_members must be true or false");
}

/** `knockLimit` runs before make_knock and send_knock (per-room knock rate limit). */
export function membershipRouter(membership: MembershipService, knockLimit?: RequestHandler): Router {
  const router = Router();
  const limits: RequestHandler[] = knockLimit ? [knockLimit] : [];

  const make = (kind: HandshakeMembership) =>
    route(async (req: Request, res) => {
      const out = await membership.makeMembership({
        roomId: req.params.roomId as string,
        userId: req.params.userId as string,
        origin: req.origin!,
        membership: kind,
        supportedVersions: versions(req.query),
      });
      res.json(out);
    });

  router.get("/_matrix/federation/v1/make_knock/:roomId/:userId", ...limits, make("knock"));
  router.get("/_matrix/federation/v1/make_join/:roomId/:userId", make("join"));
  router.get("/_matrix/federation/v1/make_leave/:roomId/:userId", make("leave"));

  router.put(
    "/_matrix/federation/v1/send_knock/:roomId/:eventId",
    ...limits,
    route(async (req, res) => {
      const roomId = req.params.roomId as string;
      const out = await membership.sendMembership(roomId, req.params.eventId as string, req.body, req.origin!, "knock");
      // A knock changes none of the stripped-state types: the state it was planned on serves.
      res.json({ knock_room_state: await membership.knockRoomState(roomId, out.stateBefore ?? out.plannedOn) });
    }),
  );

  router.put(
    "/_matrix/federation/v2/send_join/:roomId/:eventId",
    route(async (req, res) => {
      const roomId = req.params.roomId as string;
      // Parsed before anything is written: a bad value is refused with nothing persisted.
      const omitMembers = omitMembersOf(req.query);
      const out = await membership.sendMembership(roomId, req.params.eventId as string, req.body, req.origin!, "join");
      await sendJsonChunks(res, await membership.sendJoinAnswer(roomId, out.eventId, out.pdu, out.stateBefore, { omitMembers }));
    }),
  );

  router.put(
    "/_matrix/federation/v2/send_leave/:roomId/:eventId",
    route(async (req, res) => {
      await membership.sendMembership(req.params.roomId as string, req.params.eventId as string, req.body, req.origin!, "leave");
      res.json({});
    }),
  );
  // v1 send_leave was removed in spec v1.18 (MSC4376) but older peers still call it; its body is [200, {}].
  router.put(
    "/_matrix/federation/v1/send_leave/:roomId/:eventId",
    route(async (req, res) => {
      await membership.sendMembership(req.params.roomId as string, req.params.eventId as string, req.body, req.origin!, "leave");
      res.json([200, {}]);
    }),
  );

  return router;
}
