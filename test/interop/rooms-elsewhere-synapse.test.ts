/**
 * Interop: Gatehouse as a full participant of rooms hosted by a real Synapse (rooms/participation.ts).
 * A Synapse user creates a room (v10 and v12); a Gatehouse user joins it (directly, and after an
 * invite); Synapse's messages and a topic change reach Gatehouse, which stores them with the right
 * state; the Gatehouse user sends messages and a topic change through the client API, which
 * Synapse accepts (checked through Synapse's client API); a gap (Gatehouse down while Synapse sends)
 * (Synapse's transactions lost while Gatehouse is down) is filled with get_missing_events; history from before the join is backfilled
 * when the user's /messages reaches it; leaving stops it. In both topologies
 * (test/support/topology.ts): IP literals, and the named server hs-c.test (DNS, TLS verified).
 */
import { describe, test, before } from "node:test";
import assert from "node:assert/strict";
import https from "node:https";
import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import type { LoopbackGatehouse } from "../../src/dev/loopback.js";
import { jsonRequest } from "../../src/dev/http-json.js";
import { SynapsePeer, SynapseUser, waitFor } from "../support/synapse.js";
import { topologies } from "../support/topology.js";
import { useInteropSuite } from "../support/interop-suite.js";

const enc = encodeURIComponent;

