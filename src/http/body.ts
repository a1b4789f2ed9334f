/**
 * Request bodies are read raw and parsed here, once: the raw text is kept because JSON.parse
 * hides non-canonical numbers (`1.0` → 1), and request signatures cover the parsed content.
 *
 * Bounded and strict, before anything else looks at the request (X-Matrix key fetches included):
 * invalid UTF-8 is refused rather than decoded to U+FFFD (the spec requires UTF-8, and a
 * replaced character would change what was signed), and a body nesting deeper than
 * MAX_BODY_NESTING is refused before JSON.parse (see protocol/json-nesting.ts). Both are 400
 * M_NOT_JSON: the bytes are not JSON Gatehouse accepts.
 */
import { isUtf8 } from "node:buffer";
import type { NextFunction, Request, Response } from "express";
import { badJson, MatrixError, notJson, tooLarge } from "../protocol/errors.js";
import { isPlainObject } from "../protocol/pdu.js";
import { jsonTextDepth, MAX_BODY_NESTING } from "../protocol/json-nesting.js";

declare module "express-serve-static-core" {
  interface Request {
    /** The body exactly as received, decoded as UTF-8 ("" when there was none). */
    rawBody?: string;
  }
}

export function jsonBody(limitBytes: number) {
  return (req: Request, _res: Response, next: NextFunction): void => {
    if (req.method === "GET" || req.method === "HEAD" || req.method === "OPTIONS") {
      req.rawBody = "";
      req.body = undefined;
      // Still drain anything a client sent with a GET.
      req.resume();
      return next();
    }
    const declared = Number(req.headers["content-length"] ?? "0");
    if (declared > limitBytes) return next(tooLarge(`request body exceeds ${limitBytes} bytes`));
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on("data", (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > limitBytes) {
        failed = true;
        next(tooLarge(`request body exceeds ${limitBytes} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on("error", (err) => {
      if (!failed) {
        failed = true;
        next(err);
      }
    });
    req.on("end", () => {
      if (failed) return;
      const bytes = Buffer.concat(chunks);
      if (bytes.length === 0) {
        req.rawBody = "";
        req.body = undefined;
        return next();
      }
      if (!isUtf8(bytes)) return next(notJson("request body is not valid UTF-8"));
      if (jsonTextDepth(bytes, MAX_BODY_NESTING) > MAX_BODY_NESTING) return next(notJson(`request body nests deeper than ${MAX_BODY_NESTING} levels`));
      const text = bytes.toString("utf8");
      req.rawBody = text;
      try {
        req.body = JSON.parse(text);
      } catch {
        return next(notJson("request body is not valid JSON"));
      }
      next();
    });
  };
}

export function isMatrixError(e: unknown): e is MatrixError {
  return e instanceof MatrixError;
}

/** A parsed JSON body that must be an object (absent: `{}`); 400 M_BAD_JSON otherwise. */
export function objectBody(req: Request): Record<string, unknown> {
  if (req.body === undefined) return {};
  if (!isPlainObject(req.body)) throw badJson("Request body must be a JSON object");
  return req.body;
}
