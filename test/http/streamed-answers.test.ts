// send_join (full), /state, /state_ids and /event_auth send their answers in chunks
// (http/json-stream.ts): the events are read from Redis 500 at a time and sent as stored, redacted copies where a redaction applies
// (RoomStore.servedEventJson). What a peer parses must be what the whole-object answer was:
// here each answer is compared, parsed, with one built the way the answers were built before
// (every event read, redactions applied, the auth chain walked from Redis), in v10 and v12 rooms
// holding a redacted state event and a redacted event only the auth chain serves. Errors before
// the first byte keep the spec's status and errcode; an error after it aborts the connection.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { TestGatehouse, FED, ADMIN, enc } from "../support/gatehouse.js";
import { RemoteServer, roomVersion } from "../support/remote-server.js";
import { computeEventId } from "../../src/protocol/event-hashing.js";
import { redactEvent } from "../../src/protocol/redaction.js";
import type { Pdu } from "../../src/protocol/pdu.js";
import { applyRedactions } from "../../src/rooms/redactions.js";
import { jsonObjectChunks, jsonStringBatches } from "../../src/rooms/json-chunks.js";
import { authEventIds, stateField } from "../../src/store/room-store.js";

let t: TestGatehouse;
let a: RemoteServer;
let joiner: RemoteServer;
let n = 0;
const fresh = (server: RemoteServer) => server.userId(`s${++n}`);

before(async () => {
  t = await TestGatehouse.start({ name: "streamed" });
  [a, joiner] = await Promise.all([RemoteServer.start(), RemoteServer.start()]);
});
after(async () => {
  await t.cleanup();
  await Promise.all([a.close(), joiner.close()]);
});

/**
 * A room of version `v` with members, a redacted topic (in state) and a redacted first power
 * levels event (replaced since: only the auth chain serves it). Returns the room and the
 * redacted events' IDs.
 */
