/**
 * Interop: a gap get_missing_events cannot close, in a room hosted by a real Synapse
 * (rooms/gap-state.ts, rooms/missing-events.ts). A Gatehouse user is in a Synapse-hosted room
 * (v10 and v12); federation between Gatehouse and Synapse is cut (iptables, as
 * state-fork-synapse.test.ts) while Synapse's users send more than 60 events: messages, a topic
 * change, new power levels, and a new member who joins and talks. Synapse keeps unsent PDUs in
 * memory only, and switches a destination to catch-up only after a retry interval over an hour
 * (the peers retry every 1–2 s, so after a bare heal it would send them all): it is restarted
 * during the cut, as in state-fork-synapse.test.ts, and then catches Gatehouse up with its newest
 * event in the room only (federation/sender/per_destination_queue.py). Gatehouse fetches the newest 50 with
 * get_missing_events, takes the state at the far side of the gap from Synapse (/state_ids, then
 * /state or /event), and accepts Synapse's next message — before, it refused it, and every later
 * event of Synapse in that room, for good. Afterwards Gatehouse's current state is Synapse's
 * (both client APIs), and Gatehouse's next message (on both forward extremities) is accepted by
 * Synapse. In both topologies (test/support/topology.ts): IP literals, and the named hs-c.test.
 */
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import type { LoopbackGatehouse } from "../../src/dev/loopback.js";
import { jsonRequest } from "../../src/dev/http-json.js";
import { SynapsePeer, SynapseUser, waitFor } from "../support/synapse.js";
import { NAMED, topologies } from "../support/topology.js";
import { useInteropSuite } from "../support/interop-suite.js";
import { NetCut, netCutUnavailable, stateDiff, synapseState, type StateIds } from "../support/interop-state.js";

const enc = encodeURIComponent;
/** Messages Synapse's users send during the cut, after the state changes (more than get_missing_events' 5 × 10). */
const MESSAGES = 62;

