/** Key listing for the tests that works on a single Redis and on a Redis Cluster (every primary). */
import { Cluster, type Redis } from "ioredis";

/** Every key matching `pattern` (SCAN, never KEYS), across all primaries on a cluster. */
export async function scanKeys(redis: Redis, pattern: string): Promise<string[]> {
  const nodes: Redis[] = (redis as unknown) instanceof Cluster ? (redis as unknown as Cluster).nodes("master") : [redis];
  const keys: string[] = [];
  for (const node of nodes) {
    let cursor = "0";
    do {
      const [next, found] = await node.scan(cursor, "MATCH", pattern, "COUNT", 1000);
      cursor = next;
      keys.push(...found);
    } while (cursor !== "0");
  }
  return keys;
}

/** Deletes keys one command each (keys of several slots can't share one UNLINK on a cluster). */
export async function unlinkKeys(redis: Redis, keys: readonly string[]): Promise<number> {
  const counts = await Promise.all(keys.map((k) => redis.unlink(k)));
  return counts.reduce((a, b) => a + b, 0);
}
