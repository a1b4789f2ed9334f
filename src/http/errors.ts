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

interface RouteLayer {
  match(path: string): boolean;
  route?: { methods: Record<string, boolean> };
  handle?: { stack?: RouteLayer[] };
}

/**
 * The fallback for an app: a known path with the wrong method answers 405 M_UNRECOGNIZED with an
 * Allow header (spec: "Unsupported method"), anything else 404 M_UNRECOGNIZED. Routes are read
 * from the app's router once, at the first unmatched request.
 */
export function unmatchedHandler(app: { router?: { stack: RouteLayer[] } }) {
  let routes: RouteLayer[] | null = null;
  const collect = (stack: RouteLayer[], out: RouteLayer[]) => {
    for (const layer of stack) {
      if (layer.route) out.push(layer);
      else if (layer.handle?.stack) collect(layer.handle.stack, out);
    }
    return out;
  };
  return (req: Request, res: Response, next: NextFunction): void => {
    routes ??= collect(app.router?.stack ?? [], []);
    const allowed = new Set<string>();
    for (const layer of routes) {
      if (!layer.match(req.path)) continue;
      for (const [method, on] of Object.entries(layer.route!.methods)) if (on && method !== "_all") allowed.add(method.toUpperCase());
    }
    if (allowed.size > 0 && !allowed.has(req.method)) {
      if (allowed.has("GET")) allowed.add("HEAD");
      res.setHeader("Allow", [...allowed].sort().join(", "));
      return next(new MatrixError(405, "M_UNRECOGNIZED", `Unsupported method ${req.method} for ${req.path}`));
    }
    notFoundHandler(req, res, next);
  };
}

export function errorHandler(logger: Logger) {
  return (err: unknown, req: Request, res: Response, _next: NextFunction): void => {
    if (res.headersSent) {
      // An answer sent in chunks (http/json-stream.ts) failed after its first byte: its
      // connection was destroyed; nothing more can reach the client.
      logger.error({ err, method: req.method, path: req.path }, "answer failed after its first byte: connection aborted");
      return;
    }
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
    // The router could not percent-decode a path parameter (`%ED%A0%80` is a lone surrogate, `%E0`
    // is cut short): the client's request is malformed, not our bug.
    if (status === 400 && err instanceof URIError) {
      res.locals.errcode = "M_INVALID_PARAM";
      res.status(400).json({ errcode: "M_INVALID_PARAM", error: "Path parameter is not valid percent-encoded UTF-8" });
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
