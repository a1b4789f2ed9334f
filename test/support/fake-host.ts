/**
 * A room hosted by fake remote servers (test/support/remote-server.ts) for the HTTP tests of rooms
 * hosted elsewhere: events signed by the sender's server, and the answers a resident gives
 * (make_join, v2 send_join, get_missing_events, /backfill, /state_ids, /state, /event).
 */
import { RemoteServer, roomVersion } from "./remote-server.js";
import { selectAuthEvents } from "../../src/protocol/auth/index.js";
import { stateField, authEventIds } from "../../src/store/room-store.js";
import type { Pdu } from "../../src/protocol/pdu.js";

export type Answer = { state: Pdu[]; auth_chain: Pdu[]; event?: Pdu; members_omitted?: boolean };

/** A room hosted by fake remote servers: events signed by the sender's server, answers to make_join/send_join/get_missing_events. */
export class FakeHost {
  readonly events = new Map<string, Pdu>();
  /** The state before each event (for /state_ids). */
  readonly stateBefore = new Map<string, Map<string, string>>();
  readonly state = new Map<string, string>();
  roomId = "";
  tip = "";
  depth = 0;
  /** Changes the send_join answer (refusal cases). */
  mutate: ((a: Answer) => Answer) | null = null;
  /** make_join's room_version (default: the room's). */
  makeJoinVersion: string | null = null;
  /** get_missing_events bodies received. */
  readonly missingRequests: unknown[] = [];
  /** When true, get_missing_events answers with no events (a server that cannot fill the gap). */
  withholdMissing = false;
  /** /backfill requests answered. */
  backfills = 0;
  /** Answers tried before the defaults (hostile or silent servers); null falls through. */
  override: ((req: { method: string; url: string; body: unknown }) => [number, unknown] | null) | null = null;
  /** Federation requests answered, method and path (without the query). */
  readonly asked: string[] = [];

  constructor(
    readonly servers: RemoteServer[],
    readonly versionId: string,
  ) {}

  get host(): RemoteServer {
    return this.servers[0]!;
  }

  user(localpart: string, server = this.host): string {
    return `@${localpart}:${server.serverName}`;
  }

  /** Builds an event on `prev` (default: the tip) with auth events from current state; `apply` false keeps it out of the graph. */
  build(type: string, sender: string, content: Record<string, unknown>, stateKey?: string, opts: { prev?: string[]; apply?: boolean } = {}): { eventId: string; pdu: Pdu } {
    const version = roomVersion(this.versionId);
    const lookup = (t: string, k: string) => this.events.get(this.state.get(stateField(t, k)) ?? "");
    const skeleton = { type, sender, content, ...(stateKey !== undefined ? { state_key: stateKey } : {}) };
    const auth = type === "m.room.create" ? [] : selectAuthEvents(skeleton, lookup, version).map(([t, k]) => this.state.get(stateField(t, k))!).filter(Boolean);
    const server = this.servers.find((s) => sender.endsWith(`:${s.serverName}`))!;
    const template: Record<string, unknown> = {
      ...skeleton,
      prev_events: opts.prev ?? (this.tip ? [this.tip] : []),
      auth_events: auth,
      depth: this.depth + 1,
      origin_server_ts: Date.now(),
    };
    if (!(type === "m.room.create" && version.roomIdIsCreateEventHash)) template.room_id = this.roomId || `!host${Math.random().toString(36).slice(2, 10)}:${this.host.serverName}`;
    const built = server.signEvent(template, this.versionId);
    if (type === "m.room.create") this.roomId = version.roomIdIsCreateEventHash ? `!${built.eventId.slice(1)}` : (template.room_id as string);
    if (opts.apply !== false) this.apply(built.eventId, built.pdu);
    else this.events.set(built.eventId, built.pdu);
    return built;
  }

  apply(eventId: string, pdu: Pdu): void {
    this.stateBefore.set(eventId, new Map(this.state));
    this.events.set(eventId, pdu);
    this.tip = eventId;
    this.depth = Math.max(this.depth, pdu.depth);
    if (typeof pdu.state_key === "string") this.state.set(stateField(pdu.type, pdu.state_key), eventId);
  }

  /** create, alice's join, power levels, public join rule, bob (second server) joined. */
  static async room(servers: RemoteServer[], versionId: string): Promise<FakeHost> {
    const h = new FakeHost(servers, versionId);
    const alice = h.user("alice");
    const content: Record<string, unknown> = { room_version: versionId };
    if (!roomVersion(versionId).roomIdIsCreateEventHash) content.creator = alice;
    h.build("m.room.create", alice, content, "");
    h.build("m.room.member", alice, { membership: "join" }, alice);
    h.build("m.room.power_levels", alice, { users: roomVersion(versionId).privilegedCreators ? {} : { [alice]: 100 }, state_default: 50, events_default: 0, invite: 0 }, "");
    h.build("m.room.join_rules", alice, { join_rule: "public" }, "");
    const bob = h.user("bob", servers[1]);
    h.build("m.room.member", bob, { membership: "join" }, bob);
    h.serve();
    return h;
  }

  /** Makes its servers answer for this room (before their own defaults). */
  serve(): void {
    for (const s of this.servers) s.extraRoutes = (req) => this.answer(req);
  }

