/** Bearer-token check for the admin API, in constant time (hash both sides to equal lengths first). */
import { createHash, timingSafeEqual } from "node:crypto";
import type { NextFunction, Request, Response } from "express";
import { MatrixError } from "../protocol/errors.js";

export function requireAdminToken(token: string) {
  const expected = createHash("sha256").update(token).digest();
  return (req: Request, _res: Response, next: NextFunction): void => {
    const header = req.headers.authorization;
    if (!header || !header.startsWith("Bearer ")) return next(new MatrixError(401, "M_MISSING_TOKEN", "Missing admin access token"));
    const given = createHash("sha256").update(header.slice("Bearer ".length).trim()).digest();
    if (!timingSafeEqual(given, expected)) return next(new MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown admin access token"));
    next();
  };
}
