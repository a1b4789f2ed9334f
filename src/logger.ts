/** Structured JSON logs (pino). Secrets and signatures are redacted by path. */
import { pino, type Logger } from "pino";

export type { Logger };

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: "gatehouse" },
      redact: {
        paths: ["req.headers.authorization", "headers.authorization", "token", "seed", "*.signatures", "signatures"],
        censor: "[redacted]",
      },
    },
    destination as pino.DestinationStream | undefined,
  );
}
