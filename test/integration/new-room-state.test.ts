// A room created through the admin API is written by one script (persist-new-room.lua, issue 12)
// and must still get what persisting its events one by one writes (issue 14): state groups,
// the groups before/after each event, the room's current state group, the group counter. Each
// case creates a room, then persists the same signed events one by one through RoomService's
// persist path into a second Gatehouse (same server name, own key prefix, same Redis), and
// compares every key of the room, state at each event with a linear replay of the timeline,
// history visibility, and a redaction and a further event on top of both.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, ADMIN, enc, dumpPrefix } from "../support/gatehouse.js";
import { stateField } from "../../src/store/room-store.js";
import type { Pdu } from "../../src/protocol/pdu.js";

let t: TestGatehouse;
let ref: TestGatehouse;
before(async () => {
  [t, ref] = await Promise.all([TestGatehouse.start({ name: "new-room-state" }), TestGatehouse.start({ name: "new-room-state-ref" })]);
});
after(async () => {
  await Promise.all([t.cleanup(), ref.cleanup()]);
});

/** Every key of `roomId` in `g`'s prefix (and its entries in the global hashes), with the prefix cut off. */
async function roomKeys(g: TestGatehouse, roomId: string, eventIds: readonly string[]): Promise<Record<string, unknown>> {
  const all = await dumpPrefix(g.redis, g.prefix);
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(all)) {
    const rest = key.slice(g.prefix.length + 1);
    if (rest.includes(roomId)) out[rest] = value;
  }
  const eventRooms = (all[`${g.prefix}:event-rooms`] ?? {}) as Record<string, string>;
  out["event-rooms (this room's events)"] = Object.fromEntries(eventIds.map((id) => [id, eventRooms[id]]));
  out["rooms has it"] = ((all[`${g.prefix}:rooms`] ?? []) as string[]).includes(roomId);
  return out;
}

/** Persists `events` one by one through the persist path RoomService uses for every other event. */
async function persistOneByOne(g: TestGatehouse, roomId: string, events: readonly { eventId: string; pdu: Pdu }[], createdTs: number) {
  const [create, ...rest] = events;
  const content = create!.pdu.content as { room_version: string };
  assert.equal(await g.gh.rooms.persistCreateEvent(roomId, create!.eventId, create!.pdu, { version: content.room_version, creator: create!.pdu.sender, createdTs }), "persisted");
  for (const e of rest) {
    const r = await g.gh.rooms.persistEvent(roomId, e.eventId, e.pdu, { origin: null, rejectIfSoftFailed: true });
    assert.equal(r.outcome, "persisted", e.eventId);
  }
}

/** State before/after each event by replaying the timeline (every event of a new room is accepted). */
function linearStates(events: readonly { eventId: string; pdu: Pdu }[]) {
  const out = new Map<string, { before: Map<string, string>; after: Map<string, string> }>();
  let state = new Map<string, string>();
  for (const { eventId, pdu } of events) {
    const before = state;
    if (typeof pdu.state_key === "string") state = new Map(state).set(stateField(pdu.type, pdu.state_key), eventId);
    out.set(eventId, { before, after: state });
  }
  return out;
}

const manyState = Array.from({ length: 60 }, (_, i) => ({ type: "org.example.many", state_key: `k${i}`, content: { i } }));

const cases: { why: string; body: Record<string, unknown> }[] = [
  {
    why: "v12 with an alias, a local invite and initial_state: every step of createRoom",
    body: {
      room_version: "12",
      room_alias_name: "nrs-v12",
      name: "N",
      topic: "T",
      invite: ["@bob:gatehouse.test"],
      initial_state: [
        { type: "m.room.history_visibility", content: { history_visibility: "invited" } },
        { type: "org.example.s", state_key: "x", content: { a: 1 } },
      ],
    },
  },
  { why: "v10: room ID not derived from the create event, create event in auth_events", body: { room_version: "10", preset: "public_chat", topic: "ten" } },
  {
    why: "60 initial state events: the group chain passes MAX_STATE_GROUP_DEPTH (50) and a group is stored whole again",
    body: { room_version: "12", initial_state: manyState },
  },
];

