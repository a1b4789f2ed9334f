// A sender worker process for the crash tests: `node --import tsx test/support/sender-worker.ts`.
// Env: REDIS_URL, GH_PREFIX, GH_SEED_HEX (Gatehouse's signing key seed), GH_LOCK_MS,
// GH_INSTANCE_ID (optional: the identity a restart keeps), GH_SHUTDOWN_MS (close deadline),
// GH_TIMEOUT_MS (federation request timeout).
// Prints "ready" once its workers run; SIGTERM closes gracefully, SIGKILL is the point.
import { gatehouseKey, makeSender } from "./sender-fixture.js";

const s = makeSender({
  prefix: process.env.GH_PREFIX!,
  key: gatehouseKey(process.env.GH_SEED_HEX!),
  settings: { lockDurationMs: Number(process.env.GH_LOCK_MS ?? 1500), backoffInitialMs: 100, backoffMaxMs: 500 },
  logLevel: process.env.GATEHOUSE_TEST_LOG_LEVEL ?? "silent",
  instanceId: process.env.GH_INSTANCE_ID || undefined,
  timeoutMs: Number(process.env.GH_TIMEOUT_MS ?? 5000),
});
// The handler is installed before "ready" is printed: the tests send SIGTERM as soon as they
// read it, and on a loaded machine this process can be descheduled right after the write.
process.once("SIGTERM", () => {
  s.sender
    .close(Number(process.env.GH_SHUTDOWN_MS ?? 2000))
    .then(() => s.close())
    .then(() => process.exit(0));
});
await s.sender.startWorkers();
process.stdout.write(`ready ${process.pid}\n`);
