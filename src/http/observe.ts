/**
 * One structured log line and one metrics sample per request. The route label (`endpoint` in the log line) is the Express
 * route pattern (bounded), never the raw path. Runs on `finish`, so it sees the final status and
 * the errcode the error handler put in res.locals.
 */
import { randomUUID } from "node:crypto";
import type { NextFunction, Request, Response } from "express";
import type { Logger } from "../logger.js";

export interface RequestSample {
  endpoint: string;
  method: string;
  status: number;
  errcode: string;
  seconds: number;
}

export function observeRequests(logger: Logger, record: (sample: RequestSample) => void) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const started = process.hrtime.bigint();
    const incoming = req.headers["x-request-id"];
    const requestId = typeof incoming === "string" && /^[\w.-]{1,64}$/.test(incoming) ? incoming : randomUUID();
    res.setHeader("X-Request-Id", requestId);
    res.on("finish", () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const endpoint = req.route?.path ? String(req.route.path) : "unmatched";
      const errcode = typeof res.locals.errcode === "string" ? res.locals.errcode : "";
      record({ endpoint, method: req.method, status: res.statusCode, errcode, seconds });
      const roomId = typeof req.params?.roomId === "string" ? req.params.roomId : undefined;
      logger.info(
        {
          requestId,
          method: req.method,
          endpoint,
          status: res.statusCode,
          ...(errcode ? { errcode } : {}),
          ...(req.origin ? { origin: req.origin } : {}),
          ...(roomId ? { roomId } : {}),
          ms: Math.round(seconds * 1000 * 10) / 10,
        },
        "request",
      );
    });
    next();
  };
}
