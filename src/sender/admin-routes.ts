/**
 * Admin API for the outbound queue, mounted under /_gatehouse/admin/v1 (via adminRouter's
 * `extra`):
 *   GET  /queue?from&limit&order_by&dir        destinations (paginated and sorted as Synapse's
 *                                              destinations admin API), pending PDUs/EDUs,
 *                                              in-flight txn, status, dead letters
 *   GET  /queue/{destination}                  one destination (plus its BullMQ job state)
 *   POST /queue/{destination}/retry            clear the backoff and send now
 *   GET  /queue/{destination}/dead-letters     PDUs the destination rejected when sent alone
 *   POST /queue/{destination}/dead-letters/replay   queue them again (at the tail) and send
 *   POST /queue/{destination}/dead-letters/drop     forget them (counted as dropped_pdus)
 */
import { Router, type Request } from "express";
import { route } from "../http/errors.js";
import { invalidParam, notFound } from "../protocol/errors.js";
import { QUEUE_ORDER_BY, type QueueOrderBy } from "./queue-view.js";
import type { Sender } from "./sender.js";

const PREFIX = "/_gatehouse/admin/v1";
export const QUEUE_PAGE_DEFAULT_LIMIT = 100;
export const QUEUE_PAGE_MAX_LIMIT = 1000;

function destinationParam(sender: Sender, raw: unknown): string {
  if (typeof raw !== "string" || !sender.transports.isValidDestination(raw)) throw invalidParam("destination must be a server name");
  return raw;
}

/** A query parameter as one string (absent: undefined; repeated or nested: invalid). */
function queryString(req: Request, name: string): string | undefined {
  const v = (req.query as Record<string, unknown>)[name];
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw invalidParam(`${name} must be given once, as a string`);
  return v;
}

function intParam(req: Request, name: string, fallback: number, min: number, max: number): number {
  const raw = queryString(req, name);
  if (raw === undefined) return fallback;
  if (!/^\d{1,9}$/.test(raw) || Number(raw) < min || Number(raw) > max) throw invalidParam(`${name} must be an integer from ${min} to ${max}`);
  return Number(raw);
}

/** `from` and `limit` as Synapse's admin API takes them (from: an offset, as next_token returns it). */
function pageParams(req: Request): { from: number; limit: number } {
  return { from: intParam(req, "from", 0, 0, 999_999_999), limit: intParam(req, "limit", QUEUE_PAGE_DEFAULT_LIMIT, 1, QUEUE_PAGE_MAX_LIMIT) };
}

async function knownDestination(sender: Sender, raw: unknown): Promise<string> {
  const destination = destinationParam(sender, raw);
  if (!(await sender.outbound.isKnownDestination(destination))) throw notFound("Unknown destination");
  return destination;
}

export function queueAdminRouter(sender: Sender): Router {
  const router = Router();

  router.get(
    `${PREFIX}/queue`,
    route(async (req, res) => {
      const { from, limit } = pageParams(req);
      const orderBy = queryString(req, "order_by") ?? "destination";
      if (!(QUEUE_ORDER_BY as readonly string[]).includes(orderBy)) throw invalidParam(`order_by must be one of ${QUEUE_ORDER_BY.join(", ")}`);
      const dir = queryString(req, "dir") ?? "f";
      if (dir !== "f" && dir !== "b") throw invalidParam("dir must be f (forwards) or b (backwards)");
      const page = await sender.view.page({ from, limit, orderBy: orderBy as QueueOrderBy, dir });
      res.json({
        destinations: page.destinations,
        total: page.total,
        ...(page.nextFrom !== null ? { next_token: String(page.nextFrom) } : {}),
        total_pending_pdus: page.totalPendingPdus,
        total_pending_edus: page.totalPendingEdus,
        workers_in_this_process: sender.runningWorkers,
      });
    }),
  );

  router.get(
    `${PREFIX}/queue/:destination`,
    route(async (req, res) => {
      const d = await sender.view.describe(destinationParam(sender, req.params.destination));
      if (!d) throw notFound("Unknown destination");
      res.json(d);
    }),
  );

  router.post(
    `${PREFIX}/queue/:destination/retry`,
    route(async (req, res) => {
      const destination = await knownDestination(sender, req.params.destination);
      const job = await sender.retryNow(destination);
      res.json({ destination, job });
    }),
  );

  router.get(
    `${PREFIX}/queue/:destination/dead-letters`,
    route(async (req, res) => {
      const destination = await knownDestination(sender, req.params.destination);
      const { from, limit } = pageParams(req);
      const { total, entries } = await sender.outbound.deadLetters(destination, from, limit);
      const end = from + entries.length;
      res.json({
        destination,
        total,
        dead_letters: entries.map((e) => ({ event_id: e.eventId, room_id: e.roomId, reason: e.reason, status: e.status, ts: e.ts, txn_id: e.txnId })),
        ...(end < total ? { next_token: String(end) } : {}),
      });
    }),
  );

  for (const action of ["replay", "drop"] as const) {
    router.post(
      `${PREFIX}/queue/:destination/dead-letters/${action}`,
      route(async (req, res) => {
        const destination = await knownDestination(sender, req.params.destination);
        const n = await sender.resolveDeadLetters(destination, action);
        res.json(action === "replay" ? { destination, replayed: n } : { destination, dropped: n });
      }),
    );
  }

  return router;
}
