/**
 * Users that application services register (`POST /register` with
 * `m.login.application_service`) and their profiles. Gatehouse keeps no passwords or devices:
 * a registered user acts through its service's as_token with `user_id`.
 */
import type { Redis } from "ioredis";
import { MatrixError } from "../protocol/errors.js";
import { isValidNewLocalpart } from "../protocol/ids.js";
import type { RedisKeys } from "../store/redis-keys.js";
import type { AppserviceRegistration } from "./registration.js";
import type { AppserviceRegistry } from "./registry.js";

export interface Profile {
  displayname?: string;
  avatar_url?: string;
}

export class AppserviceAccounts {
  constructor(
    private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly registry: AppserviceRegistry,
  ) {}

  /** Registers `username` for the service (spec errors: M_INVALID_USERNAME, M_EXCLUSIVE, M_USER_IN_USE). */
  async register(reg: AppserviceRegistration, username: unknown): Promise<string> {
    if (typeof username !== "string" || username.length === 0) throw new MatrixError(400, "M_INVALID_USERNAME", "username is required");
    const serverName = this.registry.serverName;
    // A full user ID is accepted too (bridges send either), as long as it is ours.
    const localpart = username.startsWith("@") && username.endsWith(`:${serverName}`) ? username.slice(1, -serverName.length - 1) : username;
    if (!isValidNewLocalpart(localpart, serverName))
      throw new MatrixError(400, "M_INVALID_USERNAME", `${JSON.stringify(username)} is not a valid user localpart (a-z, 0-9, ._=-/+ and at most 255 bytes as a user ID)`);
    const userId = `@${localpart}:${serverName}`;
    if (!this.registry.mayMasquerade(reg, userId))
      throw new MatrixError(400, "M_EXCLUSIVE", `${userId} is not in the user namespaces of application service ${reg.id}`);
    const other = this.registry.exclusiveOwner("users", userId, reg);
    if (other) throw new MatrixError(400, "M_EXCLUSIVE", `${userId} is in an exclusive namespace of another application service`);
    const created = await this.redis.hsetnx(this.keys.appserviceUsers(), userId, reg.id);
    if (created !== 1) throw new MatrixError(400, "M_USER_IN_USE", `${userId} is already registered`);
    return userId;
  }

  /** The service that registered `userId`, or null. */
  ownerOf(userId: string): Promise<string | null> {
    return this.redis.hget(this.keys.appserviceUsers(), userId);
  }

  /** Whether the user exists: registered by a service, or a service's own sender. */
  async exists(userId: string): Promise<boolean> {
    if (this.registry.all.some((r) => this.registry.senderOf(r) === userId)) return true;
    return (await this.ownerOf(userId)) !== null;
  }

  async profile(userId: string): Promise<Profile> {
    const h = await this.redis.hgetall(this.keys.profile(userId));
    return { ...(h.displayname !== undefined ? { displayname: h.displayname } : {}), ...(h.avatar_url !== undefined ? { avatar_url: h.avatar_url } : {}) };
  }

  /** Sets (or, with null, removes) one profile field. */
  async setProfileField(userId: string, field: "displayname" | "avatar_url", value: string | null): Promise<void> {
    if (value === null) await this.redis.hdel(this.keys.profile(userId), field);
    else await this.redis.hset(this.keys.profile(userId), field, value);
  }
}
