/**
 * Interop with a real Synapse: a Synapse server joins a Gatehouse room late and backfills the
 * messages sent before its user joined. With history_visibility `joined`, Gatehouse serves them
 * redacted; Synapse must accept those redacted copies (their signatures cover the redacted form),
 * and stores them with empty content. With `shared` they arrive in full. An event redacted on
 * Gatehouse arrives redacted either way. Redactions also go both ways live: Synapse applies one
 * Gatehouse sends, Gatehouse applies one a Synapse user sends.
 *
 * Synapse's own history (without client-side visibility filtering) is read through its admin API
 * (`GET /_synapse/admin/v1/rooms/{roomId}/messages`, which also backfills), as a server admin
 * registered with the peer's shared secret.
 *
 * Run: npm run test:interop (root). Synapse "visA" on ports 29108/29548.
 */
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { startLoopbackGatehouse, type AdminCall, type LoopbackGatehouse } from "../../src/dev/loopback.js";
import { jsonRequest } from "../../src/dev/http-json.js";
import { installPeers, interopUnavailable, SynapsePeer, SynapseUser, waitFor } from "../support/synapse.js";

const unavailable = interopUnavailable();
const enc = encodeURIComponent;

/** A Synapse server admin, registered through the shared-secret admin API. */
async function synapseAdmin(hs: SynapsePeer, localpart: string): Promise<SynapseUser> {
  const password = `pw-${localpart}-interop`;
  const nonce = (await jsonRequest(`${hs.clientUrl}/_synapse/admin/v1/register`, "GET", "", undefined)).body.nonce as string;
  const mac = createHmac("sha1", `test-shared-secret-${hs.name}`).update(`${nonce}\0${localpart}\0${password}\0admin`).digest("hex");
  const res = await jsonRequest(`${hs.clientUrl}/_synapse/admin/v1/register`, "POST", "", { nonce, username: localpart, password, admin: true, mac });
  if (res.status === 200) return new SynapseUser(hs, res.body.user_id, res.body.access_token);
  return hs.user(localpart); // already registered (a re-run): log in
}

