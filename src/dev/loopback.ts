/**
 * A Gatehouse on loopback for the demo, the interop tests and the benchmarks: a fresh data
 * folder, a free federation port (the server name is 127.0.0.1:<port>), admin and metrics on
 * ephemeral ports, and outbound federation allowed to reach self-signed peers on 127.0.0.1.
 * Development only: these settings are exactly what production must not use.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../config.js";
import { createLogger } from "../logger.js";
import { startGatehouse, type RunningGatehouse } from "../server.js";
import { freePort } from "../embedded-redis.js";
import { jsonRequest } from "./http-json.js";

export type AdminCall = (method: string, path: string, body?: unknown) => Promise<{ status: number; body: any }>;

export interface LoopbackGatehouse {
  gh: RunningGatehouse;
  serverName: string;
  dataDir: string;
  /** Calls the admin API (`path` below /_gatehouse/admin/v1); never throws on HTTP errors. */
  admin: AdminCall;
  stop(): Promise<void>;
  /** Stops it, runs `whileDown`, and starts it again with the same settings, data folder, Redis and ports (an outage). */
  restart(whileDown?: () => Promise<void>): Promise<void>;
}

export async function startLoopbackGatehouse(
  opts: { label?: string; env?: Record<string, string | undefined>; logLevel?: string; logDestination?: NodeJS.WritableStream } = {},
): Promise<LoopbackGatehouse> {
  const dataDir = mkdtempSync(join(tmpdir(), `gatehouse-${opts.label ?? "loopback"}-`));
  const port = await freePort();
  const config = loadConfig({
    GATEHOUSE_DATA_DIR: dataDir,
    GATEHOUSE_FEDERATION_LISTEN: `127.0.0.1:${port}`,
    GATEHOUSE_ADMIN_LISTEN: "127.0.0.1:0",
    GATEHOUSE_METRICS_LISTEN: "127.0.0.1:0",
    GATEHOUSE_FEDERATION_INSECURE_SKIP_TLS_VERIFY: "true",
    GATEHOUSE_FEDERATION_ALLOW_PRIVATE_ADDRESSES: "true",
    GATEHOUSE_LOG_LEVEL: opts.logLevel ?? "warn",
    ...opts.env,
  });
  const logger = createLogger(config.logLevel, opts.logDestination);
  let gh = await startGatehouse(config, logger);
  const admin: AdminCall = (method, path, body) =>
    jsonRequest(`http://127.0.0.1:${gh.adminPort}/_gatehouse/admin/v1${path}`, method, gh.adminToken, body);
  return {
    get gh() {
      return gh;
    },
    serverName: config.serverName,
    dataDir,
    admin,
    async stop() {
      await gh.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
    async restart(whileDown) {
      await gh.stop();
      await whileDown?.();
      gh = await startGatehouse(config, logger);
    },
  };
}
