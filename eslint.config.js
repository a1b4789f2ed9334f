// Architecture boundaries, checked by `npm test` (scripts/test.mjs) and `npm run lint`.
// Only rules about structure live here: style is left to the compiler and review.
import tseslint from "typescript-eslint";

// Node built-ins and packages that do I/O: the protocol core must stay pure (testable with no
// network, disk or Redis), so only node:crypto, tweetnacl and sibling modules may be imported.
const IO_MODULES = [
  "express", "ioredis", "bullmq", "pino", "prom-client", "supertest", "selfsigned",
  "fs", "fs/promises", "net", "tls", "http", "https", "http2", "dgram", "dns", "dns/promises",
  "child_process", "cluster", "worker_threads", "readline", "os", "process", "inspector", "vm",
];
// The adapters and use cases around the core, as they appear in relative import paths.
const ADAPTER_DIRS = ["store", "net", "rooms", "sender", "http", "federation", "admin", "client", "keys", "dev", "appservice"];
const ADAPTER_FILES = ["app", "server", "cli", "config", "logger", "metrics", "tls", "embedded-redis"];

export default tseslint.config(
  { ignores: ["node_modules/**", "dist/**"] },
  {
    files: ["src/**/*.ts"],
    languageOptions: { parser: tseslint.parser },
    plugins: { "@typescript-eslint": tseslint.plugin },
    linterOptions: { reportUnusedDisableDirectives: "error" },
    rules: { "@typescript-eslint/no-this-alias": "error" },
  },
  {
    files: ["src/protocol/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          paths: IO_MODULES.flatMap((m) => [m, `node:${m}`]).map((name) => ({
            name,
            message: "src/protocol is the pure protocol core: no I/O modules.",
          })),
          patterns: [
            {
              regex: `^(\\.\\./)+(${ADAPTER_DIRS.join("|")})/`,
              message: "src/protocol must not import adapters or use cases (store, net, rooms, sender, http, …).",
            },
            {
              regex: `^(\\.\\./)+(${ADAPTER_FILES.join("|")})\\.js$`,
              message: "src/protocol must not import the composition root, config, logger or metrics.",
            },
          ],
        },
      ],
    },
  },
);