for (const topology of topologies("gs")) {
  const unavailable = topology.unavailable() ?? netCutUnavailable();

  describe(`interop (${topology.name}): a gap longer than get_missing_events reaches, in a room hosted by Synapse`, { skip: unavailable ?? false }, () => {
    let lb: LoopbackGatehouse;
    let hs: SynapsePeer;
    let owner: SynapseUser;
    let late: SynapseUser;
    let cut: NetCut;
    let asToken: string;

    const suite = useInteropSuite(topology, {
      peers: ["C"],
      // Retries at most 1 s apart: the heal should be seen soon.
      gatehouse: { appservice: "gs", env: { GATEHOUSE_SENDER_BACKOFF_INITIAL_MS: "100", GATEHOUSE_SENDER_BACKOFF_MAX_MS: "1000" } },
    });
    before(async () => {
      ({ lb, asToken } = suite);
      hs = suite.peer("C");
      owner = await hs.user("gsowner");
      late = await hs.user("gslate");
      const gate = topology.name === "named" ? { address: NAMED.gate.address, port: NAMED.gate.port } : { address: "127.0.0.1", port: Number(lb.serverName.split(":").pop()) };
      cut = new NetCut([gate, { address: hs.named?.federationAddress ?? "127.0.0.1", port: hs.federationPort }]);
    });

    after(() => cut?.heal());

    /** The client API of Gatehouse, as the application service acting for `userId`. */
    const client = suite.client.bind(suite);

    /** The room's current state through Gatehouse's client API, as "type|state_key" → event ID. */
    const gatehouseClientState = async (roomId: string, userId: string): Promise<StateIds> => {
      const r = await client("GET", `/rooms/${enc(roomId)}/state`, userId);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return new Map((r.body as { type: string; state_key: string; event_id: string }[]).map((e) => [`${e.type}|${e.state_key}`, e.event_id]));
    };
    const onGatehouse = async (roomId: string, eventId: string) => (await lb.admin("GET", `/rooms/${enc(roomId)}/events/${enc(eventId)}`)).status === 200;
    /**
     * Sends a message through Synapse's client API. A socket the restarted Synapse closed fails the
     * request before it is read: it is sent again, with the same transaction ID (idempotent).
     */
    const say = async (who: SynapseUser, roomId: string, body: string): Promise<string> => {
      const txn = `t${randomBytes(6).toString("hex")}`;
      const r = await waitFor(`Synapse to take "${body}"`, async () => {
        try {
          return await who.call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${txn}`, { msgtype: "m.text", body });
        } catch {
          return null;
        }
      });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body.event_id;
    };
    const metric = async (outcome: string) => (await lb.gh.gatehouse.metrics.missingEvents.get()).values.find((v) => v.labels.outcome === outcome)?.value ?? 0;

    for (const version of ["10", "12"]) {
      test(`v${version}: Synapse's users send ${MESSAGES + 3} events during a cut; after the heal Gatehouse takes the state at the gap and agrees with Synapse`, async () => {
        const created = await owner.call("POST", "/_matrix/client/v3/createRoom", { room_version: version, preset: "public_chat", name: `gap state v${version}` });
        assert.equal(created.status, 200, JSON.stringify(created.body));
        const roomId = created.body.room_id as string;
        const reg = await jsonRequest(`http://127.0.0.1:${lb.gh.clientPort}/_matrix/client/v3/register`, "POST", asToken, {
          type: "m.login.application_service",
          username: `_gs_${version}_${topology.name === "named" ? "n" : "i"}`,
        });
        assert.equal(reg.status, 200, JSON.stringify(reg.body));
        const user = reg.body.user_id as string;
        const joined = await client("POST", `/join/${enc(roomId)}?server_name=${enc(hs.serverName)}`, user, {});
        assert.equal(joined.status, 200, JSON.stringify(joined.body));
        const hello = await say(owner, roomId, "before the cut");
        await waitFor("Gatehouse to store Synapse's message", async () => onGatehouse(roomId, hello));
        assert.deepEqual(stateDiff(await gatehouseClientState(roomId, user), await synapseState(owner, roomId), ["G", "S"]), [], "agree before the cut");

        const taken = await metric("state_taken");
        cut.cut();
        const during: string[] = [];
        let topicId = "";
        let powerId = "";
        try {
          // The state changes first: they lie beyond the 50 events get_missing_events brings, so
          // Gatehouse learns them only from the state at the gap.
          const topic = await owner.call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.topic/`, { topic: "set while Gatehouse was cut off" });
          assert.equal(topic.status, 200, JSON.stringify(topic.body));
          topicId = topic.body.event_id;
          const j = await late.join(roomId, hs.serverName);
          assert.equal(j.status, 200, JSON.stringify(j.body));
          const pl = await owner.call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.power_levels/`);
          const raised = await owner.call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.power_levels/`, { ...pl.body, users: { ...pl.body.users, [late.userId]: 50 } });
          assert.equal(raised.status, 200, JSON.stringify(raised.body));
          powerId = raised.body.event_id;
          for (let i = 0; i < MESSAGES; i++) during.push(await say(i % 2 ? owner : late, roomId, `during the cut ${i}`));
          for (const id of during.slice(0, 1)) assert.equal(await onGatehouse(roomId, id), false, "nothing crossed the cut");
          // Synapse forgets what it could not send.
          hs.stop();
        } finally {
          cut.heal();
        }
        hs.start();
        // Synapse's next message after the heal: from the member who joined during the cut.
        const next = await say(late, roomId, "after the heal");
        await waitFor("Gatehouse to accept Synapse's next message", async () => onGatehouse(roomId, next), 90_000, 250);
        assert.ok((await metric("state_taken")) > taken, "gatehouse_missing_events_total{outcome=state_taken}: the state at the gap came from Synapse");
        // The state changes were never timeline events here: outliers, stored for the state.
        for (const id of [topicId, powerId]) {
          const ev = await lb.admin("GET", `/rooms/${enc(roomId)}/events/${enc(id)}`);
          assert.equal(ev.status, 200, `${id} stored: ${JSON.stringify(ev.body)}`);
        }
        assert.equal(await onGatehouse(roomId, during[0]!), false, "the far side of the gap is not fetched");
        // The topic and the power levels were never timeline events here; they are state.
        let diff: string[] = [];
        await waitFor(
          "Gatehouse's current state (client API) to be Synapse's",
          async () => (diff = stateDiff(await gatehouseClientState(roomId, user), await synapseState(owner, roomId), ["G", "S"])).length === 0,
          30_000,
          250,
        ).catch((e: unknown) => assert.fail(`${(e as Error).message}: ${diff.join("; ")}`));
        const s = await gatehouseClientState(roomId, user);
        assert.equal(s.get("m.room.topic|"), topicId);
        assert.equal(s.get("m.room.power_levels|"), powerId);
        assert.ok(s.get(`m.room.member|${late.userId}`), "the member who joined during the cut");
        const topicNow = await client("GET", `/rooms/${enc(roomId)}/state/m.room.topic/`, user);
        assert.equal(topicNow.body.topic, "set while Gatehouse was cut off");

        // Gatehouse's next message merges its branch (its join) with Synapse's: Synapse accepts it.
        const ours = await client("PUT", `/rooms/${enc(roomId)}/send/m.room.message/gs${version}`, user, { msgtype: "m.text", body: "back from the cut" });
        assert.equal(ours.status, 200, JSON.stringify(ours.body));
        await waitFor("Synapse to accept Gatehouse's message", async () => (await owner.call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/event/${enc(ours.body.event_id)}`)).status === 200, 60_000, 250);
        const again = await say(owner, roomId, "and again");
        await waitFor("Gatehouse to take Synapse's following message", async () => onGatehouse(roomId, again), 60_000, 250);
        assert.deepEqual(stateDiff(await gatehouseClientState(roomId, user), await synapseState(owner, roomId), ["G", "S"]), []);
      });
    }
  });
}
