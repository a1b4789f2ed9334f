/**
 * Request bodies are read raw and parsed here, once: the raw text is kept because JSON.parse
 * hides non-canonical numbers (`1.0` → 1), and request signatures cover the parsed content.
 */
import type { NextFunction, Request, Response } from "express";
import { MatrixError, notJson, tooLarge } from "../protocol/errors.js";

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
      const text = Buffer.concat(chunks).toString("utf8");
      req.rawBody = text;
      if (text.length === 0) {
        req.body = undefined;
        return next();
      }
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
