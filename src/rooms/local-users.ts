/**
 * Which of Gatehouse's own users exist, the way a homeserver with application services decides
 * it. Invites from other servers (`/v2/invite`) are taken only for a local user who exists
 * (remote-rooms.ts asks `exists`); any other name is refused before anything is written.
 *
 * A local user exists when
 *   1. an application service registered it (client API `/register`), or it is a service's own
 *      sender (`registered`, appservice/accounts.ts);
 *   2. Gatehouse knows it through the admin API: the admin API created a room for it, joined it,
 *      acted as it in a room, knocked out for it (the knock-out flow: the invite that accepts the
 *      knock must be taken), or an operator added it (`POST /users/{userId}`). This set lives in
 *      Redis (`local-users`);
 *   3. an application service whose user namespaces (exclusive or not) hold it answers the spec's
 *      user query (`GET /_matrix/app/v1/users/{userId}`) with 200; the service may register the
 *      user while answering, as bridges do. Synapse asks the same way (handlers/appservice.py
 *      `query_user_exists`), and it asks again next time if the service did not register it.
 *
 * Records made before this rule (migrate): local users in hosted rooms' member lists (only
 * Gatehouse can make those: a remote server cannot send events for our users) and room creators,
 * and users with a remote membership record that Gatehouse's own handshake made (knock, join,
 * leave, or an invite on a knock with auto_join). Users whose only records are invites from other
 * servers are not taken over: such records are what any server could make for any name.
 */
import type { Redis } from "ioredis";
import { invalidParam } from "../protocol/errors.js";
import { isValidUserId, serverOfUserId } from "../protocol/ids.js";
import type { RedisKeys } from "../store/redis-keys.js";
import type { Logger } from "../logger.js";

/** Why a local user exists (GET /users/{userId}); null when it does not. */
export type LocalUserSource = "admin" | "registered" | "appservice_query";

/** The version of the one-time migration (migrate); a later change of its rules bumps it. */
const MIGRATION_VERSION = "1";

export interface LocalUsersDeps {
  redis: Redis;
  keys: RedisKeys;
  serverName: string;
  /** Registered by an application service, or a service's sender (appservice/accounts.ts). */
  registered: (userId: string) => Promise<boolean>;
  /** The user query to the services whose user namespaces hold the user: true when one answers 200. */
  queryAppservices: (userId: string) => Promise<boolean>;
  logger: Logger;
}

export class LocalUsers {
  constructor(private readonly d: LocalUsersDeps) {}

  /** Whether `userId` is a valid user ID on this server. */
  isLocal(userId: unknown): userId is string {
    return typeof userId === "string" && isValidUserId(userId) && serverOfUserId(userId) === this.d.serverName;
  }

  /** The admin API acted for `userId` (after the action succeeded): it exists from now on. Non-local IDs are ignored. */
  async remember(userId: string): Promise<void> {
    if (this.isLocal(userId)) await this.d.redis.sadd(this.d.keys.localUsers(), userId);
  }

  /** An operator adds a user explicitly; 400 M_INVALID_PARAM for anything but a local user ID. Answers whether it was new. */
  async add(userId: unknown): Promise<boolean> {
    if (!this.isLocal(userId)) throw invalidParam(`user ID must be a valid user on ${this.d.serverName}`);
    return (await this.d.redis.sadd(this.d.keys.localUsers(), userId)) === 1;
  }

  /** Removes a user from the admin API's set (registrations are not touched). Answers whether it was there. */
  async remove(userId: unknown): Promise<boolean> {
    if (!this.isLocal(userId)) throw invalidParam(`user ID must be a valid user on ${this.d.serverName}`);
    return (await this.d.redis.srem(this.d.keys.localUsers(), userId)) === 1;
  }

  /** Users known through the admin API, sorted. */
  async list(): Promise<string[]> {
    return (await this.d.redis.smembers(this.d.keys.localUsers())).sort();
  }

  /**
   * Why `userId` exists, or null. Cheap answers first: the admin set and registrations are one
   * Redis read each; the application service is asked only when neither knows the user.
   */
  async exists(userId: string): Promise<LocalUserSource | null> {
    if (!this.isLocal(userId)) return null;
    if ((await this.d.redis.sismember(this.d.keys.localUsers(), userId)) === 1) return "admin";
    if (await this.d.registered(userId)) return "registered";
    if (await this.d.queryAppservices(userId)) return "appservice_query";
    return null;
  }

  /**
   * Fills the set from records made before it existed, once per Redis (a marker key says it was
   * done; running it twice is harmless: SADD). Answers how many users it added.
   */
  async migrate(): Promise<number> {
    const { redis, keys } = this.d;
    if ((await redis.get(keys.localUsersMigrated())) === MIGRATION_VERSION) return 0;
    const found = new Set<string>();
    for (const roomId of await redis.smembers(keys.rooms())) {
      const creator = await redis.hget(keys.room(roomId), "creator");
      if (creator && this.isLocal(creator)) found.add(creator);
      for (const u of await redis.hkeys(keys.members(roomId))) if (this.isLocal(u)) found.add(u);
    }
    for (const u of await redis.smembers(keys.remoteMembers())) {
      if (!this.isLocal(u) || found.has(u)) continue;
      for (const raw of await redis.hvals(keys.remoteMemberships(u))) {
        let r: { membership?: unknown; auto_join?: unknown };
        try {
          r = JSON.parse(raw) as typeof r;
        } catch {
          continue;
        }
        // Made by our own handshake (a knock, join or leave), or an invite that answered a knock of ours with auto_join.
        if (r.membership === "knock" || r.membership === "join" || r.membership === "leave" || r.auto_join === true) {
          found.add(u);
          break;
        }
      }
    }
    let added = 0;
    const all = [...found];
    for (let i = 0; i < all.length; i += 500) added += await redis.sadd(keys.localUsers(), ...all.slice(i, i + 500));
    await redis.set(keys.localUsersMigrated(), MIGRATION_VERSION);
    if (added > 0) this.d.logger.info({ added }, "local users known from records made before the local-users set");
    return added;
  }
}