async function roomWithRedactions(v: string): Promise<{ roomId: string; topic: string; oldPowerLevels: string }> {
  const roomId = await t.createRoom({ room_version: v, join_rule: "public", name: `Streamed v${v}`, topic: "to be redacted" });
  for (let i = 0; i < 4; i++) await t.join(a, roomId, fresh(a));
  const g = await t.graph(roomId);
  const topic = g.stateIds.get(stateField("m.room.topic", ""))!;
  const oldPowerLevels = g.stateIds.get(stateField("m.room.power_levels", ""))!;
  const pl = g.state.get(stateField("m.room.power_levels", ""))!.content as Record<string, unknown>;
  await t.setState(roomId, "m.room.power_levels", "", { ...pl, events_default: 0, state_default: 60 });
  for (const id of [topic, oldPowerLevels]) {
    const res = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/redact/${enc(id)}`).send({});
    assert.equal(res.status, 200, JSON.stringify(res.body));
  }
  return { roomId, topic, oldPowerLevels };
}

/** The events as the answers served them before streaming: read, redactions applied. */
async function servedWhole(roomId: string, v: string, ids: readonly string[]): Promise<Pdu[]> {
  const events = await t.store.getEvents(roomId, ids);
  const stored = ids.flatMap((id) => (events.has(id) ? [{ eventId: id, pdu: events.get(id)! }] : []));
  return (await applyRedactions(t.store, roomId, roomVersion(v), stored)).map((e) => e.pdu);
}

/**
 * The auth chain of `ids`, walked here from Redis one event at a time (not with the store's walk,
 * which the answers use): every event reachable through auth_events, not the starts themselves
 * unless reachable.
 */
async function chainOracle(roomId: string, ids: readonly string[]): Promise<string[]> {
  const seen = new Set<string>();
  const todo: string[] = [];
  for (const id of ids) todo.push(...authEventIds((await t.store.getEvent(roomId, id))!));
  while (todo.length > 0) {
    const id = todo.pop()!;
    if (seen.has(id)) continue;
    const ev = await t.store.getEvent(roomId, id);
    if (!ev) continue;
    seen.add(id);
    todo.push(...authEventIds(ev));
  }
  return [...seen];
}

/** The auth chain of `ids` as it was served: walked from Redis (no snapshot), redactions applied; by event ID (its order is not specified). */
async function chainWhole(roomId: string, v: string, ids: readonly string[]): Promise<Map<string, Pdu>> {
  const served = await servedWhole(roomId, v, await chainOracle(roomId, ids));
  return byId(served, v);
}

const byId = (pdus: readonly Pdu[], v: string) => new Map(pdus.map((e) => [computeEventId(e, roomVersion(v)), e]));

/** A GET over a raw connection: the status, the bytes received, and whether the answer ended cleanly. */
function rawGet(uri: string, auth: string): Promise<{ status: number; body: string; complete: boolean }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: t.federationPort, path: uri, method: "GET", headers: { Authorization: auth } }, (res) => {
      const parts: Buffer[] = [];
      res.on("data", (c: Buffer) => parts.push(c));
      let done = false;
      const finish = (complete: boolean) => {
        if (done) return;
        done = true;
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString("utf8"), complete });
      };
      res.on("end", () => finish(res.complete));
      res.on("aborted", () => finish(false));
      res.on("error", () => finish(false));
      res.on("close", () => finish(res.complete));
    });
    req.on("error", reject);
    req.end();
  });
}

/** A GET whose client destroys the connection as soon as the first bytes of the body arrive. */
function abortedGet(uri: string, auth: string): Promise<{ status: number }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: t.federationPort, path: uri, method: "GET", headers: { Authorization: auth } }, (res) => {
      res.once("data", () => {
        req.destroy();
        resolve({ status: res.statusCode ?? 0 });
      });
      res.on("error", () => undefined);
    });
    req.on("error", (e) => (req.destroyed ? undefined : reject(e)));
    req.end();
  });
}

for (const v of ["10", "12"]) {
  describe(`streamed answers in a v${v} room`, () => {
    test("a full send_join answers, parsed, what the whole-object answer did: state in order, the auth chain, the head fields (why: the stored bytes are served without a parse)", async () => {
      const { roomId, topic, oldPowerLevels } = await roomWithRedactions(v);
      const g = await t.graph(roomId);
      const stateIds = [...g.stateIds.values()];
      const made = await t.makeMembership(joiner, "join", roomId, fresh(joiner), [v]);
      assert.equal(made.status, 200, JSON.stringify(made.body));
      const { pdu, eventId } = joiner.signEvent(made.body.event, made.body.room_version);
      const res = await t.fed(joiner, "PUT", `${FED}/v2/send_join/${enc(roomId)}/${enc(eventId)}`, pdu);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.match(res.headers["content-type"] as string, /^application\/json/);
      const answer = res.body as { origin: string; state: Pdu[]; auth_chain: Pdu[]; event: Pdu; members_omitted: boolean; servers_in_room: string[] };
      assert.deepEqual(answer.state, await servedWhole(roomId, v, stateIds));
      assert.deepEqual(byId(answer.auth_chain, v), await chainWhole(roomId, v, [...stateIds, eventId]));
      assert.equal(answer.origin, t.serverName);
      assert.deepEqual(answer.event, pdu);
      assert.equal(answer.members_omitted, false);
      assert.deepEqual(answer.servers_in_room, [a.serverName, t.serverName].sort());
      // The redacted events are served redacted: the topic in state, the first power levels in the chain.
      const topicServed = byId(answer.state, v).get(topic)!;
      assert.deepEqual(topicServed, redactEvent((await t.store.getEvent(roomId, topic))!, roomVersion(v)));
      assert.deepEqual(byId(answer.auth_chain, v).get(oldPowerLevels), redactEvent((await t.store.getEvent(roomId, oldPowerLevels))!, roomVersion(v)));

      // A retried send_join (the join is stored now) answers the same state before the join.
      const again = await t.fed(joiner, "PUT", `${FED}/v2/send_join/${enc(roomId)}/${enc(eventId)}`, pdu);
      assert.equal(again.status, 200, JSON.stringify(again.body));
      assert.deepEqual(byId(again.body.state as Pdu[], v), byId(answer.state, v));
      assert.deepEqual(byId(again.body.auth_chain as Pdu[], v), byId(answer.auth_chain, v));
    });

    test("/state answers, parsed, what the whole-object answer did (why: Synapse asks it after a partial-state join; it carries the same volume)", async () => {
      const { roomId, topic } = await roomWithRedactions(v);
      const { eventId: at } = await t.join(joiner, roomId, fresh(joiner));
      const stateIds = [...(await t.store.stateAt(roomId, at, "before"))!.values()];
      const res = await t.fed(joiner, "GET", `${FED}/v1/state/${enc(roomId)}?event_id=${enc(at)}`);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const answer = res.body as { pdus: Pdu[]; auth_chain: Pdu[] };
      assert.deepEqual(Object.keys(answer).sort(), ["auth_chain", "pdus"]);
      // By event ID: this test's RoomStore loads the state group in its own order (the answer's
      // order is the server's stateAt order, as it was before streaming; the spec gives none).
      assert.deepEqual(byId(answer.pdus, v), byId(await servedWhole(roomId, v, stateIds), v));
      assert.equal(answer.pdus.length, stateIds.length);
      assert.deepEqual(byId(answer.auth_chain, v), await chainWhole(roomId, v, stateIds));
      assert.deepEqual(byId(answer.pdus, v).get(topic)!.content, {});
      // /state_ids names the same events.
      const ids = await t.fed(joiner, "GET", `${FED}/v1/state_ids/${enc(roomId)}?event_id=${enc(at)}`);
      assert.equal(ids.status, 200, JSON.stringify(ids.body));
      assert.deepEqual([...(ids.body.pdu_ids as string[])].sort(), [...byId(answer.pdus, v).keys()].sort());
      assert.deepEqual([...(ids.body.auth_chain_ids as string[])].sort(), [...byId(answer.auth_chain, v).keys()].sort());
    });

    test("/state_ids answers, parsed, what the whole-object answer did: the state's IDs, the auth chain's IDs (why: 4.5 MB of IDs in a 100,000-member room)", async () => {
      const { roomId, topic, oldPowerLevels } = await roomWithRedactions(v);
      const { eventId: at } = await t.join(joiner, roomId, fresh(joiner));
      const uri = `${FED}/v1/state_ids/${enc(roomId)}?event_id=${enc(at)}`;
      const raw = await rawGet(uri, joiner.authHeader("GET", uri, t.serverName));
      assert.equal(raw.status, 200, raw.body);
      assert.ok(raw.complete);
      const answer = JSON.parse(raw.body) as { pdu_ids: string[]; auth_chain_ids: string[] };
      assert.deepEqual(Object.keys(answer), ["pdu_ids", "auth_chain_ids"]);
      const stateIds = [...(await t.store.stateAt(roomId, at, "before"))!.values()];
      // The old answer was { pdu_ids: stateIds, auth_chain_ids } (the chain's order is the walk's: compared as a set).
      assert.deepEqual([...answer.pdu_ids].sort(), [...stateIds].sort());
      assert.equal(new Set(answer.auth_chain_ids).size, answer.auth_chain_ids.length, "each chain ID once");
      assert.deepEqual([...answer.auth_chain_ids].sort(), (await chainOracle(roomId, stateIds)).sort());
      // The redacted events are named like any other: the topic in state, the first power levels in the chain only.
      assert.ok(answer.pdu_ids.includes(topic));
      assert.ok(answer.auth_chain_ids.includes(oldPowerLevels) && !answer.pdu_ids.includes(oldPowerLevels));
    });

    test("/event_auth answers, parsed, what the whole-object answer did: the event's auth chain, redactions applied (why: the chain holds every power levels event before it)", async () => {
      const { roomId, oldPowerLevels } = await roomWithRedactions(v);
      const { eventId: at } = await t.join(joiner, roomId, fresh(joiner));
      const res = await t.fed(joiner, "GET", `${FED}/v1/event_auth/${enc(roomId)}/${enc(at)}`);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.match(res.headers["content-type"] as string, /^application\/json/);
      const answer = res.body as { auth_chain: Pdu[] };
      assert.deepEqual(Object.keys(answer), ["auth_chain"]);
      assert.equal(byId(answer.auth_chain, v).size, answer.auth_chain.length, "each event once");
      assert.deepEqual(byId(answer.auth_chain, v), await chainWhole(roomId, v, [at]));
      assert.deepEqual(byId(answer.auth_chain, v).get(oldPowerLevels), redactEvent((await t.store.getEvent(roomId, oldPowerLevels))!, roomVersion(v)));
      // The create event's chain is empty: still one JSON object.
      const create = (await t.graph(roomId)).stateIds.get(stateField("m.room.create", ""))!;
      const empty = await t.fed(joiner, "GET", `${FED}/v1/event_auth/${enc(roomId)}/${enc(create)}`);
      assert.equal(empty.status, 200, JSON.stringify(empty.body));
      assert.deepEqual(empty.body, { auth_chain: [] });
    });
  });
}

describe("/state_ids and /state remembered per state group", () => {
  test("each event's answer is the state before it, after joins (a remembered chain extended) and a replaced state event (walked whole), and again after the room moved on (why: the chain and the serialised IDs are kept by state group; a wrong key would serve the current state or a neighbour's)", async () => {
    const roomId = await t.createRoom({ room_version: "12", join_rule: "public", name: "Remembered", topic: "first topic" });
    await t.join(a, roomId, fresh(a));
    await t.join(joiner, roomId, fresh(joiner));
    const ask = async (at: string) => {
      const uri = `${FED}/v1/state_ids/${enc(roomId)}?event_id=${enc(at)}`;
      const raw = await rawGet(uri, joiner.authHeader("GET", uri, t.serverName));
      assert.equal(raw.status, 200, raw.body);
      assert.ok(raw.complete);
      const answer = JSON.parse(raw.body) as { pdu_ids: string[]; auth_chain_ids: string[] };
      const stateIds = [...(await t.store.stateAt(roomId, at, "before"))!.values()];
      // Sorted: this test's RoomStore may load the group in another order (the spec gives none).
      assert.deepEqual([...answer.pdu_ids].sort(), [...stateIds].sort(), "the state before the event");
      assert.equal(new Set(answer.auth_chain_ids).size, answer.auth_chain_ids.length, "each chain ID once");
      assert.deepEqual([...answer.auth_chain_ids].sort(), (await chainOracle(roomId, stateIds)).sort());
      // /state at the same event: the same state and chain, as events.
      const st = await t.fed(joiner, "GET", `${FED}/v1/state/${enc(roomId)}?event_id=${enc(at)}`);
      assert.equal(st.status, 200, JSON.stringify(st.body));
      assert.deepEqual([...byId(st.body.pdus as Pdu[], "12").keys()].sort(), [...stateIds].sort());
      assert.deepEqual([...byId(st.body.auth_chain as Pdu[], "12").keys()].sort(), [...answer.auth_chain_ids].sort());
      return { raw: raw.body, answer };
    };
    // Joins one after the other: each one's "before" group is the previous one's plus its join.
    const joins: string[] = [];
    for (let i = 0; i < 3; i++) joins.push((await t.join(a, roomId, fresh(a))).eventId);
    const first = await ask(joins[0]!);
    const second = await ask(joins[1]!);
    const third = await ask(joins[2]!);
    assert.equal(second.answer.pdu_ids.length, first.answer.pdu_ids.length + 1, "one more member");
    assert.ok(second.answer.pdu_ids.includes(joins[0]!) && !first.answer.pdu_ids.includes(joins[0]!));
    assert.ok(third.answer.pdu_ids.includes(joins[1]!) && !third.answer.pdu_ids.includes(joins[2]!));
    // A new state event replaces the topic: the answer after it names the new topic, not the old one.
    const oldTopic = (await t.graph(roomId)).stateIds.get(stateField("m.room.topic", ""))!;
    const topic = await t.setState(roomId, "m.room.topic", "", { topic: "second topic" });
    const afterTopic = (await t.join(a, roomId, fresh(a))).eventId;
    const atTopic = await ask(topic);
    const later = await ask(afterTopic);
    assert.ok(atTopic.answer.pdu_ids.includes(oldTopic) && !atTopic.answer.pdu_ids.includes(topic));
    assert.ok(later.answer.pdu_ids.includes(topic) && !later.answer.pdu_ids.includes(oldTopic));
    // The earlier events again, the room having moved on: byte for byte what they answered.
    assert.equal((await ask(joins[0]!)).raw, first.raw);
    assert.equal((await ask(joins[2]!)).raw, third.raw);
  });
});

describe("streamed answers: chunks and errors", () => {
  test("events read a few per round trip join into the same JSON as one read (why: the separators between chunks and lists)", async () => {
    const { roomId } = await roomWithRedactions("12");
    const g = await t.graph(roomId);
    const ids = [...g.stateIds.values()];
    assert.ok(ids.length > 5);
    const chain = [...(await t.store.authChain(roomId, ids)).keys()];
    const v = roomVersion("12");
    const text = async (chunk: number) => {
      const parts: Buffer[] = [];
      for await (const c of jsonObjectChunks({ origin: "x" }, [
        ["state", t.store.servedEventJson(roomId, v, ids, chunk)],
        ["none", t.store.servedEventJson(roomId, v, [], chunk)],
        ["auth_chain", t.store.servedEventJson(roomId, v, chain, chunk)],
      ]))
        parts.push(c);
      return { text: Buffer.concat(parts).toString("utf8"), chunks: parts.length };
    };
    const one = await text(1_000);
    const twos = await text(2);
    assert.ok(twos.chunks > one.chunks);
    const parsed = JSON.parse(twos.text) as { origin: string; state: Pdu[]; none: Pdu[]; auth_chain: Pdu[] };
    assert.deepEqual(parsed, JSON.parse(one.text));
    assert.equal(parsed.origin, "x");
    assert.deepEqual(parsed.none, []);
    assert.deepEqual(parsed.state, await servedWhole(roomId, "12", ids));
    // IDs serialised a few per chunk: the same list as one batch, and strings that need escaping stay strings.
    const names = [...ids, 'a "quoted" \\ name', "é\u2028"];
    const idText = async (batch: number) => {
      const parts: Buffer[] = [];
      for await (const c of jsonObjectChunks({}, [["pdu_ids", jsonStringBatches(names, batch)], ["auth_chain_ids", jsonStringBatches([], batch)]])) parts.push(c);
      return { text: Buffer.concat(parts).toString("utf8"), chunks: parts.length };
    };
    const idsOne = await idText(1_000);
    const idsTwos = await idText(2);
    assert.ok(idsTwos.chunks > idsOne.chunks);
    assert.deepEqual(JSON.parse(idsTwos.text), { pdu_ids: names, auth_chain_ids: [] });
    assert.equal(idsTwos.text, idsOne.text);
    // An empty head and no events at all are still one JSON object.
    const empty: Buffer[] = [];
    for await (const c of jsonObjectChunks({}, [["pdus", t.store.servedEventJson(roomId, v, [])]])) empty.push(c);
    assert.deepEqual(JSON.parse(Buffer.concat(empty).toString("utf8")), { pdus: [] });
  });

  const refusals = [
    { why: "a server with no joined member", origin: () => joiner, at: (join: string) => join, status: 403, errcode: "M_FORBIDDEN" },
    { why: "an event the room does not have", origin: () => a, at: () => "$unknown", status: 404, errcode: "M_NOT_FOUND" },
  ];
  const reads = [
    { name: "/state", uri: (roomId: string, at: string) => `${FED}/v1/state/${enc(roomId)}?event_id=${enc(at)}` },
    { name: "/state_ids", uri: (roomId: string, at: string) => `${FED}/v1/state_ids/${enc(roomId)}?event_id=${enc(at)}` },
    { name: "/event_auth", uri: (roomId: string, at: string) => `${FED}/v1/event_auth/${enc(roomId)}/${enc(at)}` },
  ];
  for (const read of reads) {
    for (const r of refusals) {
      test(`${read.name} refused before the first byte, nothing written: ${r.why} → ${r.status} ${r.errcode}`, async () => {
        const roomId = await t.createRoom({ room_version: "12", join_rule: "public" });
        const { eventId } = await t.join(a, roomId, fresh(a));
        const uri = read.uri(roomId, r.at(eventId));
        const raw = await t.assertNothingWritten(() => rawGet(uri, r.origin().authHeader("GET", uri, t.serverName)));
        assert.equal(raw.status, r.status, raw.body);
        assert.ok(raw.complete, "a whole error answer");
        assert.equal((JSON.parse(raw.body) as { errcode: string }).errcode, r.errcode);
      });
    }
  }
  for (const bad of [
    { why: "/state_ids without event_id", uri: (roomId: string) => `${FED}/v1/state_ids/${enc(roomId)}`, status: 400, errcode: "M_MISSING_PARAM" },
    { why: "/state_ids in a room the server does not have", uri: (_: string, at: string) => `${FED}/v1/state_ids/${enc("!nope:gatehouse.test")}?event_id=${enc(at)}`, status: 404, errcode: "M_NOT_FOUND" },
    { why: "/event_auth of an event of another room (the server is joined to both)", uri: (roomId: string, _: string, other: string) => `${FED}/v1/event_auth/${enc(roomId)}/${enc(other)}`, status: 404, errcode: "M_NOT_FOUND" },
    { why: "/state_ids at an event of another room", uri: (roomId: string, _: string, other: string) => `${FED}/v1/state_ids/${enc(roomId)}?event_id=${enc(other)}`, status: 404, errcode: "M_NOT_FOUND" },
  ]) {
    test(`bad input before the first byte, nothing written: ${bad.why} → ${bad.status} ${bad.errcode}`, async () => {
      const [roomId, otherRoom] = await Promise.all([0, 1].map(() => t.createRoom({ room_version: "12", join_rule: "public" })));
      const { eventId } = await t.join(a, roomId!, fresh(a));
      const { eventId: other } = await t.join(a, otherRoom!, fresh(a));
      const res = await t.assertNothingWritten(() => t.fed(a, "GET", bad.uri(roomId!, eventId, other)));
      assert.equal(res.status, bad.status, JSON.stringify(res.body));
      assert.equal(res.body.errcode, bad.errcode);
    });
  }

  test("a client that goes away after the first bytes of /state_ids and /event_auth: the server serves the next request the same, and wrote nothing (why: the answer is a generator the route must close)", async () => {
    const { roomId } = await roomWithRedactions("12");
    const { eventId: at } = await t.join(a, roomId, fresh(a));
    for (const read of reads) {
      const uri = read.uri(roomId, at);
      const whole = await rawGet(uri, a.authHeader("GET", uri, t.serverName));
      assert.equal(whole.status, 200, whole.body);
      const cut = await t.assertNothingWritten(() => abortedGet(uri, a.authHeader("GET", uri, t.serverName)));
      assert.equal(cut.status, 200, read.name);
      const again = await rawGet(uri, a.authHeader("GET", uri, t.serverName));
      assert.equal(again.status, 200, again.body);
      assert.ok(again.complete);
      assert.deepEqual(JSON.parse(again.body), JSON.parse(whole.body), read.name);
    }
  });

  test("an error after the first byte aborts the connection: no 200 with half a JSON body (why: a peer must not take a cut answer for a whole one)", async () => {
    const { roomId, oldPowerLevels } = await roomWithRedactions("12");
    const { eventId: at } = await t.join(a, roomId, fresh(a));
    // The redacted first power levels event is served by the auth chain only, after the state:
    // its stored JSON, broken now, is parsed then (to redact it), after the state was sent.
    // (The auth chain walk before the first byte reads it from the event cache.)
    const key = t.gh.keys.event(roomId, oldPowerLevels);
    const stored = (await t.redis.get(key))!;
    await t.redis.set(key, "{broken");
    try {
      const uri = `${FED}/v1/state/${enc(roomId)}?event_id=${enc(at)}`;
      const res = await rawGet(uri, a.authHeader("GET", uri, t.serverName));
      assert.equal(res.status, 200, "the state was on its way");
      assert.ok(res.body.startsWith('{"pdus":['), res.body.slice(0, 40));
      assert.equal(res.complete, false, "the answer did not end cleanly");
      assert.throws(() => JSON.parse(res.body));
    } finally {
      await t.redis.set(key, stored);
    }
  });
});
