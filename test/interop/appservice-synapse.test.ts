/**
 * Interop: a bridge bot (matrix-bot-sdk's Appservice, registered with Gatehouse) creates a knock
 * room; a user on a real Synapse knocks on it; the bot accepts from its push handler (an invite
 * over /v2/invite to Synapse); the Synapse user joins and talks; the bot answers, and Synapse sees
 * the answer.
 *
 * Run: npm run test:interop (root). Peer "asA": client 27108, federation 27548.
 */
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { Appservice, MemoryStorageProvider, LogService, LogLevel } from "matrix-bot-sdk";
import { startLoopbackGatehouse, type LoopbackGatehouse } from "../../src/dev/loopback.js";
import { freePort } from "../../src/embedded-redis.js";
import { installPeers, interopUnavailable, SynapsePeer, waitFor } from "../support/synapse.js";

const unavailable = interopUnavailable();

interface BotEvent {
  type: string;
  sender: string;
  state_key?: string;
  event_id: string;
  content: Record<string, unknown>;
}

describe("interop: a bridge bot accepts a Synapse user's knock from its push handler", { skip: unavailable ?? false }, () => {
  const hs = new SynapsePeer("asA", 27108, 27548);
  let lb: LoopbackGatehouse;
  let bot: Appservice;
  let dir: string;
  const seen: BotEvent[] = [];

  before(async () => {
    installPeers();
    hs.start();
    LogService.setLevel(LogLevel.ERROR);
    const botPort = await freePort();
    dir = mkdtempSync(join(tmpdir(), "gatehouse-as-interop-"));
    const registration = {
      id: "interopbridge",
      url: `http://127.0.0.1:${botPort}`,
      as_token: randomBytes(18).toString("base64url"),
      hs_token: randomBytes(18).toString("base64url"),
      sender_localpart: "interopbot",
      rate_limited: false,
      namespaces: { users: [{ exclusive: true, regex: "@_interop_.*" }], aliases: [], rooms: [] },
    };
    writeFileSync(join(dir, "registration.yaml"), JSON.stringify(registration));
    lb = await startLoopbackGatehouse({
      label: "as-interop",
      env: {
        REDIS_URL: process.env.REDIS_URL,
        GATEHOUSE_METRICS_LISTEN: "off",
        GATEHOUSE_APPSERVICE_REGISTRATION_FILES: join(dir, "registration.yaml"),
        GATEHOUSE_CLIENT_LISTEN: "127.0.0.1:0",
        GATEHOUSE_APPSERVICE_LEGACY_AUTHORIZATION: "true",
      },
      logLevel: process.env.GATEHOUSE_LOG_LEVEL ?? "warn",
    });
    bot = new Appservice({
      port: botPort,
      bindAddress: "127.0.0.1",
      homeserverName: lb.serverName,
      homeserverUrl: `http://127.0.0.1:${lb.gh.clientPort}`,
      registration,
      storage: new MemoryStorageProvider(),
    });
    bot.on("room.event", (roomId: string, ev: BotEvent) => {
      seen.push(ev);
      if (ev.type === "m.room.member" && ev.content.membership === "knock") void bot.botClient.inviteUser(ev.state_key, roomId);
    });
    bot.on("room.message", (roomId: string, ev: BotEvent) => {
      if (ev.sender !== bot.botUserId && typeof ev.content.body === "string") void bot.botIntent.sendText(roomId, `echo: ${ev.content.body}`);
    });
    await bot.begin();
  });

  after(async () => {
    bot?.stop();
    await lb?.stop();
    hs.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("knock → accepted by the bot → join → messages both ways", async () => {
    const roomId: string = await bot.botClient.createRoom({
      preset: "private_chat",
      name: "Bridge lobby",
      initial_state: [{ type: "m.room.join_rules", state_key: "", content: { join_rule: "knock" } }],
    });
    const user = await hs.user("asknocker");
    const knock = await user.knock(roomId, lb.serverName, "hello bridge");
    assert.equal(knock.status, 200, JSON.stringify(knock.body));
    await waitFor("the knock pushed to the bot", () => seen.some((e) => e.type === "m.room.member" && e.state_key === user.userId && e.content.membership === "knock"));
    await waitFor("Synapse to show the bot's invite", async () => (await user.membershipIn(roomId)) === "invite");
    const joined = await user.join(roomId, lb.serverName);
    assert.equal(joined.status, 200, JSON.stringify(joined.body));
    await waitFor("the join pushed to the bot", () => seen.some((e) => e.state_key === user.userId && e.content.membership === "join"));

    const sent = await user.call("PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/t1`, { msgtype: "m.text", body: "ping from synapse" });
    assert.equal(sent.status, 200, JSON.stringify(sent.body));
    await waitFor("Synapse's message pushed to the bot", () => seen.some((e) => e.event_id === sent.body.event_id));
    const echoed = await waitFor("the bot's answer on Synapse", async () => {
      const r = await user.call("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=10`);
      return (r.body?.chunk ?? []).find((e: BotEvent) => e.sender === bot.botUserId && e.content.body === "echo: ping from synapse") ?? null;
    });
    assert.equal(echoed.type, "m.room.message");
  });
});