describe("interop: Synapse backfills history from Gatehouse under each history visibility", { skip: unavailable ?? false }, () => {
  let lb: LoopbackGatehouse;
  let admin: AdminCall;
  const hs = new SynapsePeer("visA", 29108, 29548);
  let reader: SynapseUser;

  before(async () => {
    installPeers();
    hs.start();
    lb = await startLoopbackGatehouse({ label: "interop-vis", env: { REDIS_URL: process.env.REDIS_URL, GATEHOUSE_METRICS_LISTEN: "off" }, logLevel: process.env.GATEHOUSE_LOG_LEVEL ?? "warn" });
    admin = lb.admin;
    reader = await synapseAdmin(hs, `visreader${Date.now()}`);
  });

  after(async () => {
    await lb?.stop();
    hs.stop();
  });

  for (const [visibility, earlyInFull] of [["joined", false], ["shared", true]] as const) {
    test(`${visibility}: messages before Synapse's user joined arrive ${earlyInFull ? "in full" : "redacted"}, and Synapse accepts them`, async () => {
      const creator = `@admin:${lb.serverName}`;
      const created = await admin("POST", "/rooms", {
        creator,
        room_version: "12",
        join_rule: "public",
        name: `visibility ${visibility}`,
        initial_state: [{ type: "m.room.history_visibility", content: { history_visibility: visibility } }],
      });
      assert.equal(created.status, 200, JSON.stringify(created.body));
      const roomId = created.body.room_id as string;
      const sent: Record<string, string> = {};
      for (const body of ["early one", "early two", "redacted early"]) {
        const r = await admin("POST", `/rooms/${enc(roomId)}/send/m.room.message`, { content: { msgtype: "m.text", body } });
        assert.equal(r.status, 200, JSON.stringify(r.body));
        sent[body] = r.body.event_id;
      }
      const red = await admin("POST", `/rooms/${enc(roomId)}/redact/${enc(sent["redacted early"]!)}`, { reason: "interop" });
      assert.equal(red.status, 200, JSON.stringify(red.body));

      const joined = await reader.join(roomId, lb.serverName);
      assert.equal(joined.status, 200, `join: ${JSON.stringify(joined.body)}`);

      // Synapse's whole history of the room (admin: no client visibility filter); paginating
      // backwards makes it backfill from Gatehouse.
      const history = async () => {
        const r = await reader.call("GET", `/_synapse/admin/v1/rooms/${enc(roomId)}/messages?dir=b&limit=100`);
        assert.equal(r.status, 200, JSON.stringify(r.body));
        return new Map((r.body.chunk as { event_id: string; content: Record<string, unknown> }[]).map((e) => [e.event_id, e]));
      };
      let seen = await history();
      await waitFor("Synapse to backfill the early messages", async () => {
        seen = await history();
        return Object.values(sent).every((id) => seen.has(id));
      });
      for (const body of ["early one", "early two"]) {
        const ev = seen.get(sent[body]!)!;
        assert.ok(ev, `${body} was backfilled and accepted by Synapse`);
        if (earlyInFull) assert.equal(ev.content.body, body, `${body} arrives in full under ${visibility}`);
        else assert.deepEqual(ev.content, {}, `${body} arrives redacted under ${visibility}`);
      }
      assert.deepEqual(seen.get(sent["redacted early"]!)!.content, {}, "a redacted event arrives redacted");

      // A message after the join arrives in full through /send either way.
      const late = await admin("POST", `/rooms/${enc(roomId)}/send/m.room.message`, { content: { msgtype: "m.text", body: "after the join" } });
      assert.equal(late.status, 200);
      await waitFor("Synapse to receive the message sent after its join", async () => (await history()).get(late.body.event_id)?.content.body === "after the join");
    });
  }

  test("a knock room whose name was redacted: knock, accept (invite) and join still work with the redacted state", async () => {
    const created = await admin("POST", "/rooms", { creator: `@admin:${lb.serverName}`, room_version: "12", join_rule: "knock", name: "to be redacted" });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    const roomId = created.body.room_id as string;
    const state = await admin("GET", `/rooms/${enc(roomId)}/state`);
    const nameId = (state.body.state as { type: string; event_id: string }[]).find((e) => e.type === "m.room.name")!.event_id;
    assert.equal((await admin("POST", `/rooms/${enc(roomId)}/redact/${enc(nameId)}`, {})).status, 200);
    const knocker = await hs.user(`visknocker${Date.now()}`);
    const knock = await knocker.knock(roomId, lb.serverName, "hello");
    assert.equal(knock.status, 200, `knock: ${JSON.stringify(knock.body)}`);
    await waitFor("Gatehouse to list the knock", async () => (await admin("GET", `/rooms/${enc(roomId)}/knocks`)).body.knocks.length === 1);
    const accept = await admin("POST", `/rooms/${enc(roomId)}/knocks/${enc(knocker.userId)}/accept`, {});
    assert.equal(accept.status, 200, `accept: ${JSON.stringify(accept.body)}`);
    await waitFor("Synapse to show the invite", async () => (await knocker.membershipIn(roomId)) === "invite");
    const joined = await knocker.join(roomId, lb.serverName);
    assert.equal(joined.status, 200, `join: ${JSON.stringify(joined.body)}`);
    // Synapse holds the redacted name event: no name.
    const name = await knocker.state(roomId, "m.room.name");
    assert.deepEqual(name.body, {});
  });

  test("redactions both ways: Synapse applies Gatehouse's, Gatehouse applies Synapse's", async () => {
    const created = await admin("POST", "/rooms", { creator: `@admin:${lb.serverName}`, room_version: "12", join_rule: "public", name: "redactions" });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    const roomId = created.body.room_id as string;
    assert.equal((await reader.join(roomId, lb.serverName)).status, 200);
    const history = async () => {
      const r = await reader.call("GET", `/_synapse/admin/v1/rooms/${enc(roomId)}/messages?dir=b&limit=100`);
      return new Map((r.body.chunk as { event_id: string; content: Record<string, unknown> }[]).map((e) => [e.event_id, e]));
    };

    // Gatehouse redacts its own message: Synapse receives the redaction over /send and applies it.
    const ours = await admin("POST", `/rooms/${enc(roomId)}/send/m.room.message`, { content: { msgtype: "m.text", body: "gatehouse's" } });
    await waitFor("Synapse to receive Gatehouse's message", async () => (await history()).get(ours.body.event_id)?.content.body === "gatehouse's");
    const red = await admin("POST", `/rooms/${enc(roomId)}/redact/${enc(ours.body.event_id)}`, { reason: "interop" });
    assert.equal(red.status, 200, JSON.stringify(red.body));
    await waitFor("Synapse to apply Gatehouse's redaction", async () => {
      const ev = (await history()).get(ours.body.event_id);
      return ev !== undefined && Object.keys(ev.content).length === 0;
    });

    // Synapse's user redacts their own message: Gatehouse receives it over /send and applies it.
    const theirs = await reader.call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/t${Date.now()}`, { msgtype: "m.text", body: "synapse's" });
    assert.equal(theirs.status, 200, JSON.stringify(theirs.body));
    await waitFor("Gatehouse to receive Synapse's message", async () => (await admin("GET", `/rooms/${enc(roomId)}/events/${enc(theirs.body.event_id)}`)).status === 200);
    const redacted = await reader.call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/redact/${enc(theirs.body.event_id)}/r${Date.now()}`, { reason: "oops" });
    assert.equal(redacted.status, 200, JSON.stringify(redacted.body));
    const seen = await waitFor("Gatehouse to apply Synapse's redaction", async () => {
      const ev = await admin("GET", `/rooms/${enc(roomId)}/events/${enc(theirs.body.event_id)}`);
      return ev.body.unsigned?.redacted_because ? ev.body : null;
    });
    assert.deepEqual(seen.content, {});
    assert.equal(seen.unsigned.redacted_because.event_id, redacted.body.event_id);
  });
});