describe("a room written at once has the state groups of a room written event by event", () => {
  for (const c of cases) {
    test(c.why, async () => {
      const roomId = await t.createRoom(c.body);
      const timeline = await t.store.timeline(roomId);
      const ids = timeline.map((e) => e.eventId);
      const pdus = await t.store.getEvents(roomId, ids);
      const events = ids.map((eventId) => ({ eventId, pdu: pdus.get(eventId)! }));
      assert.ok(events.length >= 6, `${events.length} events`);

      // (a) every initial event has its state groups, and the room its current group.
      const groups = await t.store.eventStateGroups(roomId, ids);
      assert.deepEqual(ids.filter((id) => !groups.has(id)), [], "events without state groups");
      const room = (await t.store.getRoom(roomId))!;
      assert.ok(room.stateGroup, "the room has a current state group");
      assert.equal(room.stateGroup, groups.get(ids.at(-1)!)!.after, "the current state is the state after the last event");

      // (b) state at each event: a linear replay, and what the one-by-one persist path gives.
      await persistOneByOne(ref, roomId, events, room.createdTs);
      if (c.body.room_alias_name) await ref.store.setAlias(`#${String(c.body.room_alias_name)}:${t.serverName}`, roomId);
      const linear = linearStates(events);
      for (const id of ids) {
        for (const at of ["before", "after"] as const) {
          const mine = await t.store.stateAt(roomId, id, at);
          assert.deepEqual(mine, linear.get(id)![at], `state ${at} ${pdus.get(id)!.type} ${id}`);
          assert.deepEqual(mine, await ref.store.stateAt(roomId, id, at), `one by one: state ${at} ${id}`);
        }
      }
      // Every key of the room, byte for byte: groups, event state, current state, members, counter.
      assert.deepEqual(await roomKeys(t, roomId, ids), await roomKeys(ref, roomId, ids));
      if (c.body.initial_state === manyState) {
        const stored = await t.redis.hgetall(t.gh.keys.stateGroups(roomId));
        const whole = Object.values(stored).filter((j) => (JSON.parse(j) as { p: unknown }).p === null);
        assert.ok(whole.length >= 2, "the create event's group and a later whole group");
      }

      // History visibility at the initial events, as for the room written one by one.
      const bob = t.local("bob");
      for (const user of [t.creator, bob]) {
        const mine = await t.gh.history.visibleEventsForUser(roomId, user, events);
        const theirs = await ref.gh.history.visibleEventsForUser(roomId, user, events);
        assert.deepEqual(mine.map((e) => e.eventId), theirs.map((e) => e.eventId), `visible to ${user}`);
        if (user === bob && c.body.invite) {
          // history_visibility "invited": bob sees from his invite (the last event) on.
          assert.deepEqual(mine.map((e) => e.eventId), [ids.at(-1)], "bob sees his invite only");
        }
      }

      // Building on the room: the next event gets the next group, exactly as one by one.
      const topicId = (await t.admin.put(`${ADMIN}/rooms/${enc(roomId)}/state/m.room.topic/`).send({ content: { topic: "later" } })).body.event_id as string;
      const red = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/redact/${enc(topicId)}`).send({ reason: "r" });
      assert.equal(red.status, 200, JSON.stringify(red.body));
      const redactionId = red.body.event_id as string;
      const more = await t.store.getEvents(roomId, [topicId, redactionId]);
      for (const id of [topicId, redactionId]) {
        const r = await ref.gh.rooms.persistEvent(roomId, id, more.get(id)!, { origin: null, rejectIfSoftFailed: true });
        assert.equal(r.outcome, "persisted");
      }
      assert.deepEqual(await t.store.redactionsOf(roomId, [topicId]), new Map([[topicId, [{ redactionId, senderHasRedactLevel: true }]]]));
      assert.deepEqual(await roomKeys(t, roomId, [...ids, topicId, redactionId]), await roomKeys(ref, roomId, [...ids, topicId, redactionId]));
      const served = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/events/${enc(topicId)}`);
      assert.equal(served.status, 200);
      assert.deepEqual(served.body.content, {}, "the redacted topic is served redacted");
      assert.equal(served.body.unsigned?.redacted_because?.event_id, redactionId);
      // An initial event can be redacted too.
      const nameOrTopic = events.find((e) => e.pdu.type === "m.room.name" || e.pdu.type === "m.room.topic");
      if (nameOrTopic) {
        const r2 = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/redact/${enc(nameOrTopic.eventId)}`).send({});
        assert.equal(r2.status, 200, JSON.stringify(r2.body));
        const s2 = await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}/events/${enc(nameOrTopic.eventId)}`);
        assert.deepEqual(s2.body.content, {});
        assert.equal(s2.body.unsigned?.redacted_because?.event_id, r2.body.event_id);
      }
    });
  }
});
