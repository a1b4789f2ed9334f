/**
 * The `gatehouse` command. Output here is for people (console), the service logs JSON.
 *   gatehouse serve            start the gateway (embedded Redis when REDIS_URL is unset)
 *   gatehouse keygen           create the signing key and a self-signed TLS pair in the data folder
 *   gatehouse worker           run only the outbound sender workers (needs REDIS_URL)
 *   gatehouse queue [retry D]  the outbound queue, via the admin API of a running serve
 *   gatehouse config check     validate the settings and print them (secrets hidden)
 */
import { existsSync, readFileSync } from "node:fs";
import { loadConfig, ConfigError, type Config } from "./config.js";
import { createLogger } from "./logger.js";
import { startGatehouse, startWorker } from "./server.js";
import { loadOrCreateSigningKeys } from "./keys/own-keys.js";
import { generateSelfSignedCertificate } from "./tls.js";
import { parseServerName } from "./protocol/ids.js";

const HELP = `gatehouse — Matrix federation gateway for knock rooms

Usage:
  gatehouse serve           Start the gateway (federation HTTPS, admin API, sender worker).
  gatehouse worker          Run only outbound sender workers (any number of them may share the
                            Redis given by REDIS_URL with serve processes).
  gatehouse queue           List destinations of the outbound queue: pending PDUs/EDUs, the
                            transaction in flight, last success and error, backoff.
  gatehouse queue show <destination>    One destination in detail (JSON).
  gatehouse queue retry <destination>   Clear the destination's backoff and send now.
                            (queue commands call the admin API of a running serve, at
                            GATEHOUSE_ADMIN_LISTEN with its token.)
  gatehouse keygen          Create the signing key (and a self-signed TLS certificate when
                            GATEHOUSE_TLS=auto) in the data folder, if they do not exist.
  gatehouse config check    Validate the settings from the environment and print them.
  gatehouse help            This text.

Settings come from environment variables (see README.md, "Settings").`;

function loadOrExit(): Config {
  try {
    return loadConfig(process.env);
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`gatehouse: invalid setting ${e.message}`);
      process.exit(2);
    }
    throw e;
  }
}

async function serve(): Promise<void> {
  const config = loadOrExit();
  const logger = createLogger(config.logLevel);
  let running;
  try {
    running = await startGatehouse(config, logger);
  } catch (e) {
    logger.fatal({ err: (e as Error).message }, "gatehouse failed to start");
    process.exit(1);
  }
  onSignals(config, logger, () => running.stop());
}

