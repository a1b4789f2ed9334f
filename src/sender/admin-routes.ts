/**
 * Admin API for the outbound queue, mounted under /_gatehouse/admin/v1 (via adminRouter's
 * `extra`):
 *   GET  /queue                        every destination: pending PDUs/EDUs, in-flight txn, status
 *   GET  /queue/{destination}          one destination (plus its BullMQ job state)
 *   POST /queue/{destination}/retry    clear the backoff and send now
 */
import { Router } from "express";
import { route } from "../http/errors.js";
import { invalidParam, notFound } from "../protocol/errors.js";
import type { Sender } from "./sender.js";

const PREFIX = "/_gatehouse/admin/v1";

function destinationParam(sender: Sender, raw: unknown): string {
  if (typeof raw !== "string" || !sender.transports.isValidDestination(raw)) throw invalidParam("destination must be a server name");
  return raw;
}

export function queueAdminRouter(sender: Sender): Router {
  const router = Router();

  router.get(
    `${PREFIX}/queue`,
    route(async (_req, res) => {
      const destinations = await sender.view.listDestinations();
      res.json({
        destinations,
        total_pending_pdus: destinations.reduce((n, d) => n + d.pending_pdus, 0),
        total_pending_edus: destinations.reduce((n, d) => n + d.pending_edus, 0),
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
      const destination = destinationParam(sender, req.params.destination);
      if (!(await sender.outbound.isKnownDestination(destination))) throw notFound("Unknown destination");
      const job = await sender.retryNow(destination);
      res.json({ destination, job });
    }),
  );

  return router;
}
