/**
 * The `gatehouse` command. Output here is for people (console), the service logs JSON.
 *   gatehouse serve            start the gateway (embedded Redis when REDIS_URL is unset)
 *   gatehouse keygen           create the signing key and a self-signed TLS pair in the data folder
 *   gatehouse config check     validate the settings and print them (secrets hidden)
 */
import { existsSync } from "node:fs";
import { loadConfig, ConfigError, type Config } from "./config.js";
import { createLogger } from "./logger.js";
import { startGatehouse } from "./server.js";
import { loadOrCreateSigningKeys } from "./keys/own-keys.js";
import { generateSelfSignedCertificate } from "./tls.js";
import { parseServerName } from "./protocol/ids.js";

const HELP = `gatehouse — Matrix federation gateway for knock rooms

Usage:
  gatehouse serve           Start the gateway (federation HTTPS, admin API, sender worker).
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
  const shutdown = (signal: string) => {
    logger.info({ signal }, "shutting down");
    const hard = setTimeout(() => process.exit(1), config.shutdownTimeoutMs + 5000);
    hard.unref();
    running.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once("SIGTERM", () => shutdown("SIGTERM"));
  process.once("SIGINT", () => shutdown("SIGINT"));
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

const [command, sub] = process.argv.slice(2);
switch (command) {
  case "serve":
    await serve();
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
