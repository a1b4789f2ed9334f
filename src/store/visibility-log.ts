/**
 * The state history visibility needs, at any event of a hosted room: the `m.room.history_visibility`
 * value and the memberships, as they were after each event.
 *
 * Gatehouse linearises its rooms: the state after the event at stream position S is the accepted
 * state events at positions ≤ S applied in order (what RoomStore.stateAt replays). Replaying the
 * whole timeline for every read would read every event of the room each time, so each process
 * keeps, per room, the log of accepted `m.room.history_visibility` and `m.room.member` events
 * (position, state key, value), brought up to date by the timeline delta since the last read, as
 * the state cache does (state-cache.ts). A read costs two round trips (the delta's IDs, then their
 * statuses and events; auto-pipelined), and the first read of a room in a process reads its events
 * once. Statuses are written in the same script as the timeline entry and never change, so a
 * position once read stays valid; a Redis that lost data (the event at the cached position is not
 * the same) drops the entry.
 *
 * When state at events comes from state groups (state resolution, issue 14 deliverable 3), this
 * log should be replaced by a read of those groups filtered to these two event types.
 */
import type { Redis } from "ioredis";
import type { RedisKeys } from "./redis-keys.js";
import { Lru } from "./state-cache.js";
import { historyVisibilityOf, membershipOfContent, type HistoryVisibility, type Membership } from "../protocol/visibility.js";

export interface VisibilityLogEntry {
  stream: number;
  /** "" for m.room.history_visibility, the user ID for m.room.member. */
  stateKey: string;
  kind: "visibility" | "member";
  visibility?: HistoryVisibility;
  membership?: Membership | undefined;
}

interface RoomLog {
  /** Last timeline position read. */
  stream: number;
  /** Event ID at `stream` ("" before any event): detects a Redis that lost or rewrote history. */
  lastEventId: string;
  entries: VisibilityLogEntry[];
}

const MEMBER_TYPE = '"type":"m.room.member"';
const VISIBILITY_TYPE = '"type":"m.room.history_visibility"';

/** How many timeline entries one read fetches per batch of events. */
const BATCH = 500;

export class VisibilityLog {
  private readonly rooms = new Lru<string, RoomLog>(256);
  private readonly updating = new Map<string, Promise<unknown>>();

  constructor(
    private readonly redis: Redis,
    private readonly keys: RedisKeys,
  ) {}

  /**
   * The room's log up to its latest timeline position (entries in stream order), and that position.
   * Updates of one room run one after another, so that entries are appended once.
   */
  async entries(roomId: string): Promise<{ entries: readonly VisibilityLogEntry[]; stream: number }> {
    const previous = this.updating.get(roomId) ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(() => this.update(roomId));
    this.updating.set(roomId, run);
    try {
      return await run;
    } finally {
      if (this.updating.get(roomId) === run) this.updating.delete(roomId);
    }
  }

  private async update(roomId: string): Promise<{ entries: readonly VisibilityLogEntry[]; stream: number }> {
    const timeline = this.keys.timeline(roomId);
    const range = (after: number) => this.redis.zrangebyscore(timeline, `(${after}`, "+inf", "WITHSCORES", "LIMIT", 0, BATCH);
    let log = this.rooms.get(roomId);
    let first: string[] | null = null;
    if (log && log.stream > 0) {
      // The check and the delta in one round trip (the connection is auto-pipelined).
      const [at, delta] = await Promise.all([this.redis.zrangebyscore(timeline, log.stream, log.stream), range(log.stream)]);
      if (at[0] === log.lastEventId) first = delta;
      else log = undefined;
    }
    // Entries are appended in place: a reader's sweep only applies entries up to the positions it
    // asks about, so later entries never change its answer (and updates are serialised per room).
    const next: RoomLog = log ?? { stream: 0, lastEventId: "", entries: [] };
    for (;;) {
      const flat = first ?? (await range(next.stream));
      first = null;
      if (flat.length === 0) break;
      const ids: string[] = [];
      const streams: number[] = [];
      for (let i = 0; i < flat.length; i += 2) {
        ids.push(flat[i]!);
        streams.push(Number(flat[i + 1]));
      }
      // The stored JSON, read here rather than through the store's event cache: a first read of a
      // large room would otherwise parse every message and evict the cache's hot events. Only
      // events whose text names one of the two types are parsed (JSON.stringify writes the
      // top-level `"type":"…"` pair literally; a match inside content is ruled out by the parse).
      const [statuses, texts] = await Promise.all([
        this.redis.hmget(this.keys.eventStatus(roomId), ...ids),
        this.redis.mget(...ids.map((id) => this.keys.event(roomId, id))),
      ]);
      // A batch is applied whole (entries and position together), or not at all.
      const batch: VisibilityLogEntry[] = [];
      ids.forEach((_, i) => {
        const text = texts[i];
        if (statuses[i] || !text) return; // rejected / soft-failed / outlier: not in state
        if (!text.includes(MEMBER_TYPE) && !text.includes(VISIBILITY_TYPE)) return;
        const ev = JSON.parse(text) as { type?: unknown; state_key?: unknown; content?: unknown };
        if (typeof ev.state_key !== "string") return;
        if (ev.type === "m.room.history_visibility" && ev.state_key === "") {
          batch.push({ stream: streams[i]!, stateKey: "", kind: "visibility", visibility: historyVisibilityOf(ev.content) });
        } else if (ev.type === "m.room.member") {
          batch.push({ stream: streams[i]!, stateKey: ev.state_key, kind: "member", membership: membershipOfContent(ev.content) });
        }
      });
      for (const e of batch) next.entries.push(e);
      next.stream = streams[streams.length - 1]!;
      next.lastEventId = ids[ids.length - 1]!;
      if (ids.length < BATCH) break;
    }
    this.rooms.set(roomId, next);
    return { entries: next.entries, stream: next.stream };
  }
}
