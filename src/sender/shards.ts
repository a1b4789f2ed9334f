/**
 * The sender's BullMQ queues, sharded by destination.
 *
 * BullMQ's scripts touch many keys of one queue at once, so on a Redis Cluster a queue lives in
 * ONE hash slot: its name carries a hash tag. With a single queue every destination's job sat in
 * one slot (one primary's CPU). The sender therefore runs `count` queues, `{send-<i>-of-<count>}`,
 * each in its own slot, and a destination always goes to shard `fnv1a(destination) mod count`
 * (deterministic, the same in every process). Each destination still has at most one job: its
 * deduplication ID is the destination, within its one shard.
 *
 * Changing the count (GATEHOUSE_SENDER_SHARDS) would give a destination a job in its old shard and
 * another in its new one, so two workers could run it at once. The queued work itself is not in
 * BullMQ (out:{dest}:pdus, the stored transaction), only the wake-ups are, so the safe change is a
 * drain of the old layout, then a sweep into the new one — `adoptLayout`, run by every process
 * before its workers start:
 *   1. under a migration lock (one layout change at a time, in any number of processes),
 *   2. the old layout's queues are paused (BullMQ's pause is stored in Redis: no worker of any
 *      process fetches from them any more; the old pre-sharding `{send}` queue counts as a layout),
 *   3. it waits until none of their active jobs holds a live lock (a running transaction finishes;
 *      a dead worker's lock expires within GATEHOUSE_SENDER_LOCK_MS),
 *   4. removes their waiting and delayed jobs (the pause stays, so an old process still running
 *      adds to a queue nobody reads), resumes the new layout's queues (paused by an earlier change
 *      back), and records the new count;
 *   5. the caller's recovery sweep then gives every destination with queued work a job in its new
 *      shard. No PDU is lost (none was in BullMQ) and none is sent twice under two txn_ids (the
 *      stored transaction is re-sent as it is).
 * The process started last decides the layout: an old process still running keeps serving no
 * destination (its queues are paused) until it is replaced.
 */
import { Queue } from "bullmq";
import type { Redis } from "ioredis";
import type { Logger } from "../logger.js";
import { luaScript } from "../store/lua-scripts.js";

/** The layout before sharding: one queue, `{send}`. */
export const LEGACY_QUEUE_NAME = "{send}";

/** Shard of a destination: FNV-1a (32 bit) of its UTF-8 bytes, modulo `count`. */
export function shardOf(destination: string, count: number): number {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(destination, "utf8")) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % count;
}

/** The queue name of shard `index` of `count` (its hash tag puts the queue in one slot). */
export function shardQueueName(index: number, count: number): string {
  return `{send-${index}-of-${count}}`;
}

/** The queue names of a layout: a shard count, or "legacy" (the single `{send}` queue). */
export function layoutQueueNames(layout: number | "legacy"): string[] {
  if (layout === "legacy") return [LEGACY_QUEUE_NAME];
  return Array.from({ length: layout }, (_, i) => shardQueueName(i, layout));
}

export interface LayoutDeps {
  redis: Redis;
  /** BullMQ prefix (`<prefix>:bull`). */
  bullPrefix: string;
  /** STRING: the shard count in use. */
  layoutKey: string;
  /** STRING: held while a process changes the layout. */
  lockKey: string;
  logger: Logger;
  /** How long a migration may hold the lock before another process may take it (ms). */
  lockTtlMs?: number;
  pollMs?: number;
}

/**
 * Makes `count` the sender's layout (see the file comment). Returns the previous layout when it
 * changed one, else null. Waits as long as an old-layout job is locked by a live worker.
 */
export async function adoptLayout(count: number, deps: LayoutDeps): Promise<number | "legacy" | null> {
  const { redis, logger } = deps;
  const pollMs = deps.pollMs ?? 100;
  const current = await redis.get(deps.layoutKey);
  if (current === String(count)) return null;
  const lockTtl = deps.lockTtlMs ?? 60_000;
  const token = `${process.pid}:${Math.random().toString(36).slice(2)}`;
  for (let waited = 0; (await redis.set(deps.lockKey, token, "PX", lockTtl, "NX")) !== "OK"; waited += pollMs) {
    if (waited % 10_000 === 0) logger.info({ shards: count }, "sender: another process is changing the queue layout; waiting");
    await sleep(pollMs);
  }
  try {
    const now = await redis.get(deps.layoutKey);
    if (now === String(count)) return null;
    let previous: number | "legacy" | null = null;
    if (now !== null && /^[1-9][0-9]*$/.test(now)) previous = Number(now);
    else if ((await redis.exists(`${deps.bullPrefix}:${LEGACY_QUEUE_NAME}:meta`, `${deps.bullPrefix}:${LEGACY_QUEUE_NAME}:id`)) > 0) previous = "legacy";
    if (previous !== null) {
      logger.info({ from: previous, to: count }, "sender: changing the queue layout (draining the old shards)");
      await drainLayout(previous, deps, pollMs, token, lockTtl);
    }
    for (const name of layoutQueueNames(count)) {
      const q = new Queue(name, { connection: redis, prefix: deps.bullPrefix });
      // Only a queue an earlier change paused needs it; resume() writes nothing else.
      if (await q.isPaused()) await q.resume();
      await q.close();
    }
    await redis.set(deps.layoutKey, String(count));
    if (previous !== null) logger.info({ from: previous, to: count }, "sender: queue layout changed; the sweep re-queues every destination with work");
    return previous;
  } finally {
    // Compare-and-delete: only our own lock.
    await redis.eval(luaScript("release-lock"), 1, deps.lockKey, token);
  }
}

async function drainLayout(layout: number | "legacy", deps: LayoutDeps, pollMs: number, token: string, lockTtl: number): Promise<void> {
  const { redis, logger } = deps;
  for (const name of layoutQueueNames(layout)) {
    const q = new Queue(name, { connection: redis, prefix: deps.bullPrefix });
    try {
      await q.pause();
      for (let waited = 0; ; waited += pollMs) {
        const active = await redis.lrange(q.keys.active!, 0, -1);
        const locks = active.length ? await Promise.all(active.map((id) => redis.exists(q.toKey(`${id}:lock`)))) : [];
        if (!locks.some((n) => n > 0)) break;
        if (waited % 10_000 === 0) logger.info({ queue: name, active: active.length }, "sender: waiting for the old layout's running jobs to finish");
        await redis.set(deps.lockKey, token, "PX", lockTtl, "XX");
        await sleep(pollMs);
      }
      // Waiting and delayed jobs are only wake-ups: the sweep re-creates them in the new shards.
      await q.drain(true);
    } finally {
      await q.close();
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
