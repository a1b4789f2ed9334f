// X-Matrix request authentication at the federation edge, with keys fetched from fake remotes.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, FED, enc } from "../support/gatehouse.js";
import { RemoteServer, randomKey } from "../support/remote-server.js";
import { signatureOf } from "../../src/protocol/json-signing.js";
import { requestSigningObject, signRequest } from "../../src/protocol/x-matrix.js";

let t: TestGatehouse;
let remote: RemoteServer;
let roomId: string;
let n = 0;

before(async () => {
  t = await TestGatehouse.start({ name: "xmatrix" });
  remote = await RemoteServer.start();
  roomId = await t.createRoom();
});
after(async () => {
  await t.cleanup();
  await remote.close();
});

const makeKnockUri = (ver = "12") => `${FED}/v1/make_knock/${enc(roomId)}/${enc(remote.userId(`u${++n}`))}?ver=${ver}`;
const sendUri = () => `${FED}/v1/send/txn-${Date.now()}-${++n}`;

function assertUnauthorized(res: { status: number; body: Record<string, unknown> }, status = 401) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(res.body.errcode, "M_UNAUTHORIZED", JSON.stringify(res.body));
}

describe("X-Matrix: accepted", () => {
  test("a correctly signed GET with a query string", async () => {
    const res = await t.fed(remote, "GET", makeKnockUri());
    assert.equal(res.status, 200, JSON.stringify(res.body));
  });

  test("a correctly signed PUT with a body", async () => {
    const res = await t.fed(remote, "PUT", sendUri(), { origin: remote.serverName, origin_server_ts: Date.now(), pdus: [] });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body, { pdus: {} });
  });

  test("the raw request target is what is verified (unencoded '!' and ':' signed as sent)", async () => {
    const uri = `${FED}/v1/make_knock/${roomId}/${remote.userId(`raw${++n}`)}?ver=12`;
    const res = await t.fed(remote, "GET", uri);
    assert.equal(res.status, 200, JSON.stringify(res.body));
  });

  test("a header without destination, signed for us, is accepted (old senders)", async () => {
    const uri = makeKnockUri();
    const sig = signatureOf(requestSigningObject({ method: "GET", uri, origin: remote.serverName, destination: t.serverName }), remote.key);
    const res = await t.fed(remote, "GET", uri, undefined, { auth: `X-Matrix origin=${remote.serverName},key="${remote.key.keyId}",sig="${sig}"` });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  });

  test("several headers: one verifiable signature with a known key suffices", async () => {
    const uri = makeKnockUri();
    const good = remote.authHeader("GET", uri, t.serverName);
    const unknownKey = remote.authHeader("GET", uri, t.serverName, undefined, randomKey("ed25519:unpublished"));
    const res = await t.fed(remote, "GET", uri, undefined, { auth: [unknownKey, good] });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  });
});