function onSignals(config: Config, logger: ReturnType<typeof createLogger>, stop: () => Promise<void>): void {
  const shutdown = (signal: string) => {
    logger.info({ signal }, "shutting down");
    const hard = setTimeout(() => process.exit(1), config.shutdownTimeoutMs + 5000);
    hard.unref();
    stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once("SIGTERM", () => shutdown("SIGTERM"));
  process.once("SIGINT", () => shutdown("SIGINT"));
}

async function worker(): Promise<void> {
  const config = loadOrExit();
  const logger = createLogger(config.logLevel);
  let running;
  try {
    running = await startWorker(config, logger);
  } catch (e) {
    logger.fatal({ err: (e as Error).message }, "gatehouse worker failed to start");
    process.exit(1);
  }
  onSignals(config, logger, () => running.stop());
}

async function adminCall(config: Config, method: string, path: string): Promise<unknown> {
  let token = config.admin.token;
  if (!token) {
    if (!existsSync(config.admin.tokenFile)) {
      console.error(`gatehouse: no admin token (set GATEHOUSE_ADMIN_TOKEN, or run where ${config.admin.tokenFile} exists)`);
      process.exit(2);
    }
    token = readFileSync(config.admin.tokenFile, "utf8").trim();
  }
  const host = config.admin.host === "0.0.0.0" ? "127.0.0.1" : config.admin.host === "::" ? "::1" : config.admin.host;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${config.admin.port}/_gatehouse/admin/v1${path}`;
  let res: Response;
  try {
    res = await fetch(url, { method, headers: { Authorization: `Bearer ${token}`, ...(method === "POST" ? { "Content-Type": "application/json" } : {}) }, ...(method === "POST" ? { body: "{}" } : {}) });
  } catch (e) {
    console.error(`gatehouse: cannot reach the admin API at ${url}: ${(e as Error).message} (is gatehouse serve running?)`);
    process.exit(1);
  }
  const body = (await res.json().catch(() => null)) as unknown;
  if (!res.ok) {
    console.error(`gatehouse: ${method} ${path} answered ${res.status}: ${JSON.stringify(body)}`);
    process.exit(1);
  }
  return body;
}

function ago(ts: number | null, now: number): string {
  if (!ts) return "-";
  const s = Math.round((now - ts) / 1000);
  return s < 0 ? `in ${-s}s` : `${s}s ago`;
}

async function queue(args: string[]): Promise<void> {
  const config = loadOrExit();
  const [sub, dest] = args;
  if (sub === "retry" || sub === "show") {
    if (!dest) {
      console.error(`usage: gatehouse queue ${sub} <destination>`);
      process.exit(2);
    }
    const out = await adminCall(config, sub === "retry" ? "POST" : "GET", `/queue/${encodeURIComponent(dest)}${sub === "retry" ? "/retry" : ""}`);
    console.log(JSON.stringify(out, null, 2));
    return;
  }
  if (sub !== undefined) {
    console.error("usage: gatehouse queue [show|retry <destination>]");
    process.exit(2);
  }
  const out = (await adminCall(config, "GET", "/queue")) as {
    destinations: {
      destination: string; pending_pdus: number; pending_edus: number; txn_id: string | null; txn_age_ms: number | null;
      last_success_ts: number | null; last_error: string | null; last_error_ts: number | null; failures: number; backoff_until: number | null;
    }[];
  };
  const now = Date.now();
  const rows = [["DESTINATION", "PDUS", "EDUS", "IN FLIGHT", "LAST SUCCESS", "FAILURES", "BACKOFF", "LAST ERROR"]];
  for (const d of out.destinations) {
    rows.push([
      d.destination,
      String(d.pending_pdus),
      String(d.pending_edus),
      d.txn_id ? `${d.txn_id} (${Math.round((d.txn_age_ms ?? 0) / 1000)}s)` : "-",
      ago(d.last_success_ts, now),
      String(d.failures),
      d.backoff_until ? ago(d.backoff_until, now) : "-",
      d.last_error ? `${d.last_error} (${ago(d.last_error_ts, now)})` : "-",
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) console.log(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  "));
  if (out.destinations.length === 0) console.log("(no destinations yet)");
}

async function keygen(): Promise<void> {
  const config = loadOrExit();
  const existed = existsSync(config.signingKeyFile);
  const { keys } = loadOrCreateSigningKeys(config.signingKeyFile);
  console.log(`${existed ? "kept" : "created"} signing key ${keys[0]!.keyId} in ${config.signingKeyFile}`);
  console.log(`public key: ${keys[0]!.publicKeyBase64}`);
  if (config.tls) {
    if (existsSync(config.tls.certFile) && existsSync(config.tls.keyFile)) {
      console.log(`kept TLS certificate ${config.tls.certFile}`);
    } else {
      const host = parseServerName(config.serverName)?.host.replace(/^\[|\]$/g, "") ?? "localhost";
      await generateSelfSignedCertificate(config.tls.certFile, config.tls.keyFile, host);
      console.log(`created a self-signed TLS certificate for ${host} in ${config.tls.certFile} (development only)`);
    }
  }
}

function configCheck(): void {
  const config = loadOrExit();
  const shown = { ...config, admin: { ...config.admin, token: config.admin.token ? "[set]" : null } };
  console.log(JSON.stringify(shown, null, 2));
  console.log("configuration is valid");
}

const [command, sub, ...rest] = process.argv.slice(2);
switch (command) {
  case "serve":
    await serve();
    break;
  case "worker":
    await worker();
    break;
  case "queue":
    await queue([sub, ...rest].filter((a): a is string => a !== undefined));
    break;
  case "keygen":
    await keygen();
    break;
  case "config":
    if (sub === "check") configCheck();
    else {
      console.error("usage: gatehouse config check");
      process.exit(2);
    }
    break;
  case undefined:
  case "help":
  case "--help":
  case "-h":
    console.log(HELP);
    break;
  default:
    console.error(`gatehouse: unknown command ${command}\n\n${HELP}`);
    process.exit(2);
}
