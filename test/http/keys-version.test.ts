// GET /_matrix/key/v2/server (and the legacy /{keyId} form) and GET /_matrix/federation/v1/version.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync, mkdtempSync, rmSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TestGatehouse } from "../support/gatehouse.js";
import { randomKey } from "../support/remote-server.js";
import { verifySignedJson } from "../../src/protocol/json-signing.js";
import { defaultEd25519 } from "../../src/protocol/ed25519.js";
import { decodeBase64 } from "../../src/protocol/base64.js";
import { parseKeyDocument } from "../../src/keys/remote-keys.js";

const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };

describe("key document and version", () => {
  let t: TestGatehouse;
  let oldDir: string;
  const oldKey = randomKey("ed25519:old1");
  const expiredTs = 1_700_000_000_000;

  before(async () => {
    oldDir = mkdtempSync(join(tmpdir(), "gatehouse-oldkeys-"));
    const oldFile = join(oldDir, "old.keys");
    writeFileSync(oldFile, `# retired\ned25519 old1 ${oldKey.publicKeyBase64} ${expiredTs}\n`);
    t = await TestGatehouse.start({ name: "keys", serverName: "keys.gatehouse.test", env: { GATEHOUSE_OLD_SIGNING_KEYS_FILE: oldFile, GATEHOUSE_KEY_VALIDITY_HOURS: "12" } });
  });
  after(async () => {
    await t.cleanup();
    rmSync(oldDir, { recursive: true, force: true });
  });

  function checkDocument(doc: Record<string, unknown>) {
    const key = t.ownKeys.current;
    assert.equal(doc.server_name, "keys.gatehouse.test");
    assert.deepEqual(doc.verify_keys, { [key.keyId]: { key: key.publicKeyBase64 } });
    assert.deepEqual(doc.old_verify_keys, { "ed25519:old1": { key: oldKey.publicKeyBase64, expired_ts: expiredTs } });
    const now = Date.now();
    const validUntil = doc.valid_until_ts as number;
    assert.ok(Number.isInteger(validUntil));
    // GATEHOUSE_KEY_VALIDITY_HOURS=12: valid for 12 h from now (a little slack for the test's own runtime).
    assert.ok(validUntil > now + 11.9 * 3600_000 && validUntil <= now + 12 * 3600_000 + 1000, `valid_until_ts ${validUntil}`);
    // Self-signed with the published key: verify with the key from the document ...
    const published = decodeBase64((doc.verify_keys as Record<string, { key: string }>)[key.keyId]!.key)!;
    const check = verifySignedJson(doc, "keys.gatehouse.test", (entity, keyId) =>
      entity === "keys.gatehouse.test" && keyId === key.keyId ? defaultEd25519.verifier(published) : undefined,
    );
    assert.deepEqual(check, { ok: true, keyId: key.keyId });
    // ... and with the fetcher's own document check, as a remote server would.
    const parsed = parseKeyDocument(doc, "keys.gatehouse.test", now);
    assert.equal(parsed.ok, true);
    // A tampered document no longer verifies.
    const tampered = parseKeyDocument({ ...doc, valid_until_ts: validUntil + 1 }, "keys.gatehouse.test", now);
    assert.equal(tampered.ok, false);
  }

  test("GET /_matrix/key/v2/server: valid, self-signed, no authentication needed", async () => {
    const res = await t.plain("GET", "/_matrix/key/v2/server");
    assert.equal(res.status, 200);
    assert.match(res.headers["content-type"] ?? "", /application\/json/);
    checkDocument(res.body);
  });

  test("legacy GET /_matrix/key/v2/server/{keyId} answers the same document", async () => {
    const a = await t.plain("GET", "/_matrix/key/v2/server");
    const b = await t.plain("GET", `/_matrix/key/v2/server/${encodeURIComponent(t.ownKeys.current.keyId)}`);
    assert.equal(b.status, 200);
    checkDocument(b.body);
    assert.deepEqual(b.body, a.body);
  });

  test("an Authorization header on the key endpoint is ignored, not rejected", async () => {
    const res = await t.plain("GET", "/_matrix/key/v2/server").set("Authorization", 'X-Matrix origin="nobody.example",key="ed25519:x",sig="AAAA"');
    assert.equal(res.status, 200);
    checkDocument(res.body);
  });

  test("GET /_matrix/federation/v1/version: name and package version, unauthenticated", async () => {
    const res = await t.plain("GET", "/_matrix/federation/v1/version");
    assert.equal(res.status, 200);
    assert.match(res.headers["content-type"] ?? "", /application\/json/);
    assert.deepEqual(res.body, { server: { name: "Gatehouse", version: pkg.version } });
  });

  test("admin GET /server reports the same signing key", async () => {
    const res = await t.admin.get("/_gatehouse/admin/v1/server");
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { server_name: "keys.gatehouse.test", signing_key_id: t.ownKeys.current.keyId, public_key: t.ownKeys.current.publicKeyBase64 });
  });

  test("unknown key path: 404 M_UNRECOGNIZED", async () => {
    const res = await t.plain("GET", "/_matrix/key/v2/nothing");
    assert.equal(res.status, 404);
    assert.equal(res.body.errcode, "M_UNRECOGNIZED");
  });
});
