/**
 * Random small forked rooms for state-resolution property tests: real PDUs (content hash,
 * reference-hash event IDs, v12 room IDs), auth events selected from the state before each
 * event, every event passing the auth rules against that state. Several senders on several
 * servers change the topic, name, power levels, join rules and memberships (bans, kicks,
 * unbans, invites, joins, leaves) concurrently on 2–3 branches; branches sometimes merge (the
 * state before a merge event is Gatehouse's resolution of the two). Deterministic per seed.
 */
import { checkEventAuth, selectAuthEvents, type StateLookup } from "../../src/protocol/auth/index.js";
import { computeEventId, withContentHash } from "../../src/protocol/event-hashing.js";
import type { Pdu } from "../../src/protocol/pdu.js";
import type { RoomVersion } from "../../src/protocol/room-versions.js";
import { resolveState, stateMapKey } from "../../src/protocol/state-res/index.js";

/** mulberry32: a small seeded PRNG. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const USERS = ["@alice:a.example", "@bob:b.example", "@carol:c.example", "@dave:b.example", "@eve:c.example"] as const;
const [ALICE, BOB, CAROL, DAVE] = USERS;

export interface ForkedRoom {
  seed: number;
  roomVersion: RoomVersion;
  roomId: string;
  /** Every event, in creation order (parents before children). */
  events: { eventId: string; pdu: Pdu }[];
  /** The states after each branch tip, as `stateMapKey` → event ID. */
  stateSets: Map<string, string>[];
}

interface Branch {
  tip: string;
  depth: number;
  state: Map<string, string>;
}

