/**
 * Rate limits hold in Redis: per requesting server over every federation endpoint, and per hosted
 * room for knocks. Over the limit: 429 M_LIMIT_EXCEEDED with retry_after_ms and Retry-After, and
 * the bucket refills with time.
 */
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, FED, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";

describe("rate limits", () => {
  let gh: TestGatehouse;
  let remote: RemoteServer;
  let other: RemoteServer;
  let roomId: string;

  before(async () => {
    remote = await RemoteServer.start();
    other = await RemoteServer.start();
    gh = await TestGatehouse.start({
      name: "ratelimit",
      env: {
        GATEHOUSE_RATELIMIT_ORIGIN_PER_SECOND: "2",
        GATEHOUSE_RATELIMIT_ORIGIN_BURST: "5",
        GATEHOUSE_RATELIMIT_KNOCKS_PER_ROOM_PER_SECOND: "1",
        GATEHOUSE_RATELIMIT_KNOCKS_PER_ROOM_BURST: "3",
      },
    });
    roomId = await gh.createRoom({ join_rule: "knock" });
  });
  after(async () => {
    await gh.cleanup();
    await remote.close();
    await other.close();
  });

  // The buckets refill while the requests run, so each test sends its requests concurrently and
  // allows for what refilled during them: between `burst` and `burst + refilled` pass, the rest
  // are refused. (A machine under load takes longer, and more pass; never fewer.)
  const passed = (statuses: number[]) => statuses.filter((s) => s !== 429).length;
  const refilled = (startedMs: number, perSecond: number) => Math.ceil(((Date.now() - startedMs) / 1000) * perSecond);

  test("per origin: a burst passes, then 429 M_LIMIT_EXCEEDED with retry_after_ms and Retry-After; other origins are unaffected", async () => {
    const uri = `${FED}/v1/state_ids/${enc(roomId)}?event_id=${enc("$nope")}`;
    const started = Date.now();
    const responses = await Promise.all(Array.from({ length: 16 }, () => gh.fed(remote, "GET", uri)));
    const statuses = responses.map((r) => r.status);
    const most = 5 + refilled(started, 2);
    assert.ok(passed(statuses) >= 5 && passed(statuses) <= most, `the burst of 5 (and at most ${most - 5} refilled) passes: ${statuses.join(",")}`);
    const limited = responses.find((r) => r.status === 429);
    assert.ok(limited, "then requests are limited");
    assert.equal(limited.body.errcode, "M_LIMIT_EXCEEDED");
    assert.ok(limited.body.retry_after_ms > 0 && limited.body.retry_after_ms <= 500, String(limited.body.retry_after_ms));
    assert.equal(limited.headers["retry-after"], "1");
    const fromOther = await gh.fed(other, "GET", uri);
    assert.notEqual(fromOther.status, 429, "another server has its own bucket");
    await new Promise((r) => setTimeout(r, limited.body.retry_after_ms + 50));
    assert.notEqual((await gh.fed(remote, "GET", uri)).status, 429, "refilled after retry_after_ms");
  });

  test("per room: knocks on one room are limited whoever sends them", async () => {
    const knockers = await Promise.all(Array.from({ length: 10 }, () => RemoteServer.start()));
    try {
      const started = Date.now();
      const statuses = (await Promise.all(knockers.map((k) => gh.fed(k, "GET", `${FED}/v1/make_knock/${enc(roomId)}/${enc(k.userId("x"))}?ver=12`)))).map((r) => r.status);
      const most = 3 + refilled(started, 1);
      assert.ok(statuses.every((s) => s === 200 || s === 429), statuses.join(","));
      assert.ok(passed(statuses) >= 3 && passed(statuses) <= most, `a burst of 3 per room (and at most ${most - 3} refilled), across ten different servers: ${statuses.join(",")}`);
      assert.ok(statuses.includes(429), "the others are limited, though each server is within its own limit");
    } finally {
      await Promise.all(knockers.map((k) => k.close()));
    }
  });
});
