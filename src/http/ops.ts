/**
 * The operations listener: Prometheus /metrics, liveness and readiness. Readiness fails until
 * every listener of the process is bound (the ops listener starts first), while Redis does not
 * answer a PING within a second, and once shutdown has begun (so Kubernetes stops sending traffic
 * before the listeners close).
 */
import express, { type Express } from "express";
import type { Redis } from "ioredis";
import type { Registry } from "prom-client";

export interface OpsState {
  /** True until the process's other listeners (federation, admin, client) are bound. */
  starting: boolean;
  shuttingDown: boolean;
}

export function opsApp(registry: Registry, redis: Redis, state: OpsState): Express {
  const app = express();
  app.disable("x-powered-by");
  app.get("/metrics", async (_req, res) => {
    try {
      res.setHeader("Content-Type", registry.contentType);
      res.end(await registry.metrics());
    } catch (e) {
      res.status(500).end(String((e as Error).message));
    }
  });
  app.get("/health/live", (_req, res) => {
    res.json({ status: "ok" });
  });
  app.get("/health/ready", async (_req, res) => {
    if (state.shuttingDown) {
      res.status(503).json({ status: "shutting down" });
      return;
    }
    if (state.starting) {
      res.status(503).json({ status: "starting" });
      return;
    }
    try {
      const pong = await Promise.race([
        redis.ping(),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error("redis did not answer within 1 s")), 1000).unref()),
      ]);
      if (pong !== "PONG") throw new Error(`redis answered ${String(pong)}`);
      res.json({ status: "ok" });
    } catch (e) {
      res.status(503).json({ status: "redis unavailable", error: (e as Error).message });
    }
  });
  return app;
}
