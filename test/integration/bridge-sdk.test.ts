// A real bridge SDK drives Gatehouse, unchanged: matrix-bot-sdk's Appservice (its own HTTP
// listener for pushed transactions) and Intent/MatrixClient (the client API with the as_token and
// user_id). The bot registers, creates a knock room, receives a knock from federation as a pushed
// event, accepts it from its push handler (invite), sees the join, and exchanges messages. Its
// listener is then stopped for a while: nothing is lost and the same txnId is re-sent.
//
// Why matrix-bot-sdk 0.5.19: 0.6+ (and matrix-appservice-bridge, through @vector-im/matrix-bot-sdk)
// load @matrix-org/matrix-sdk-crypto-nodejs at import, whose native library is downloaded by a
// postinstall script from outside the npm registry; 0.5.19 has no native dependency. It reads the
// hs_token only from the `access_token` query parameter (its Authorization check looks for a
// capitalised header name Node never produces), so this test turns on
// GATEHOUSE_APPSERVICE_LEGACY_AUTHORIZATION, as Synapse's use_appservice_legacy_authorization does.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { Appservice, MemoryStorageProvider, LogService, LogLevel } from "matrix-bot-sdk";
import { TestGatehouse, ADMIN, FED, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";
import { freePort } from "../../src/embedded-redis.js";
import { waitFor } from "../../src/dev/wait.js";

const AS_TOKEN = "as-token-sdk-00000001";
const HS_TOKEN = "hs-token-sdk-00000001";

/** Storage that also records every transaction ID the SDK was handed (retries included). */
class RecordingStorage extends MemoryStorageProvider {
  readonly txnIdsSeen: string[] = [];
  override isTransactionCompleted(transactionId: string): boolean {
    this.txnIdsSeen.push(transactionId);
    return super.isTransactionCompleted(transactionId);
  }
}

interface BotEvent {
  type: string;
  sender: string;
  state_key?: string;
  event_id: string;
  content: Record<string, unknown>;
}

let t: TestGatehouse;
let remote: RemoteServer;
let bot: Appservice;
let storage: RecordingStorage;
const seen: BotEvent[] = [];

before(async () => {
  LogService.setLevel(LogLevel.ERROR);
  const port = await freePort();
  const registration = {
    id: "sdkbridge",
    url: `http://127.0.0.1:${port}`,
    as_token: AS_TOKEN,
    hs_token: HS_TOKEN,
    sender_localpart: "sdkbot",
    rate_limited: false,
    namespaces: { users: [{ exclusive: true, regex: "@_sdk_.*" }], aliases: [], rooms: [] },
  };
  t = await TestGatehouse.start({
    name: "bridge-sdk",
    registrations: [JSON.stringify(registration)],
    env: {
      GATEHOUSE_APPSERVICE_LEGACY_AUTHORIZATION: "true",
      GATEHOUSE_SENDER_BACKOFF_INITIAL_MS: "100",
      GATEHOUSE_SENDER_BACKOFF_MAX_MS: "300",
      GATEHOUSE_SENDER_BACKOFF_OUTAGE_PERCENT: "0",
    },
  });
  remote = await RemoteServer.start();
  await t.gh.sender.startWorkers();
  storage = new RecordingStorage();
  bot = new Appservice({
    port,
    bindAddress: "127.0.0.1",
    homeserverName: t.serverName,
    homeserverUrl: `http://127.0.0.1:${t.clientPort}`,
    registration,
    storage,
  });
  // The bridge's push handler: record everything; accept every knock (invite the knocker); answer messages.
  bot.on("room.event", (roomId: string, ev: BotEvent) => {
    seen.push(ev);
    if (ev.type === "m.room.member" && ev.content.membership === "knock") {
      void bot.botClient.inviteUser(ev.state_key, roomId);
    }
  });
  bot.on("room.message", (roomId: string, ev: BotEvent) => {
    if (ev.sender !== bot.botUserId && typeof ev.content.body === "string" && ev.content.body.startsWith("ping")) {
      void bot.botIntent.sendText(roomId, `pong: ${ev.content.body}`);
    }
  });
  await bot.begin(); // registers the bot user (POST /register, m.login.application_service)
});

after(async () => {
  bot?.stop();
  await t?.cleanup();
  await remote?.close();
});

async function remoteMessage(roomId: string, sender: string, body: string): Promise<string> {
  const msg = await t.remoteEvent(remote, roomId, { type: "m.room.message", sender, content: { msgtype: "m.text", body } });
  const res = await t.fed(remote, "PUT", `${FED}/v1/send/sdk-${Date.now()}-${Math.random()}`, { origin: remote.serverName, origin_server_ts: Date.now(), pdus: [msg.pdu] });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.deepEqual(res.body.pdus[msg.eventId], {}, JSON.stringify(res.body));
  return msg.eventId;
}

describe("matrix-bot-sdk as the bridge", () => {
  let roomId: string;
  const knocker = () => remote.userId("sdkknocker");

  test("register, create a knock room, accept a knock from the pushed event, see the join, exchange messages", async () => {
    assert.equal(await t.redis.hget(`${t.prefix}:as-users`, "@sdkbot:gatehouse.test"), "sdkbridge", "begin() registered the bot");
    assert.equal(await bot.botClient.getUserId(), "@sdkbot:gatehouse.test", "whoami");
    roomId = await bot.botClient.createRoom({
      preset: "private_chat",
      name: "SDK support",
      initial_state: [{ type: "m.room.join_rules", state_key: "", content: { join_rule: "knock" } }],
    });
    assert.equal((await bot.botClient.getRoomStateEvent(roomId, "m.room.join_rules", "")).join_rule, "knock");

    // A user on another server knocks over federation; the bot's push handler invites them.
    const { eventId: knockId } = await t.knock(remote, roomId, knocker(), { reason: "may I?" });
    await waitFor("the knock pushed to the bot", () => seen.some((e) => e.event_id === knockId), 10_000);
    await waitFor("the bot's invite", async () => (await t.members(roomId))[knocker()] === "invite", 10_000);
    const invited = remote.requests.filter((r) => r.url.startsWith("/_matrix/federation/v2/invite/"));
    assert.ok(invited.length >= 1, "the invite went to the knocker's server over federation");

    const { eventId: joinId } = await t.join(remote, roomId, knocker());
    await waitFor("the join pushed to the bot", () => seen.some((e) => e.event_id === joinId && e.content.membership === "join"), 10_000);

    const pingId = await remoteMessage(roomId, knocker(), "ping 1");
    await waitFor("the message pushed", () => seen.some((e) => e.event_id === pingId), 10_000);
    await waitFor("the bot's answer in the room", () => seen.some((e) => e.sender === bot.botUserId && e.content.body === "pong: ping 1"), 10_000);
    const timeline = await t.store.timeline(roomId);
    const answer = seen.find((e) => e.content.body === "pong: ping 1")!;
    assert.ok(timeline.some((e) => e.eventId === answer.event_id), "the answer is an event of the room");
    // The answer is queued for the knocker's server too (it is joined now).
    assert.ok((await t.redis.sismember(`${t.prefix}:out:destinations`, remote.serverName)) === 1);

    // A namespace user (ghost) through Intent: registered on first use, joins by invite, talks.
    const ghost = bot.getIntentForSuffix("alice");
    await bot.botClient.inviteUser(ghost.userId, roomId);
    await ghost.ensureRegisteredAndJoined(roomId);
    const ghostMsg = await ghost.sendText(roomId, "hi from a ghost");
    assert.equal((await t.members(roomId))[ghost.userId], "join");
    await waitFor("the ghost's message pushed", () => seen.some((e) => e.event_id === ghostMsg), 10_000);
  });

  test("the bot's listener stops for a while: nothing is lost and the same txnId is re-sent", async () => {
    bot.stop();
    const sent = [await remoteMessage(roomId, knocker(), "while you were away 1"), await remoteMessage(roomId, knocker(), "while you were away 2")];
    // The transaction in flight is stored with its txnId; the destination backs off.
    let last: unknown;
    const inFlight = await waitFor(
      "a failed attempt",
      async () => {
        const q = await t.admin.get(`${ADMIN}/queue/${enc("as:sdkbridge")}`);
        last = q.body;
        return q.body.failures >= 2 && q.body.txn_id ? (q.body as { txn_id: string; failures: number }) : null;
      },
      10_000,
    ).catch((e: Error) => assert.fail(`${e.message}: ${JSON.stringify(last)}`));
    assert.ok(!sent.some((id) => seen.some((e) => e.event_id === id)), "nothing arrived while the listener was down");
    await bot.begin();
    await waitFor("both messages after the restart", () => sent.every((id) => seen.some((e) => e.event_id === id)), 15_000);
    assert.ok(storage.txnIdsSeen.includes(inFlight.txn_id), `the stored txnId ${inFlight.txn_id} was re-sent: ${storage.txnIdsSeen.join(",")}`);
    const order = seen.filter((e) => sent.includes(e.event_id)).map((e) => e.event_id);
    assert.deepEqual(order, sent, "in order, each once");
  });
});
