/** /send, and the reads a joined peer needs (event, state, state_ids, get_missing_events, backfill, event_auth). */
import { Router } from "express";
import { route } from "../http/errors.js";
import { sendJsonChunks } from "../http/json-stream.js";
import { invalidParam, missingParam } from "../protocol/errors.js";
import type { InboundTransactions } from "../rooms/inbound-transactions.js";
import type { RoomHistory } from "../rooms/history.js";

export function roomRouter(deps: { transactions: InboundTransactions; history: RoomHistory; serverName: string; clock: () => number }): Router {
  const router = Router();
  const { transactions, history } = deps;

  router.put(
    "/_matrix/federation/v1/send/:txnId",
    route(async (req, res) => {
      res.json(await transactions.receive(req.origin!, req.params.txnId as string, req.body));
    }),
  );

  router.get(
    "/_matrix/federation/v1/event/:eventId",
    route(async (req, res) => {
      const pdu = await history.event(req.params.eventId as string, req.origin!);
      res.json({ origin: deps.serverName, origin_server_ts: deps.clock(), pdus: [pdu] });
    }),
  );

  const eventIdParam = (q: unknown): string => {
    const v = (q as Record<string, unknown>).event_id;
    if (typeof v !== "string") throw missingParam("event_id is required");
    return v;
  };

  router.get(
    "/_matrix/federation/v1/state_ids/:roomId",
    route(async (req, res) => {
      await sendJsonChunks(res, await history.stateIdsAnswer(req.params.roomId as string, eventIdParam(req.query), req.origin!));
    }),
  );

  router.get(
    "/_matrix/federation/v1/state/:roomId",
    route(async (req, res) => {
      await sendJsonChunks(res, await history.stateAnswer(req.params.roomId as string, eventIdParam(req.query), req.origin!));
    }),
  );

  router.post(
    "/_matrix/federation/v1/get_missing_events/:roomId",
    route(async (req, res) => {
      res.json({ events: await history.missingEvents(req.params.roomId as string, req.origin!, req.body) });
    }),
  );

  router.get(
    "/_matrix/federation/v1/backfill/:roomId",
    route(async (req, res) => {
      const v = req.query.v;
      const from = (Array.isArray(v) ? v : v === undefined ? [] : [v]).filter((x): x is string => typeof x === "string");
      if (from.length === 0) throw missingParam("v is required");
      // The spec marks limit required, as it does v; Synapse answers 400 without it too.
      if (req.query.limit === undefined) throw missingParam("limit is required");
      const limit = Number(req.query.limit);
      if (!Number.isInteger(limit) || limit < 1) throw invalidParam("limit must be a positive integer");
      const pdus = await history.backfill(req.params.roomId as string, req.origin!, from, Math.min(limit, 100));
      res.json({ origin: deps.serverName, origin_server_ts: deps.clock(), pdus });
    }),
  );

  router.get(
    "/_matrix/federation/v1/event_auth/:roomId/:eventId",
    route(async (req, res) => {
      await sendJsonChunks(res, await history.eventAuthAnswer(req.params.roomId as string, req.params.eventId as string, req.origin!));
    }),
  );

  return router;
}
