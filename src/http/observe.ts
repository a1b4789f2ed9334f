/**
 * One structured log line and one metrics sample per request. The route label (`endpoint` in the log line) is the Express
 * route pattern (bounded), never the raw path. Runs on `finish`, so it sees the final status and
 * the errcode the error handler put in res.locals.
 *
 * An answer whose connection closed before its end (a streamed answer, http/json-stream.ts) is
 * recorded on `close` instead: as 500 M_UNKNOWN when the server failed after the first byte
 * (json-stream sets `res.locals.failedAfterFirstByte` before it destroys the connection), else as
 * 499, nginx's "client closed request" (the client left; not the server's fault). Both are
 * `aborted` in the log line.
 */
import { randomUUID } from "node:crypto";
import type { NextFunction, Request, Response } from "express";
import type { Logger } from "../logger.js";

/** nginx's status for a request whose client closed the connection before the answer's end. */
const CLIENT_CLOSED_REQUEST = 499;

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
    let observed = false;
    const observe = (aborted: "server" | "client" | undefined) => {
      if (observed) return;
      observed = true;
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const endpoint = req.route?.path ? String(req.route.path) : "unmatched";
      const status = aborted === "server" ? 500 : aborted === "client" ? CLIENT_CLOSED_REQUEST : res.statusCode;
      const errcode = aborted === "server" ? "M_UNKNOWN" : typeof res.locals.errcode === "string" ? res.locals.errcode : "";
      record({ endpoint, method: req.method, status, errcode, seconds });
      const roomId = typeof req.params?.roomId === "string" ? req.params.roomId : undefined;
      logger.info(
        {
          requestId,
          method: req.method,
          endpoint,
          status,
          ...(errcode ? { errcode } : {}),
          ...(aborted ? { aborted } : {}),
          ...(req.origin ? { origin: req.origin } : {}),
          ...(roomId ? { roomId } : {}),
          ms: Math.round(seconds * 1000 * 10) / 10,
        },
        "request",
      );
    };
    res.on("finish", () => observe(undefined));
    res.on("close", () => {
      if (!res.writableFinished) observe(res.locals.failedAfterFirstByte === true ? "server" : "client");
    });
    next();
  };
}
