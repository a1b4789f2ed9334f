/**
 * Pushing events to application services through the sender's queue. For an event of a hosted
 * room, RoomService asks `destinationsFor` and queues the event for them in the same atomic
 * write as the event itself (store/room-store.ts), like a federation destination. An invite
 * from another server to a namespace user (a room Gatehouse does not host) is queued by
 * `queueRemoteInvite`, with its stripped state in `unsigned.invite_room_state`.
 */
import type { Redis } from "ioredis";
import type { Pdu } from "../protocol/pdu.js";
import type { RedisKeys } from "../store/redis-keys.js";
import { defineLuaCommands } from "../store/lua-scripts.js";
import type { Fanout } from "../store/fanout.js";
import { stateField } from "../store/room-store.js";
import { appserviceDestination, interestedServices } from "./interest.js";
import type { AppserviceRegistry } from "./registry.js";

type RedisWithQueue = Redis & { gatehouseAppserviceQueueEvent(numKeys: number, ...args: string[]): Promise<number> };

export interface AppservicePushDeps {
  registry: AppserviceRegistry;
  redis: Redis;
  keys: RedisKeys;
  /** The fan-out stage (store/fanout.ts): moves the invite's outbox entry to the destinations' queues. */
  fanout: Pick<Fanout, "drain">;
  /** Local aliases of a hosted room. */
  aliasesOf: (roomId: string) => Promise<string[]>;
  /** Tells the sender which destinations have new entries. */
  wake: (destinations: readonly string[]) => void;
}

export class AppservicePush {
  private readonly pushing: boolean;
  private readonly aliasNamespaces: boolean;
  /** Local joined members per state version (a state map is never changed once built). */
  private readonly joinedCache = new WeakMap<object, readonly string[]>();

  constructor(private readonly d: AppservicePushDeps) {
    this.pushing = d.registry.all.some((r) => r.url !== null);
    this.aliasNamespaces = d.registry.all.some((r) => r.url !== null && r.namespaces.aliases.length > 0);
    defineLuaCommands(d.redis, { gatehouseAppserviceQueueEvent: "appservice-queue-event" });
  }

  /**
   * Queue destinations (`as:{id}`) of the services interested in `pdu`, an event of a hosted room
   * whose state before it is `stateBefore` (null for a create event). Costs nothing without registrations.
   */
  async destinationsFor(pdu: Pdu, roomId: string, stateBefore: ReadonlyMap<string, Pdu> | null): Promise<string[]> {
    if (!this.pushing) return [];
    const joined: string[] = [];
    const aliases: string[] = [];
    if (stateBefore) {
      joined.push(...this.localJoined(stateBefore));
      const canonical = stateBefore.get(stateField("m.room.canonical_alias", ""))?.content as { alias?: unknown; alt_aliases?: unknown } | undefined;
      if (typeof canonical?.alias === "string") aliases.push(canonical.alias);
      if (Array.isArray(canonical?.alt_aliases)) for (const a of canonical.alt_aliases) if (typeof a === "string") aliases.push(a);
    }
    if (this.aliasNamespaces) aliases.push(...(await this.d.aliasesOf(roomId)));
    return interestedServices(this.d.registry, pdu, { roomId, joinedMembers: joined, aliases }).map((r) => appserviceDestination(r.id));
  }

  /**
   * Local users joined in `state` (Synapse's member-list check also reads the room's local users
   * only: namespace users are users of this server). State versions are immutable and shared by
   * snapshots (store/state-cache.ts), so the scan runs once per state change, not per message.
   */
  private localJoined(state: ReadonlyMap<string, Pdu>): readonly string[] {
    let joined = this.joinedCache.get(state);
    if (!joined) {
      const local = `:${this.d.registry.serverName}`;
      const out: string[] = [];
      for (const ev of state.values()) {
        if (ev.type === "m.room.member" && typeof ev.state_key === "string" && ev.state_key.endsWith(local) && (ev.content as { membership?: unknown }).membership === "join")
          out.push(ev.state_key);
      }
      joined = out;
      this.joinedCache.set(state, joined);
    }
    return joined;
  }

  /** Queues an invite of a namespace user to a room hosted elsewhere; returns the destinations. */
  async queueRemoteInvite(pdu: Pdu, eventId: string, inviteRoomState: unknown[]): Promise<string[]> {
    if (!this.pushing) return [];
    const roomId = pdu.room_id as string;
    const destinations = interestedServices(this.d.registry, pdu, { roomId, joinedMembers: [], aliases: [] }).map((r) => appserviceDestination(r.id));
    if (destinations.length === 0) return [];
    const kept = { ...pdu, unsigned: { ...((pdu.unsigned as Record<string, unknown> | undefined) ?? {}), invite_room_state: inviteRoomState } };
    const { keys } = this.d;
    // Slot rule (redis-keys.ts): the room is not hosted here, so it is not in the rooms set the
    // sender's sweep walks; it is listed in the remote-outboxes set (its own slot) FIRST, so an
    // outbox entry left by a crash is always found. Then one script in the room's slot (the event
    // JSON and the outbox entry), then the fan-out stage, as for a hosted room's event.
    await this.d.redis.sadd(keys.remoteOutboxRooms(), roomId);
    await (this.d.redis as RedisWithQueue).gatehouseAppserviceQueueEvent(
      2,
      keys.event(roomId, eventId),
      keys.outbox(roomId),
      JSON.stringify(kept),
      eventId,
      destinations.join(" "),
    );
    const queued = await this.d.fanout.drain(roomId);
    this.d.wake([...queued]);
    return destinations;
  }
}
