// A sender worker process for the crash tests: `node --import tsx test/support/sender-worker.ts`.
// Env: REDIS_URL, GH_PREFIX, GH_SEED_HEX (Gatehouse's signing key seed), GH_LOCK_MS.
// Prints "ready" once its workers run; SIGTERM closes gracefully, SIGKILL is the point.
import { gatehouseKey, makeSender } from "./sender-fixture.js";

const s = makeSender({
  prefix: process.env.GH_PREFIX!,
  key: gatehouseKey(process.env.GH_SEED_HEX!),
  settings: { lockDurationMs: Number(process.env.GH_LOCK_MS ?? 1500), backoffInitialMs: 100, backoffMaxMs: 500 },
  logLevel: process.env.GATEHOUSE_TEST_LOG_LEVEL ?? "silent",
});
await s.sender.startWorkers();
process.stdout.write(`ready ${process.pid}\n`);
process.once("SIGTERM", () => {
  s.close().then(() => process.exit(0));
});
