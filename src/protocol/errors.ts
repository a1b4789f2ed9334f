/**
 * Matrix errors as values. Every expected failure that reaches a remote server or an
 * admin client is a MatrixError: an errcode from the spec, the HTTP status the spec
 * pairs with it, and a human-readable message. Anything else thrown is a bug (500).
 */

export type Errcode =
  | "M_FORBIDDEN"
  | "M_UNAUTHORIZED"
  | "M_UNKNOWN_TOKEN"
  | "M_MISSING_TOKEN"
  | "M_NOT_FOUND"
  | "M_UNRECOGNIZED"
  | "M_BAD_JSON"
  | "M_NOT_JSON"
  | "M_INVALID_PARAM"
  | "M_MISSING_PARAM"
  | "M_INCOMPATIBLE_ROOM_VERSION"
  | "M_UNSUPPORTED_ROOM_VERSION"
  | "M_TOO_LARGE"
  | "M_LIMIT_EXCEEDED"
  | "M_ROOM_IN_USE"
  | "M_UNKNOWN"
  | "M_BAD_STATE"
  | "M_UNABLE_TO_GRANT_JOIN"
  | "M_EXCLUSIVE"
  | "M_USER_IN_USE"
  | "M_INVALID_USERNAME"
  | "M_INVALID_ROOM_STATE"
  | "M_URL_NOT_SET"
  | "M_BAD_STATUS"
  | "M_CONNECTION_FAILED"
  | "M_CONNECTION_TIMEOUT";

export class MatrixError extends Error {
  readonly errcode: Errcode;
  readonly status: number;
  /** Extra fields for the error body, e.g. room_version or retry_after_ms. */
  readonly extra: Readonly<Record<string, unknown>>;

  constructor(status: number, errcode: Errcode, message: string, extra: Record<string, unknown> = {}) {
    super(message);
    this.name = "MatrixError";
    this.status = status;
    this.errcode = errcode;
    this.extra = extra;
  }

  /** The JSON body the spec prescribes: `{errcode, error, ...extra}`. */
  toJSON(): Record<string, unknown> {
    return { errcode: this.errcode, error: this.message, ...this.extra };
  }
}

export const forbidden = (message: string, extra?: Record<string, unknown>) =>
  new MatrixError(403, "M_FORBIDDEN", message, extra);
export const unauthorized = (message: string) => new MatrixError(401, "M_UNAUTHORIZED", message);
export const notFound = (message: string) => new MatrixError(404, "M_NOT_FOUND", message);
export const badJson = (message: string) => new MatrixError(400, "M_BAD_JSON", message);
export const notJson = (message: string) => new MatrixError(400, "M_NOT_JSON", message);
export const invalidParam = (message: string) => new MatrixError(400, "M_INVALID_PARAM", message);
export const missingParam = (message: string) => new MatrixError(400, "M_MISSING_PARAM", message);
export const tooLarge = (message: string) => new MatrixError(413, "M_TOO_LARGE", message);
export const incompatibleRoomVersion = (roomVersion: string) =>
  new MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION", `Your homeserver does not support room version ${roomVersion}`, {
    room_version: roomVersion,
  });
export const unsupportedRoomVersion = (message: string) => new MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", message);
export const limitExceeded = (retryAfterMs: number) =>
  new MatrixError(429, "M_LIMIT_EXCEEDED", "Too many requests", { retry_after_ms: retryAfterMs });
export const unrecognized = (message: string) => new MatrixError(404, "M_UNRECOGNIZED", message);
