/**
 * The one Express error handler. An expected MatrixError goes to the client with its status and
 * errcode; anything else is a bug: 500 M_UNKNOWN and a log line with the stack.
 */
import type { NextFunction, Request, Response } from "express";
import { MatrixError, unrecognized } from "../protocol/errors.js";
import type { Logger } from "../logger.js";

export function notFoundHandler(req: Request, _res: Response, next: NextFunction): void {
  next(unrecognized(`Unrecognized request: ${req.method} ${req.path}`));
}

export function errorHandler(logger: Logger) {
  return (err: unknown, req: Request, res: Response, _next: NextFunction): void => {
    if (res.headersSent) return;
    if (err instanceof MatrixError) {
      res.locals.errcode = err.errcode;
      if (err.status === 429 && typeof err.extra.retry_after_ms === "number") {
        res.setHeader("Retry-After", String(Math.ceil(err.extra.retry_after_ms / 1000)));
      }
      res.status(err.status).json(err.toJSON());
      return;
    }
    // body-parser style errors (e.g. from express.json elsewhere) carry a status.
    const status = (err as { status?: number; type?: string })?.status;
    if (status === 413) {
      res.locals.errcode = "M_TOO_LARGE";
      res.status(413).json({ errcode: "M_TOO_LARGE", error: "Request body too large" });
      return;
    }
    if (status === 400 && (err as { type?: string }).type === "entity.parse.failed") {
      res.locals.errcode = "M_NOT_JSON";
      res.status(400).json({ errcode: "M_NOT_JSON", error: "Content not JSON." });
      return;
    }
    logger.error({ err, method: req.method, path: req.path }, "unhandled error");
    res.locals.errcode = "M_UNKNOWN";
    res.status(500).json({ errcode: "M_UNKNOWN", error: "Internal server error" });
  };
}

/** Wraps an async route so rejections reach the error handler. */
export function route<Req extends Request = Request>(fn: (req: Req, res: Response) => Promise<void> | void) {
  return (req: Request, res: Response, next: NextFunction): void => {
    Promise.resolve()
      .then(() => fn(req as Req, res))
      .catch(next);
  };
}