  /** A fake copy of a room Gatehouse hosts, from its timeline (linear), to answer for `servers`. */
  static mirror(servers: RemoteServer[], versionId: string, roomId: string, events: { eventId: string; pdu: Pdu }[]): FakeHost {
    const h = new FakeHost(servers, versionId);
    h.roomId = roomId;
    for (const e of events) h.apply(e.eventId, e.pdu);
    h.serve();
    return h;
  }

  authChain(ids: Iterable<string>): Pdu[] {
    const seen = new Map<string, Pdu>();
    const todo = [...ids];
    while (todo.length > 0) {
      const ev = this.events.get(todo.pop()!)!;
      for (const a of authEventIds(ev)) if (!seen.has(a)) {
        seen.set(a, this.events.get(a)!);
        todo.push(a);
      }
    }
    return [...seen.values()];
  }

  /** The ID of a stored event. */
  idOf(pdu: Pdu): string {
    return [...this.events].find(([, x]) => x === pdu)![0];
  }

  private answer(req: { method: string; url: string; body: unknown }): [number, unknown] | null {
    const path = req.url.split("?")[0]!;
    this.asked.push(`${req.method} ${path}`);
    const overridden = this.override?.(req);
    if (overridden) return overridden;
    if (req.method === "GET" && path.startsWith("/_matrix/federation/v1/make_join/")) {
      const userId = decodeURIComponent(path.split("/").pop()!);
      const lookup = (t: string, k: string) => this.events.get(this.state.get(stateField(t, k)) ?? "");
      const skeleton = { type: "m.room.member", sender: userId, state_key: userId, content: { membership: "join" } };
      const auth = selectAuthEvents(skeleton, lookup, roomVersion(this.versionId)).map(([t, k]) => this.state.get(stateField(t, k))).filter(Boolean);
      return [200, { room_version: this.makeJoinVersion ?? this.versionId, event: { ...skeleton, room_id: this.roomId, prev_events: [this.tip], auth_events: auth, depth: this.depth + 1, origin_server_ts: Date.now() } }];
    }
    if (req.method === "PUT" && path.startsWith("/_matrix/federation/v2/send_join/")) {
      const eventId = decodeURIComponent(path.split("/").pop()!);
      const stateIds = [...this.state.values()];
      let answer: Answer = { state: stateIds.map((id) => this.events.get(id)!), auth_chain: this.authChain([...stateIds, ...authEventIds(req.body as Pdu)]) };
      if (this.mutate) answer = this.mutate(answer);
      else this.apply(eventId, req.body as Pdu);
      return [200, answer];
    }
    if (req.method === "POST" && path.startsWith("/_matrix/federation/v1/get_missing_events/")) {
      this.missingRequests.push(req.body);
      const b = req.body as { earliest_events: string[]; latest_events: string[]; limit: number };
      const out: Pdu[] = [];
      if (this.withholdMissing) return [200, { events: out }];
      const seen = new Set(b.earliest_events);
      let frontier = b.latest_events.flatMap((id) => (this.events.get(id)?.prev_events as string[]) ?? []);
      while (frontier.length > 0 && out.length < b.limit) {
        const id = frontier.shift()!;
        if (seen.has(id) || !this.events.has(id)) continue;
        seen.add(id);
        out.push(this.events.get(id)!);
        frontier.push(...(this.events.get(id)!.prev_events as string[]));
      }
      return [200, { events: out }];
    }
    if (req.method === "PUT" && path.startsWith("/_matrix/federation/v1/send/")) return [200, { pdus: {} }];
    const query = new URLSearchParams(req.url.split("?")[1] ?? "");
    if (req.method === "GET" && path.startsWith("/_matrix/federation/v1/backfill/")) {
      // From the `v` events back through prev_events, breadth first, `limit` events (v included, as Synapse).
      const out: Pdu[] = [];
      const seen = new Set<string>();
      const frontier = query.getAll("v");
      while (frontier.length > 0 && out.length < Number(query.get("limit"))) {
        const id = frontier.shift()!;
        if (seen.has(id) || !this.events.has(id)) continue;
        seen.add(id);
        out.push(this.events.get(id)!);
        frontier.push(...(this.events.get(id)!.prev_events as string[]));
      }
      this.backfills++;
      return [200, { origin: this.host.serverName, origin_server_ts: Date.now(), pdus: out }];
    }
    if (req.method === "GET" && path.startsWith("/_matrix/federation/v1/state_ids/")) {
      const before = this.stateBefore.get(query.get("event_id") ?? "");
      if (!before) return [404, { errcode: "M_NOT_FOUND", error: "unknown event" }];
      return [200, { pdu_ids: [...before.values()], auth_chain_ids: this.authChain(before.values()).map((e) => this.idOf(e)) }];
    }
    if (req.method === "GET" && path.startsWith("/_matrix/federation/v1/state/")) {
      const before = this.stateBefore.get(query.get("event_id") ?? "");
      if (!before) return [404, { errcode: "M_NOT_FOUND", error: "unknown event" }];
      return [200, { pdus: [...before.values()].map((id) => this.events.get(id)!), auth_chain: this.authChain(before.values()) }];
    }
    if (req.method === "GET" && path.startsWith("/_matrix/federation/v1/event/")) {
      const ev = this.events.get(decodeURIComponent(path.split("/").pop()!));
      return ev ? [200, { origin: this.host.serverName, origin_server_ts: Date.now(), pdus: [ev] }] : [404, { errcode: "M_NOT_FOUND", error: "no such event" }];
    }
    return null;
  }
}