for (const topology of topologies()) {
  const unavailable = topology.unavailable();

  describe(`interop (${topology.name}): a Gatehouse user in rooms hosted by Synapse`, { skip: unavailable ?? false }, () => {
    let lb: LoopbackGatehouse;
    let hs: SynapsePeer;
    let owner: SynapseUser;
    let asToken: string;

    // Its own peer in the IP-literal lab (ports no other suite uses); hs-c.test when named.
    const suite = useInteropSuite(topology, { peers: ["C"], ownIpLiteralPeers: { C: { name: "reC", clientPort: 19308, federationPort: 19748 } }, gatehouse: { appservice: "re" } });
    before(async () => {
      ({ lb, asToken } = suite);
      hs = suite.peer("C");
      owner = await hs.user("reowner");
    });

    /** The client API of Gatehouse, as the application service acting for `userId`. */
    const client = suite.client.bind(suite);

    /** On Gatehouse's federation address while it is stopped: /send answered 200 and dropped, the rest 400. */
    async function outagePage(): Promise<{ sends: number; close(): Promise<void> }> {
      const cfg = lb.gh.gatehouse.config;
      const state = { sends: 0 };
      const server = https.createServer({ cert: readFileSync(cfg.tls!.certFile), key: readFileSync(cfg.tls!.keyFile) }, (req, res) => {
        req.resume();
        if (req.method === "PUT" && req.url?.startsWith("/_matrix/federation/v1/send/")) {
          state.sends++;
          res.writeHead(200, { "Content-Type": "application/json" }).end('{"pdus":{}}');
          return;
        }
        res.writeHead(400, { "Content-Type": "application/json" }).end('{"errcode":"M_UNKNOWN","error":"down for maintenance"}');
      });
      await new Promise<void>((resolve) => server.listen(lb.gh.federationPort, cfg.federation.host, () => resolve()));
      return {
        get sends() {
          return state.sends;
        },
        close: () =>
          new Promise<void>((resolve) => {
            server.closeAllConnections();
            server.close(() => resolve());
          }),
      };
    }

    async function register(localpart: string): Promise<string> {
      const r = await jsonRequest(`http://127.0.0.1:${lb.gh.clientPort}/_matrix/client/v3/register`, "POST", asToken, { type: "m.login.application_service", username: localpart });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body.user_id;
    }

    async function synapseRoom(version: string, preset: "public_chat" | "private_chat"): Promise<string> {
      const r = await owner.call("POST", "/_matrix/client/v3/createRoom", { room_version: version, preset, name: `elsewhere v${version}` });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body.room_id;
    }

    const synapseSend = async (roomId: string, body: string): Promise<string> => {
      const r = await owner.call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/t${randomBytes(6).toString("hex")}`, { msgtype: "m.text", body });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body.event_id;
    };
    /** The event as Gatehouse stores it (admin API), or null. */
    const onGatehouse = async (roomId: string, eventId: string) => {
      const r = await lb.admin("GET", `/rooms/${enc(roomId)}/events/${enc(eventId)}`);
      return r.status === 200 ? r.body : null;
    };
    const gatehouseState = async (roomId: string, type: string, stateKey = "") => {
      const r = await lb.admin("GET", `/rooms/${enc(roomId)}/state/${enc(type)}/${enc(stateKey)}`);
      return r.status === 200 ? r.body : null;
    };

    for (const version of ["10", "12"]) {
      test(`v${version}: direct join; messages and state both ways; a gap filled by get_missing_events; leave`, async () => {
        const roomId = await synapseRoom(version, "public_chat");
        const user = await register(`_re_direct${version}_${topology.name === "named" ? "n" : "i"}`);
        const joined = await client("POST", `/join/${enc(roomId)}?server_name=${enc(hs.serverName)}`, user, {});
        assert.equal(joined.status, 200, JSON.stringify(joined.body));
        assert.equal((await owner.state(roomId, "m.room.member", user)).body.membership, "join");
        // Gatehouse stored the room: the owner is joined in its state, the name is there. The
        // join asked for partial state (GATEHOUSE_PARTIAL_STATE_JOINS), which leaves the owner's
        // member event out of send_join's answer: it is there once the background resync is done.
        await waitFor("the owner's join in Gatehouse's state (after the partial-state resync)", async () => (await gatehouseState(roomId, "m.room.member", owner.userId))?.membership === "join");

        // Synapse → Gatehouse: two messages and a topic change.
        const m1 = await synapseSend(roomId, "hello gatehouse");
        const m2 = await synapseSend(roomId, "second");
        const topic = await owner.call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.topic/`, { topic: `from synapse v${version}` });
        assert.equal(topic.status, 200, JSON.stringify(topic.body));
        await waitFor("Gatehouse to store Synapse's events", async () => (await onGatehouse(roomId, m1)) && (await onGatehouse(roomId, m2)) && (await onGatehouse(roomId, topic.body.event_id)));
        const st = await client("GET", `/rooms/${enc(roomId)}/state/m.room.topic/`, user);
        assert.equal(st.status, 200, JSON.stringify(st.body));
        assert.equal(st.body.topic, `from synapse v${version}`);
        const msgs = await client("GET", `/rooms/${enc(roomId)}/messages?dir=b&limit=20`, user);
        assert.equal(msgs.status, 200, JSON.stringify(msgs.body));
        assert.ok(msgs.body.chunk.some((e: { event_id: string }) => e.event_id === m1), "Synapse's message in the user's /messages");

        // Gatehouse → Synapse, through the client API: a message and a topic change.
        const sent = await client("PUT", `/rooms/${enc(roomId)}/send/m.room.message/g1`, user, { msgtype: "m.text", body: "hello synapse" });
        assert.equal(sent.status, 200, JSON.stringify(sent.body));
        const ourTopic = await client("PUT", `/rooms/${enc(roomId)}/state/m.room.topic/`, user, { topic: "from gatehouse" });
        // Synapse's public_chat power levels need 50 for the topic: the owner raises the user first.
        if (ourTopic.status === 403) {
          const pl = await owner.call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.power_levels/`);
          const raised = await owner.call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.power_levels/`, { ...pl.body, users: { ...pl.body.users, [user]: 50 } });
          assert.equal(raised.status, 200, JSON.stringify(raised.body));
          await waitFor("Gatehouse to store the power levels", async () => (await onGatehouse(roomId, raised.body.event_id)) !== null);
        }
        const topic2 = ourTopic.status === 200 ? ourTopic : await client("PUT", `/rooms/${enc(roomId)}/state/m.room.topic/`, user, { topic: "from gatehouse" });
        assert.equal(topic2.status, 200, JSON.stringify(topic2.body));
        await waitFor("Synapse to accept Gatehouse's events", async () => {
          const ev = await owner.call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/event/${enc(sent.body.event_id)}`);
          const t = await owner.state(roomId, "m.room.topic");
          return ev.status === 200 && ev.body.content?.body === "hello synapse" && t.body.topic === "from gatehouse";
        });

        // A gap: while Gatehouse is stopped, a box on its address takes Synapse's transactions and
        // drops them (answers 200, as a lossy middlebox would), so Synapse believes three messages
        // delivered. Back up, Synapse's next message references the last of them: Gatehouse
        // fetches all three from Synapse with get_missing_events before accepting it.
        const gaps: string[] = [];
        await lb.restart(async () => {
          const down = await outagePage();
          try {
            for (const body of ["gap 1", "gap 2", "gap 3"]) {
              const before = down.sends;
              gaps.push(await synapseSend(roomId, body));
              await waitFor("Synapse to send it into the void", async () => down.sends > before);
            }
          } finally {
            await down.close();
          }
        });
        const afterGap = await synapseSend(roomId, "after the gap");
        await waitFor("Gatehouse to fill the gap", async () => {
          for (const id of [...gaps, afterGap]) if (!(await onGatehouse(roomId, id))) return false;
          return true;
        }, 60_000);
        const fetched = (await lb.gh.gatehouse.metrics.missingEvents.get()).values.find((v) => v.labels.outcome === "persisted")?.value ?? 0;
        assert.equal(fetched, 3, "the three dropped events came from get_missing_events");
        const wake = await client("PUT", `/rooms/${enc(roomId)}/send/m.room.message/g2`, user, { msgtype: "m.text", body: "back" });
        assert.equal(wake.status, 200, JSON.stringify(wake.body));
        const g1 = await client("GET", `/rooms/${enc(roomId)}/event/${enc(gaps[0]!)}`, user);
        assert.equal(g1.status, 200, JSON.stringify(g1.body));

        // Leave: Synapse sees it; Gatehouse sends nothing more there.
        const left = await client("POST", `/rooms/${enc(roomId)}/leave`, user, {});
        assert.equal(left.status, 200, JSON.stringify(left.body));
        await waitFor("Synapse to see the leave", async () => (await owner.state(roomId, "m.room.member", user)).body.membership === "leave");
        const after = await client("PUT", `/rooms/${enc(roomId)}/send/m.room.message/g3`, user, { msgtype: "m.text", body: "still here?" });
        assert.equal(after.status, 403, JSON.stringify(after.body));
      });

      test(`v${version}: join after an invite; Synapse's message arrives; earlier history is backfilled`, async () => {
        const roomId = await synapseRoom(version, "private_chat");
        const user = await register(`_re_invited${version}_${topology.name === "named" ? "n" : "i"}`);
        const earlier = [await synapseSend(roomId, "before you came 1"), await synapseSend(roomId, "before you came 2")];
        const inv = await owner.call("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/invite`, { user_id: user });
        assert.equal(inv.status, 200, JSON.stringify(inv.body));
        await waitFor("Gatehouse to record the invite", async () => {
          const m = await lb.admin("GET", `/remote/memberships?user_id=${enc(user)}`);
          return m.body.memberships.some((x: { room_id: string; membership: string }) => x.room_id === roomId && x.membership === "invite");
        });
        const joined = await client("POST", `/rooms/${enc(roomId)}/join`, user, {});
        assert.equal(joined.status, 200, JSON.stringify(joined.body));
        const m = await synapseSend(roomId, "welcome");
        await waitFor("Gatehouse to store the message", async () => (await onGatehouse(roomId, m)) !== null);
        const members = await client("GET", `/rooms/${enc(roomId)}/joined_members`, user);
        assert.equal(members.status, 200, JSON.stringify(members.body));
        assert.deepEqual(Object.keys(members.body.joined).sort(), [owner.userId, user].sort());
        // History before the join (visibility "shared"): /messages reaches the join, Gatehouse backfills from Synapse.
        let chunk: { event_id: string; type: string }[] = [];
        for (let from: string | undefined, i = 0; i < 5; i++) {
          const page = await client("GET", `/rooms/${enc(roomId)}/messages?dir=b&limit=10${from ? `&from=${from}` : ""}`, user);
          assert.equal(page.status, 200, JSON.stringify(page.body));
          chunk = [...chunk, ...page.body.chunk];
          if (!page.body.end) break;
          from = page.body.end;
        }
        for (const id of earlier) assert.ok(chunk.some((e) => e.event_id === id), `backfilled ${id}: ${JSON.stringify(chunk.map((e) => e.type))}`);
        assert.ok(chunk.some((e) => e.type === "m.room.create"), "down to the create event");
        const sent = await client("PUT", `/rooms/${enc(roomId)}/send/m.room.message/i1`, user, { msgtype: "m.text", body: "thanks" });
        assert.equal(sent.status, 200, JSON.stringify(sent.body));
        await waitFor("Synapse to accept the answer", async () => (await owner.call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/event/${enc(sent.body.event_id)}`)).status === 200);
      });
    }
  });
}