export async function makeForkedRoom(roomVersion: RoomVersion, seed: number): Promise<ForkedRoom> {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const rv = roomVersion;
  const events = new Map<string, Pdu>();
  const order: { eventId: string; pdu: Pdu }[] = [];
  let roomId = "!forked:a.example";
  let ts = 1_000;
  // Timestamps sometimes collide, to exercise the event-ID tie-break.
  const nextTs = () => (rnd() < 0.25 ? ts : (ts += 1 + Math.floor(rnd() * 3) * 500));

  const lookupOf = (state: Map<string, string>): StateLookup => (type, stateKey) => {
    const id = state.get(stateMapKey(type, stateKey));
    return id === undefined ? undefined : events.get(id);
  };
  const createId = () => order[0]!.eventId;

  /** Builds the event on `prev` with auth events from `state`; returns its ID if it passes the auth rules there. */
  const tryEvent = (
    prev: string[],
    depth: number,
    state: Map<string, string>,
    type: string,
    sender: string,
    content: Record<string, unknown>,
    stateKey?: string,
  ): { id: string; pdu: Pdu } | null => {
    const lookup = lookupOf(state);
    const skeleton = { type, sender, content, ...(stateKey !== undefined ? { state_key: stateKey } : {}) };
    const authEvents = type === "m.room.create" ? [] : selectAuthEvents(skeleton, lookup, rv).map(([t, s]) => state.get(stateMapKey(t, s))!);
    const base: Record<string, unknown> = {
      ...skeleton,
      auth_events: authEvents,
      prev_events: prev,
      depth,
      origin_server_ts: nextTs(),
    };
    if (!(type === "m.room.create" && rv.roomIdIsCreateEventHash)) base.room_id = roomId;
    const pdu = { ...withContentHash(base), signatures: {} } as unknown as Pdu;
    const id = computeEventId(pdu as unknown as Record<string, unknown>, rv);
    if (type !== "m.room.create") {
      const verdict = checkEventAuth(pdu, rv, lookup, { createEventId: createId() });
      if (!verdict.allowed) return null;
    }
    return { id, pdu };
  };

  const commit = (b: Branch, ev: { id: string; pdu: Pdu }) => {
    events.set(ev.id, ev.pdu);
    order.push({ eventId: ev.id, pdu: ev.pdu });
    b.tip = ev.id;
    b.depth = ev.pdu.depth;
    if (typeof ev.pdu.state_key === "string") b.state.set(stateMapKey(ev.pdu.type, ev.pdu.state_key), ev.id);
  };

  // --- a linear start: create, joins, power levels, public join rule -----------------------
  const main: Branch = { tip: "", depth: 0, state: new Map() };
  const additional = rv.privilegedCreators && rnd() < 0.3 ? [BOB] : [];
  const createContent: Record<string, unknown> = { room_version: rv.id };
  if (rv.createHasCreator) createContent.creator = ALICE;
  if (additional.length) createContent.additional_creators = additional;
  const create = tryEvent([], 1, main.state, "m.room.create", ALICE, createContent, "")!;
  commit(main, create);
  if (rv.roomIdIsCreateEventHash) roomId = `!${create.id.slice(1)}`;
  const step = (b: Branch, type: string, sender: string, content: Record<string, unknown>, stateKey?: string): boolean => {
    const ev = tryEvent([b.tip], b.depth + 1, b.state, type, sender, content, stateKey);
    if (!ev) return false;
    commit(b, ev);
    return true;
  };
  const creators = new Set<string>([ALICE, ...additional]);
  const usersMap = (levels: Record<string, number>) =>
    Object.fromEntries(Object.entries(levels).filter(([u]) => !(rv.privilegedCreators && creators.has(u))));
  const must = (ok: boolean, what: string) => {
    if (!ok) throw new Error(`forked room seed ${seed}: setup step refused: ${what}`);
  };
  must(step(main, "m.room.member", ALICE, { membership: "join" }, ALICE), "alice join");
  const levels: Record<string, number> = { [ALICE]: 100, [BOB]: pick([50, 100]), [CAROL]: pick([0, 50, 75]) };
  must(step(main, "m.room.power_levels", ALICE, { users: usersMap(levels), users_default: 0, state_default: 50, ban: 50, kick: 50, invite: 0, events: {} }, ""), "power levels");
  must(step(main, "m.room.join_rules", ALICE, { join_rule: "public" }, ""), "join rules");
  for (const u of [BOB, CAROL, DAVE]) must(step(main, "m.room.member", u, { membership: "join" }, u), `${u} join`);

  // --- the fork -----------------------------------------------------------------------------
  const branches: Branch[] = [];
  const nBranches = 2 + Math.floor(rnd() * 2);
  for (let i = 0; i < nBranches; i++) branches.push({ tip: main.tip, depth: main.depth, state: new Map(main.state) });

  const memberOf = (b: Branch, u: string) => {
    const id = b.state.get(stateMapKey("m.room.member", u));
    return (id && (events.get(id)!.content as { membership?: string }).membership) || "leave";
  };
  const plContent = (b: Branch) => {
    const id = b.state.get(stateMapKey("m.room.power_levels", ""));
    return structuredClone((id ? events.get(id)!.content : {}) as Record<string, unknown>);
  };

  /** A random action on `b` by `sender`: the candidate event (it may fail the auth rules). */
  const randomAction = (b: Branch, sender: string): [string, Record<string, unknown>, string | undefined] => {
    const target = pick(USERS);
    const r = rnd();
    if (r < 0.22) return ["m.room.topic", { topic: `topic ${Math.floor(rnd() * 1000)} by ${sender}` }, ""];
    if (r < 0.3) return ["m.room.name", { name: `name ${Math.floor(rnd() * 1000)}` }, ""];
    if (r < 0.48) {
      const pl = plContent(b);
      const users = { ...(pl.users as Record<string, number>) };
      const what = rnd();
      if (what < 0.6) users[target] = pick([0, 50, 100]);
      else if (what < 0.8) pl.ban = pick([50, 100]);
      else pl.events = { "m.room.topic": pick([0, 50, 100]) };
      pl.users = usersMap(users);
      return ["m.room.power_levels", pl, ""];
    }
    if (r < 0.56) return ["m.room.join_rules", { join_rule: pick(["public", "invite"]) }, ""];
    if (r < 0.68) return ["m.room.member", { membership: "ban" }, target];
    if (r < 0.76) return ["m.room.member", { membership: "leave" }, target]; // kick, unban or leave
    if (r < 0.84) return ["m.room.member", { membership: "invite" }, target];
    if (r < 0.94) return ["m.room.member", { membership: "join" }, sender];
    return ["m.room.member", { membership: "leave" }, sender];
  };

  const randomStep = (b: Branch): boolean => {
    // Joined users act; joins come from anyone. Up to 6 tries to find an allowed action.
    for (let t = 0; t < 6; t++) {
      const joined = USERS.filter((u) => memberOf(b, u) === "join");
      const sender = rnd() < 0.85 && joined.length ? pick(joined) : pick(USERS);
      const [type, content, stateKey] = randomAction(b, sender);
      if (step(b, type, sender, content, stateKey)) return true;
    }
    return false;
  };
  const take = () => branches.splice(Math.floor(rnd() * branches.length), 1)[0]!;

  const nSteps = 6 + Math.floor(rnd() * 9);
  for (let n = 0; n < nSteps; n++) {
    const r = rnd();
    if (branches.length >= 2 && r < 0.25) {
      // Merge two branches: the state before the merge event is the resolution of both. Half
      // the time the second branch lives on (a server that has not seen the first one).
      const a = take();
      const b = take();
      const merged = await resolveState({
        roomVersion: rv,
        roomId,
        stateSets: [a.state, b.state],
        fetchEvents: (ids) => new Map(ids.filter((id) => events.has(id)).map((id) => [id, events.get(id)!] as const)),
      });
      const m: Branch = { tip: "", depth: Math.max(a.depth, b.depth), state: merged };
      const speakers = USERS.filter((u) => memberOf(m, u) === "join");
      const sender = speakers.length ? pick(speakers) : ALICE;
      const ev =
        (rnd() < 0.5 ? tryEvent([a.tip, b.tip], m.depth + 1, merged, "m.room.topic", sender, { topic: `merge by ${sender}` }, "") : null) ??
        tryEvent([a.tip, b.tip], m.depth + 1, merged, "m.room.message", sender, { body: "merge", msgtype: "m.text" });
      if (ev) {
        commit(m, ev);
        branches.push(m);
        if (rnd() < 0.5) branches.push(b);
      } else {
        branches.push(a, b); // nobody may speak in the merged state: no merge
      }
      continue;
    }
    if (branches.length < 4 && r < 0.35) {
      // Another server forks off a branch's tip.
      const b = pick(branches);
      branches.push({ tip: b.tip, depth: b.depth, state: new Map(b.state) });
      continue;
    }
    randomStep(pick(branches));
  }
  if (branches.length < 2) {
    const b = branches[0]!;
    const c = { tip: b.tip, depth: b.depth, state: new Map(b.state) };
    branches.push(c);
    randomStep(c);
  }
  return { seed, roomVersion: rv, roomId, events: order, stateSets: branches.map((b) => b.state) };
}
