/**
 * Redis-backed token buckets, so limits hold across replicas. One Lua call per check
 * (store/lua/take-token.lua): refill by elapsed time, take one token or report how long until one
 * is available. Answers 429 M_LIMIT_EXCEEDED with retry_after_ms (and Retry-After, via the error
 * handler).
 *
 * Two limits protect the federation listener: per origin server (all endpoints) and per hosted
 * room for knocks (make_knock + send_knock), which bounds how fast any set of servers can fill a
 * room's knock list.
 */
import type { NextFunction, Request, Response } from "express";
import type { Redis } from "ioredis";
import { limitExceeded } from "../protocol/errors.js";
import type { RedisKeys } from "../store/redis-keys.js";
import { defineLuaCommands } from "../store/lua-scripts.js";

export interface BucketSettings {
  /** Tokens added per second. */
  ratePerSecond: number;
  /** Bucket size: the burst allowed after a quiet period. */
  burst: number;
}

type RedisWithBucket = Redis & { gatehouseTakeToken(numKeys: 1, key: string, rate: string, burst: string, now: string): Promise<number> };

export class RateLimiter {
  private readonly redis: RedisWithBucket;

  constructor(
    redis: Redis,
    private readonly keys: RedisKeys,
    private readonly clock: () => number = Date.now,
  ) {
    this.redis = redis as RedisWithBucket;
    defineLuaCommands(redis, { gatehouseTakeToken: "take-token" });
  }

  /** 0 when a token was taken, else the milliseconds until one is available. */
  async take(bucket: string, subject: string, settings: BucketSettings): Promise<number> {
    if (settings.ratePerSecond <= 0) return 0;
    return Number(
      await this.redis.gatehouseTakeToken(1, this.keys.rateLimit(bucket, subject), String(settings.ratePerSecond / 1000), String(settings.burst), String(this.clock())),
    );
  }

  /** Middleware limiting each authenticated origin server (mount after X-Matrix auth). */
  perOrigin(settings: BucketSettings, onLimited?: (bucket: string) => void) {
    return (req: Request, _res: Response, next: NextFunction): void => {
      if (!req.origin) return next();
      this.take("origin", req.origin, settings).then(
        (wait) => {
          if (wait > 0) {
            onLimited?.("origin");
            return next(limitExceeded(wait));
          }
          next();
        },
        // A Redis outage must not turn into an open door or a 500 storm: fail open, but only here.
        () => next(),
      );
    };
  }

  /** Middleware limiting knocks per hosted room (route-level, needs req.params.roomId). */
  perRoom(bucket: string, settings: BucketSettings, onLimited?: (bucket: string) => void) {
    return (req: Request, _res: Response, next: NextFunction): void => {
      const roomId = req.params.roomId;
      if (typeof roomId !== "string") return next();
      this.take(bucket, roomId, settings).then(
        (wait) => {
          if (wait > 0) {
            onLimited?.(bucket);
            return next(limitExceeded(wait));
          }
          next();
        },
        () => next(),
      );
    };
  }
}
