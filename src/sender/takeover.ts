/**
 * Taking over the destinations of a dead sender process at once, instead of when its BullMQ job
 * locks expire.
 *
 * Each process with workers records, under its instance identity (GATEHOUSE_INSTANCE_ID plus the
 * role; stable across its restarts), the ID of its BullMQ worker with its host and pid. A
 * restarted process finds its predecessor's record; when that process is certainly dead (same
 * host, and its pid is ours — a container restarted in its pod — or no longer alive) it moves the
 * jobs still locked by that worker back to wait. Each move is BullMQ's own compare-and-delete of
 * the lock (Job.moveToWait with the lock's token), so a job that another worker holds meanwhile
 * is left alone. The same move releases a closing process's own locks at shutdown.
 */
import type { Queue } from "bullmq";
import type { Redis } from "ioredis";
import type { Logger } from "../logger.js";

/**
 * Records that `instanceId` now runs BullMQ worker(s) `workerId` (space-separated, one per shard;
 * at `key`). Returns the worker ID(s) of its previous incarnation when that process is certainly dead, else null. A live process with
 * the same instance ID (a misconfiguration) is left alone, with a warning: its jobs are taken
 * over only when their locks expire.
 */
export async function claimInstance(
  redis: Redis,
  key: string,
  me: { instanceId: string; workerId: string; host: string; now: number; logger: Logger; pid?: number },
): Promise<string | null> {
  const pid = me.pid ?? process.pid;
  const previous = await redis.set(key, JSON.stringify({ worker: me.workerId, host: me.host, pid, started: me.now }), "GET");
  if (!previous) return null;
  let prev: { worker?: unknown; host?: unknown; pid?: unknown };
  try {
    prev = JSON.parse(previous) as typeof prev;
  } catch {
    return null;
  }
  if (typeof prev.worker !== "string" || prev.worker === me.workerId) return null;
  const dead = prev.host === me.host && (prev.pid === pid || !pidAlive(Number(prev.pid)));
  if (!dead) {
    me.logger.warn(
      { instanceId: me.instanceId, previousHost: prev.host, previousPid: prev.pid },
      "another process used this instance ID and may still run; its jobs are taken over only when their locks expire (give each process its own GATEHOUSE_INSTANCE_ID)",
    );
    return null;
  }
  return prev.worker;
}

/**
 * Moves the active jobs of `queue` locked by BullMQ worker(s) `workerIds` (space-separated: one
 * worker per shard) back to wait. Returns how many moved.
 * Relies on BullMQ's lock key (`{queue}:{jobId}:lock`, value `{workerId}:{n}`); the crash tests
 * fail if a BullMQ upgrade changes it.
 */
export async function releaseLocksOf(redis: Redis, queue: Queue, workerIds: string, logger: Logger): Promise<number> {
  const workers = workerIds.split(" ").filter(Boolean);
  const ids = await redis.lrange(queue.keys.active!, 0, -1);
  if (ids.length === 0) return 0;
  const locks = await Promise.all(ids.map((id) => redis.get(queue.toKey(`${id}:lock`))));
  let moved = 0;
  for (let i = 0; i < ids.length; i++) {
    const lock = locks[i];
    if (!lock || !workers.some((w) => lock.startsWith(`${w}:`))) continue;
    const job = await queue.getJob(ids[i]!);
    if (!job) continue;
    try {
      await job.moveToWait(lock);
      moved++;
    } catch (err) {
      // Finished or taken over meanwhile.
      logger.debug({ jobId: ids[i], err: (err as Error).message }, "sender: job not released");
    }
  }
  return moved;
}

function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}
