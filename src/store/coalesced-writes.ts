/**
 * Pipelining for a Redis connection without ioredis's auto-pipelining: every write the
 * connection makes in one event-loop turn reaches the socket in one `writev` (Node's
 * `cork`/`uncork`, the socket uncorked from `setImmediate`, when ioredis's auto-pipelining
 * would flush too). Commands are written, ordered and answered exactly as without pipelining.
 *
 * Why not `enableAutoPipelining`: it builds an ioredis Pipeline per flush (an object holding a
 * copy of every defined script command, a promise per command, a reply array), which cost ~45 µs
 * of CPU per command when the turn has one command (one knock request's snapshot or persist
 * script) against ~5 µs for the cork; with 10 commands per turn coalesced writes cost 26 µs per
 * command against 37–47 µs (bench/README.md, "node CPU per distinct knock").
 */
import type { Redis } from "ioredis";

/** The socket's `write`, corking it at a turn's first write and uncorking it once the turn is over. */
export function coalesceWrites(socket: NodeJS.WritableStream & { cork(): void; uncork(): void }): void {
  const marked = socket as typeof socket & { [COALESCED]?: true };
  if (marked[COALESCED]) return;
  marked[COALESCED] = true;
  const write = socket.write;
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  socket.write = function (this: unknown, ...args: unknown[]) {
    if (!corked) {
      corked = true;
      socket.cork();
      setImmediate(uncork);
    }
    return (write as (...a: unknown[]) => boolean).apply(this, args);
  } as typeof socket.write;
}

const COALESCED = Symbol("gatehouse.coalescedWrites");

/** Coalesces the writes of each socket `redis` connects with (a reconnection gets a new socket). */
export function coalesceRedisWrites(redis: Redis): void {
  const apply = () => {
    const stream = (redis as unknown as { stream?: Parameters<typeof coalesceWrites>[0] }).stream;
    if (stream) coalesceWrites(stream);
  };
  apply();
  redis.on("connect", apply);
}
