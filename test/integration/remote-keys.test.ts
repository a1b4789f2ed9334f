/**
 * Remote key fetching against real HTTPS key endpoints and a real Redis: direct fetch, Redis and
 * memory caching, validity rules for requests vs events (7-day clamp, old_verify_keys), the
 * failure cooldown, and notary fallback (the notary's own signature is required).
 */
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import type { Redis } from "ioredis";
import { connectRedis } from "../../src/server.js";
import { randomBytes } from "node:crypto";
import { RemoteKeys, parseKeyDocument, effectiveValidUntil } from "../../src/keys/remote-keys.js";
import { RedisKeys } from "../../src/store/redis-keys.js";
import { FederationClient } from "../../src/net/federation-client.js";
import { createLogger } from "../../src/logger.js";
import { makeSigningKey } from "../../src/protocol/signing-key.js";
import { signJson, verifySignature } from "../../src/protocol/json-signing.js";
import { nodeEd25519 } from "../../src/protocol/ed25519.js";
import { RemoteServer } from "../support/remote-server.js";
import { deletePrefix, requireRedisUrl } from "../support/gatehouse.js";

const DAY = 24 * 3600_000;

describe("remote keys", () => {
  let redis: Redis;
  let origin: RemoteServer;
  let notary: RemoteServer;
  const prefix = `ghtest:keys:${randomBytes(4).toString("hex")}`;
  const keys = new RedisKeys(prefix);
  const ourKey = makeSigningKey("ed25519:us", randomBytes(32));
  let client: FederationClient;
  const logger = createLogger("silent");

  const make = (trusted: string[] = [], now = Date.now) =>
    new RemoteKeys({ redis, keys, client, trustedKeyServers: trusted, ownServerName: "gatehouse.test", ownKeys: () => ({}), logger, now });

  before(async () => {
    redis = connectRedis(requireRedisUrl(), { redisOptions: { maxRetriesPerRequest: 20 } });
    origin = await RemoteServer.start();
    notary = await RemoteServer.start();
    client = new FederationClient({ serverName: "gatehouse.test", signingKey: ourKey, insecureSkipTlsVerify: true, allowPrivateAddresses: true, timeoutMs: 5000 });
  });
  after(async () => {
    client.close();
    await origin.close();
    await notary.close();
    await deletePrefix(redis, prefix);
    redis.disconnect();
  });

  test("fetches from the origin, caches in Redis: a new process does not fetch again", async () => {
    const outcomes: string[] = [];
    const rk = new RemoteKeys({ redis, keys, client, trustedKeyServers: [], ownServerName: "gatehouse.test", ownKeys: () => ({}), logger, onFetch: (o) => outcomes.push(o) });
    const found = await rk.getVerifier(origin.serverName, origin.key.keyId);
    assert.ok(found);
    assert.equal(found.record.key, origin.key.publicKeyBase64);
    assert.ok(await redis.hget(keys.serverKeys(origin.serverName), origin.key.keyId));
    const fetchesBefore = origin.requestsTo("/_matrix/key/v2/server").length;
    assert.ok(await rk.getVerifier(origin.serverName, origin.key.keyId), "memory hit");
    assert.ok(await make().getVerifier(origin.serverName, origin.key.keyId), "Redis hit in a fresh instance");
    assert.equal(origin.requestsTo("/_matrix/key/v2/server").length, fetchesBefore);
    assert.deepEqual(outcomes, ["miss", "hit"]);
  });

  test("unknown key IDs refetch a known server at most once per 10 s", async () => {
    let t = Date.now();
    const rk = make([], () => t);
    const asked = () => origin.requestsTo("/_matrix/key/v2/server").length;
    const before = asked();
    assert.equal(await rk.getVerifier(origin.serverName, "ed25519:nope1"), undefined);
    assert.equal(asked(), before + 1, "one refetch for an unknown key");
    for (let i = 2; i < 10; i++) assert.equal(await rk.getVerifier(origin.serverName, `ed25519:nope${i}`), undefined);
    assert.equal(asked(), before + 1, "no refetch storm");
    t += 10_001;
    assert.equal(await rk.getVerifier(origin.serverName, "ed25519:nope10"), undefined);
    assert.equal(asked(), before + 2, "refetched once the interval passed (key rotations are picked up)");
  });

  test("validity: requests need a currently valid verify key; events use min(valid_until_ts, fetched + 7 days)", () => {
    const fetchedTs = 1_000_000;
    const doc = signJson({ server_name: origin.serverName, verify_keys: { [origin.key.keyId]: { key: origin.key.publicKeyBase64 } }, valid_until_ts: fetchedTs + 30 * DAY }, origin.serverName, origin.key);
    const parsed = parseKeyDocument(doc, origin.serverName, fetchedTs);
    assert.ok(parsed.ok);
    assert.equal(effectiveValidUntil(parsed.keys[origin.key.keyId]!), fetchedTs + 7 * DAY, "a 30-day validity is clamped to 7 days");
  });

  test("key documents must be self-signed and name the right server", () => {
    const unsigned = { server_name: origin.serverName, verify_keys: { [origin.key.keyId]: { key: origin.key.publicKeyBase64 } }, valid_until_ts: Date.now() + DAY };
    assert.equal(parseKeyDocument(unsigned, origin.serverName, Date.now()).ok, false);
    const other = makeSigningKey("ed25519:other", randomBytes(32));
    const wrongSigner = signJson(unsigned, origin.serverName, other);
    assert.equal(parseKeyDocument(wrongSigner, origin.serverName, Date.now()).ok, false, "signed by a key not in the document");
    const renamed = signJson({ ...unsigned, server_name: "evil.example" }, "evil.example", origin.key);
    assert.equal(parseKeyDocument(renamed, origin.serverName, Date.now()).ok, false);
  });

  test("old_verify_keys verify events from before expired_ts, never requests", async () => {
    const old = makeSigningKey("ed25519:old", randomBytes(32));
    const expiredTs = Date.now() - 3600_000;
    const server = await RemoteServer.start();
    server.extraRoutes = (req) =>
      req.url.startsWith("/_matrix/key/v2/server")
        ? [200, signJson({ server_name: server.serverName, verify_keys: { [server.key.keyId]: { key: server.key.publicKeyBase64 } }, old_verify_keys: { [old.keyId]: { key: old.publicKeyBase64, expired_ts: expiredTs } }, valid_until_ts: Date.now() + DAY }, server.serverName, server.key)]
        : null;
    try {
      const rk = make();
      assert.equal(await rk.getVerifier(server.serverName, old.keyId), undefined, "not for requests");
      assert.ok(await rk.getVerifier(server.serverName, old.keyId, expiredTs - 1000, true), "for an event before expiry");
      assert.equal(await rk.getVerifier(server.serverName, old.keyId, expiredTs + 1000, true), undefined, "not for an event after expiry");
    } finally {
      await server.close();
    }
  });

  test("an unreachable origin falls back to the notary, whose signature is required", async () => {
    const down = await RemoteServer.start();
    const downName = down.serverName;
    const downDoc = down.keyDocument();
    down.serveKeys = false;
    let notarySigns = true;
    notary.extraRoutes = (req) => {
      if (req.method === "POST" && req.url === "/_matrix/key/v2/query") {
        const wanted = Object.keys((req.body as { server_keys: Record<string, unknown> }).server_keys);
        assert.deepEqual(wanted, [downName]);
        return [200, { server_keys: [notarySigns ? signJson(downDoc, notary.serverName, notary.key) : downDoc] }];
      }
      return null;
    };
    try {
      const outcomes: string[] = [];
      const rk = new RemoteKeys({ redis, keys, client, trustedKeyServers: [notary.serverName], ownServerName: "gatehouse.test", ownKeys: () => ({}), logger, onFetch: (o) => outcomes.push(o) });
      const found = await rk.getVerifier(downName, down.key.keyId);
      assert.ok(found, "found through the notary");
      assert.ok(outcomes.includes("notary"));

      await redis.del(keys.serverKeys(downName));
      notarySigns = false;
      const strict = make([notary.serverName]);
      assert.equal(await strict.getVerifier(downName, down.key.keyId), undefined, "an unsigned notary answer is refused");
    } finally {
      notary.extraRoutes = null;
      await down.close();
    }
  });

  test("after a failed fetch the server is not asked again for 30 s (cooldown)", async () => {
    const flaky = await RemoteServer.start();
    flaky.serveKeys = false;
    let t = Date.now();
    const rk = make([], () => t);
    try {
      assert.equal(await rk.getVerifier(flaky.serverName, flaky.key.keyId), undefined);
      const asked = flaky.requestsTo("/_matrix/key/v2/server").length;
      flaky.serveKeys = true;
      assert.equal(await rk.getVerifier(flaky.serverName, flaky.key.keyId), undefined, "still cooling down");
      assert.equal(flaky.requestsTo("/_matrix/key/v2/server").length, asked);
      t += 31_000;
      assert.ok(await rk.getVerifier(flaky.serverName, flaky.key.keyId), "asked again after the cooldown");
    } finally {
      await flaky.close();
    }
  });

  test("own keys: one key import per key, not per lookup; a rotated key gets its own verifier (why: own-server signatures are checked on every event we signed)", async () => {
    let imports = 0;
    const counting = { ...nodeEd25519, verifier: (pk: Uint8Array) => (imports++, nodeEd25519.verifier(pk)) };
    let current = ourKey;
    const rk = new RemoteKeys({
      redis, keys, client, trustedKeyServers: [], ownServerName: "gatehouse.test", logger, ed25519: counting,
      ownKeys: () => ({ [current.keyId]: { key: current.publicKeyBase64, validUntilTs: Date.now() + DAY, fetchedTs: Date.now() } }),
    });
    const signed = signJson({ hello: "own" }, "gatehouse.test", ourKey);
    const sig = (signed.signatures["gatehouse.test"] as Record<string, string>)[ourKey.keyId]!;
    for (let i = 0; i < 5; i++) {
      const found = await rk.getVerifier("gatehouse.test", ourKey.keyId);
      assert.ok(found && verifySignature(signed, sig, found.verifier));
    }
    assert.equal(imports, 1);
    // Rotation under the same key ID (a new key file): the new key is imported and used.
    current = makeSigningKey(ourKey.keyId, randomBytes(32));
    const rotated = await rk.getVerifier("gatehouse.test", ourKey.keyId);
    assert.ok(rotated);
    assert.equal(imports, 2);
    assert.equal(verifySignature(signed, sig, rotated.verifier), false, "the old key's signature does not verify with the new key");
  });

  test("concurrent lookups for one server share one fetch", async () => {
    const fresh = await RemoteServer.start();
    try {
      const rk = make();
      const results = await Promise.all(Array.from({ length: 10 }, () => rk.getVerifier(fresh.serverName, fresh.key.keyId)));
      assert.ok(results.every(Boolean));
      assert.equal(fresh.requestsTo("/_matrix/key/v2/server").length, 1);
    } finally {
      await fresh.close();
    }
  });
});
