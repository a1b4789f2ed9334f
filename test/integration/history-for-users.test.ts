// The client API's use case RoomHistory.visibleEventsForUser (issue 14: /messages, /event and
// /context call it), on real Redis: which events of a room's timeline a user may see under each
// history visibility as they are invited, join, leave and join again; redactions applied.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, ADMIN, enc } from "../support/gatehouse.js";
import type { HistoryVisibility } from "../../src/protocol/visibility.js";

let t: TestGatehouse;
before(async () => {
  t = await TestGatehouse.start({ name: "history-users" });
});
after(async () => {
  await t.cleanup();
});

async function ok(method: "post" | "put", path: string, body: Record<string, unknown>): Promise<string> {
  const res = await t.admin[method](`${ADMIN}${path}`).send(body);
  assert.equal(res.status, 200, `${path}: ${JSON.stringify(res.body)}`);
  return res.body.event_id as string;
}

/** Builds a room step by step; `ids` names each event. */
async function room(visibility: HistoryVisibility) {
  const roomId = await t.createRoom({ room_version: "12", initial_state: [{ type: "m.room.history_visibility", content: { history_visibility: visibility } }] });
  const r = `/rooms/${enc(roomId)}`;
  const ids: Record<string, string> = {};
  const bob = t.local(`bob${visibility.replace("_", "")}`);
  const step = {
    send: async (name: string) => (ids[name] = await ok("post", `${r}/send/m.room.message`, { content: { msgtype: "m.text", body: name } })),
    invite: async (name: string) => (ids[name] = await ok("post", `${r}/invite`, { user_id: bob })),
    join: async (name: string) => (ids[name] = await ok("post", `${r}/join`, { user_id: bob })),
    leave: async (name: string) => (ids[name] = await ok("post", `${r}/leave`, { user_id: bob })),
    visibility: async (name: string, v: HistoryVisibility) => (ids[name] = await ok("put", `${r}/state/m.room.history_visibility/`, { content: { history_visibility: v } })),
    redact: async (name: string, target: string) => (ids[name] = await ok("post", `${r}/redact/${enc(ids[target]!)}`, {})),
  };
  /** The names of the events `userId` may see, in timeline order (events created by createRoom are left out). */
  const visible = async (userId: string) => {
    const timeline = await t.store.timeline(roomId);
    const events = await t.store.getEvents(roomId, timeline.map((e) => e.eventId));
    const served = await t.gh.history.visibleEventsForUser(roomId, userId, timeline.map((e) => ({ eventId: e.eventId, pdu: events.get(e.eventId)! })));
    const names = new Map(Object.entries(ids).map(([n, id]) => [id, n]));
    return served.flatMap((e) => (names.has(e.eventId) ? [names.get(e.eventId)!] : []));
  };
  /**
   * Runs `fn` as if the room's events had been stored before state groups existed (no entry in
   * `{roomId}:event-state`), then puts the entries back.
   */
  const withoutStateGroups = async <T>(fn: () => Promise<T>): Promise<T> => {
    const key = t.gh.keys.eventState(roomId);
    const saved = await t.redis.hgetall(key);
    await t.redis.del(key);
    try {
      return await fn();
    } finally {
      if (Object.keys(saved).length > 0) await t.redis.hset(key, saved);
    }
  };
  return { roomId, bob, step, visible, ids, withoutStateGroups };
}

describe("visibleEventsForUser", () => {
  test("joined: from the user's join to their leave (their own join and leave included)", async () => {
    const { bob, step, visible } = await room("joined");
    await step.send("m1");
    await step.invite("invite");
    await step.send("m2");
    await step.join("join");
    await step.send("m3");
    await step.leave("leave");
    await step.send("m4");
    assert.deepEqual(await visible(bob), ["join", "m3", "leave"]);
    assert.deepEqual(await visible(t.local("never")), [], "a user who never joined sees nothing");
  });

  // Events stored before state groups existed have none: the timeline is replayed instead, and
  // gives the same answers for a room Gatehouse linearised.
  const scripts: [HistoryVisibility, string[], string][] = [
    ["joined", ["join", "m3", "leave"], "from the join to the leave"],
    ["invited", ["invite", "m2", "join", "m3", "leave"], "from the invite on"],
    ["shared", ["m1", "invite", "m2", "join", "m3", "leave"], "up to the last join, and while joined"],
    ["world_readable", ["m1", "invite", "m2", "join", "m3", "leave", "to-joined"], "everything up to the change to joined (seen: before allows), not m4 (joined, bob left)"],
  ];
  for (const [visibility, expected, why] of scripts) {
    test(`${visibility}, events without state groups: the replay fallback gives what the groups give (${why})`, async () => {
      const { bob, step, visible, withoutStateGroups } = await room(visibility);
      await step.send("m1");
      await step.invite("invite");
      await step.send("m2");
      await step.join("join");
      await step.send("m3");
      await step.leave("leave");
      await step.visibility("to-joined", "joined");
      await step.send("m4");
      const withGroups = await visible(bob);
      assert.deepEqual(withGroups, expected);
      assert.deepEqual(await withoutStateGroups(() => visible(bob)), withGroups);
      assert.deepEqual(await withoutStateGroups(() => visible(t.local("never"))), await visible(t.local("never")), "a user with no membership");
    });
  }

  test("invited: from the invite on", async () => {
    const { bob, step, visible } = await room("invited");
    await step.send("m1");
    await step.invite("invite");
    await step.send("m2");
    await step.join("join");
    await step.send("m3");
    assert.deepEqual(await visible(bob), ["invite", "m2", "join", "m3"]);
  });

  test("shared: everything up to the user's last join and while joined; after a leave only once they join again", async () => {
    const { bob, step, visible } = await room("shared");
    await step.send("m1");
    await step.invite("invite");
    await step.join("join");
    await step.send("m2");
    await step.leave("leave");
    await step.send("m3");
    assert.deepEqual(await visible(bob), ["m1", "invite", "join", "m2", "leave"], "m3 was sent after bob left for good");
    await step.invite("invite2");
    await step.join("join2");
    assert.deepEqual(await visible(bob), ["m1", "invite", "join", "m2", "leave", "m3", "invite2", "join2"], "joined again: m3 is shared history now");
    assert.deepEqual(await visible(t.local("never")), [], "shared is not readable without joining");
  });

  test("world_readable: anyone, and a change of visibility applies from the event on (the change itself is seen if before or after allows)", async () => {
    const { step, visible } = await room("world_readable");
    await step.send("m1");
    await step.visibility("to-joined", "joined");
    await step.send("m2");
    await step.visibility("to-readable", "world_readable");
    await step.send("m3");
    assert.deepEqual(await visible(t.local("anyone")), ["m1", "to-joined", "to-readable", "m3"]);
  });

  test("redactions are applied to what the user sees, with the redaction event", async () => {
    const { roomId, bob, step, visible, ids } = await room("shared");
    await step.invite("invite");
    await step.join("join");
    await step.send("m1");
    await step.redact("r1", "m1");
    assert.deepEqual(await visible(bob), ["invite", "join", "m1", "r1"]);
    const m1 = (await t.store.getEvent(roomId, ids.m1!))!;
    const [served] = await t.gh.history.visibleEventsForUser(roomId, bob, [{ eventId: ids.m1!, pdu: m1 }]);
    assert.deepEqual(served!.pdu.content, {});
    assert.equal(served!.redactedBy?.eventId, ids.r1);
  });
});