describe("X-Matrix: rejected", () => {
  test("no Authorization header: 401 M_UNAUTHORIZED", async () => {
    assertUnauthorized(await t.fed(remote, "GET", makeKnockUri(), undefined, { auth: null }));
    assertUnauthorized(await t.fed(remote, "PUT", sendUri(), { pdus: [] }, { auth: null }));
  });

  test("another scheme (Bearer): 401 M_UNAUTHORIZED", async () => {
    assertUnauthorized(await t.fed(remote, "GET", makeKnockUri(), undefined, { auth: "Bearer abcdef" }));
  });

  test("malformed X-Matrix header (no sig): 400 M_UNAUTHORIZED", async () => {
    const res = await t.fed(remote, "GET", makeKnockUri(), undefined, { auth: `X-Matrix origin="${remote.serverName}",key="${remote.key.keyId}"` });
    assertUnauthorized(res, 400);
  });

  test("wrong key: a different private key under the published key ID: 401", async () => {
    const uri = makeKnockUri();
    const res = await t.fed(remote, "GET", uri, undefined, { auth: remote.authHeader("GET", uri, t.serverName, undefined, randomKey(remote.key.keyId)) });
    assertUnauthorized(res);
    assert.match(res.body.error, /Invalid X-Matrix signature/);
  });

  test("a key ID the origin does not publish: 401", async () => {
    const uri = makeKnockUri();
    const res = await t.fed(remote, "GET", uri, undefined, { auth: remote.authHeader("GET", uri, t.serverName, undefined, randomKey("ed25519:nosuchkey")) });
    assertUnauthorized(res);
  });

  test("tampered body: 401", async () => {
    const uri = sendUri();
    const signedFor = { origin: remote.serverName, origin_server_ts: 1, pdus: [] };
    const res = await t.fed(remote, "PUT", uri, { ...signedFor, origin_server_ts: 2 }, { auth: remote.authHeader("PUT", uri, t.serverName, signedFor) });
    assertUnauthorized(res);
  });

  test("body sent where none was signed: 401", async () => {
    const uri = sendUri();
    const res = await t.fed(remote, "PUT", uri, { pdus: [] }, { auth: remote.authHeader("PUT", uri, t.serverName) });
    assertUnauthorized(res);
  });

  test("tampered URI (query string and path): 401", async () => {
    const signed = makeKnockUri("12");
    const sent = signed.replace("ver=12", "ver=11&ver=12");
    assertUnauthorized(await t.fed(remote, "GET", sent, undefined, { auth: remote.authHeader("GET", signed, t.serverName) }));
    const s1 = sendUri();
    const s2 = sendUri();
    assertUnauthorized(await t.fed(remote, "PUT", s2, { pdus: [] }, { auth: remote.authHeader("PUT", s1, t.serverName, { pdus: [] }) }));
  });

  test("percent-encoding is part of the signed URI: signed encoded, sent raw: 401", async () => {
    const user = remote.userId(`enc${++n}`);
    const signed = `${FED}/v1/make_knock/${enc(roomId)}/${enc(user)}?ver=12`;
    const sent = `${FED}/v1/make_knock/${roomId}/${user}?ver=12`;
    assertUnauthorized(await t.fed(remote, "GET", sent, undefined, { auth: remote.authHeader("GET", signed, t.serverName) }));
  });

  test("tampered method: 401", async () => {
    const uri = sendUri();
    const res = await t.fed(remote, "PUT", uri, { pdus: [] }, { auth: remote.authHeader("POST", uri, t.serverName, { pdus: [] }) });
    assertUnauthorized(res);
  });

  test("wrong destination: 401", async () => {
    const uri = makeKnockUri();
    const res = await t.fed(remote, "GET", uri, undefined, { auth: remote.authHeader("GET", uri, "someone-else.example") });
    assertUnauthorized(res);
    assert.match(res.body.error, /not to this server/);
  });

  test("no destination in the header, but signed for another server: 401", async () => {
    const uri = makeKnockUri();
    const sig = signatureOf(requestSigningObject({ method: "GET", uri, origin: remote.serverName, destination: "someone-else.example" }), remote.key);
    const res = await t.fed(remote, "GET", uri, undefined, { auth: `X-Matrix origin="${remote.serverName}",key="${remote.key.keyId}",sig="${sig}"` });
    assertUnauthorized(res);
  });

  test("origin that cannot be reached (key fetch fails): 401", async () => {
    const key = randomKey();
    const uri = makeKnockUri();
    const auth = signRequest({ method: "GET", uri, origin: "127.0.0.1:1", destination: t.serverName, key });
    const res = await t.fed(remote, "GET", uri, undefined, { auth });
    assertUnauthorized(res);
    assert.match(res.body.error, /Failed to find any key/);
  });

  test("origin that publishes no keys (404 on the key endpoint): 401", async () => {
    const keyless = await RemoteServer.start();
    try {
      keyless.serveKeys = false;
      const res = await t.fed(keyless, "GET", makeKnockUri());
      assertUnauthorized(res);
      assert.ok(keyless.requestsTo("/_matrix/key/v2/server").length >= 1, "Gatehouse did not try to fetch the key");
    } finally {
      await keyless.close();
    }
  });

  test("origin whose key document has expired (not valid for requests now): 401", async () => {
    const stale = await RemoteServer.start();
    try {
      stale.keyValidityMs = -60_000;
      const res = await t.fed(stale, "GET", `${FED}/v1/make_knock/${enc(roomId)}/${enc(stale.userId("u"))}?ver=12`);
      assertUnauthorized(res);
      assert.ok(stale.requestsTo("/_matrix/key/v2/server").length >= 1);
    } finally {
      await stale.close();
    }
  });

  test("several headers: two different signatures for the same key ID: 400 M_UNAUTHORIZED", async () => {
    const uri = makeKnockUri();
    const good = remote.authHeader("GET", uri, t.serverName);
    const forged = remote.authHeader("GET", uri, t.serverName, undefined, randomKey(remote.key.keyId));
    // Same key ID, two different signatures.
    assertUnauthorized(await t.fed(remote, "GET", uri, undefined, { auth: [good, forged] }), 400);
  });

  test("several headers naming different origins: 400 M_UNAUTHORIZED", async () => {
    const other = await RemoteServer.start();
    try {
      const uri = makeKnockUri();
      const res = await t.fed(remote, "GET", uri, undefined, { auth: [remote.authHeader("GET", uri, t.serverName), other.authHeader("GET", uri, t.serverName)] });
      assertUnauthorized(res, 400);
    } finally {
      await other.close();
    }
  });

  test("a signature from a second, unpublished key of a known origin next to a forged one: 401", async () => {
    const uri = makeKnockUri();
    const forged = remote.authHeader("GET", uri, t.serverName, undefined, randomKey(remote.key.keyId));
    const unknownKey = remote.authHeader("GET", uri, t.serverName, undefined, randomKey("ed25519:other"));
    assertUnauthorized(await t.fed(remote, "GET", uri, undefined, { auth: [unknownKey, forged] }));
  });

  test("unauthenticated requests to room endpoints never reach the handler (nothing written)", async () => {
    const before = await t.dump();
    await t.fed(remote, "PUT", `${FED}/v1/send_knock/${enc(roomId)}/$x`, { type: "m.room.member" }, { auth: null });
    const txnId = `unauth-${++n}`;
    await t.fed(remote, "PUT", `${FED}/v1/send/${txnId}`, { pdus: [] }, { auth: null });
    assert.deepEqual(await t.dump(), before);
    // And no transaction response was cached for an unauthenticated /send.
    assert.equal(await t.redis.exists(t.gh.keys.inboundTxn(remote.serverName, txnId)), 0);
  });
});
