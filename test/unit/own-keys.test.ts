/** Own signing keys: created on first start, rotated with the old key kept in old_verify_keys. */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadOrCreateSigningKeys, OwnKeys, parseOldVerifyKeys, rotateSigningKey } from "../../src/keys/own-keys.js";
import { parseKeyDocument } from "../../src/keys/remote-keys.js";
import { parseSigningKeyFile } from "../../src/protocol/signing-key.js";

describe("own signing keys", () => {
  test("first start creates a Synapse-format key file readable only by the owner; later starts keep it", () => {
    const dir = mkdtempSync(join(tmpdir(), "gatehouse-keys-"));
    try {
      const file = join(dir, "signing.key");
      const first = loadOrCreateSigningKeys(file);
      assert.equal(first.created, true);
      assert.match(readFileSync(file, "utf8"), /^ed25519 a_[A-Za-z0-9]{4} [A-Za-z0-9+/]{43}\n$/);
      assert.equal(statSync(file).mode & 0o777, 0o600);
      const again = loadOrCreateSigningKeys(file);
      assert.equal(again.created, false);
      assert.equal(again.keys[0]!.keyId, first.keys[0]!.keyId);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("rotation: a new signing key; the old one published in old_verify_keys with expired_ts; the document still verifies", () => {
    const dir = mkdtempSync(join(tmpdir(), "gatehouse-keys-"));
    try {
      const file = join(dir, "signing.key");
      const oldFile = join(dir, "old_signing.keys");
      const before = loadOrCreateSigningKeys(file).keys[0]!;
      const { current, retired } = rotateSigningKey(file, oldFile, 1_700_000_000_000);
      assert.notEqual(current.keyId, before.keyId);
      assert.deepEqual(retired, [{ keyId: before.keyId, publicKeyBase64: before.publicKeyBase64, expiredTs: 1_700_000_000_000 }]);
      assert.deepEqual(parseSigningKeyFile(readFileSync(file, "utf8")).map((k) => k.keyId), [current.keyId]);
      const old = parseOldVerifyKeys(readFileSync(oldFile, "utf8"));
      const second = rotateSigningKey(file, oldFile, 1_800_000_000_000);
      assert.equal(parseOldVerifyKeys(readFileSync(oldFile, "utf8")).length, 2, "retired keys accumulate");

      const own = new OwnKeys("gatehouse.test", [second.current], parseOldVerifyKeys(readFileSync(oldFile, "utf8")), 3600_000);
      const { doc } = own.keyDocument(Date.now());
      assert.deepEqual(Object.keys(doc.verify_keys as object), [second.current.keyId]);
      assert.deepEqual((doc.old_verify_keys as Record<string, { expired_ts: number }>)[before.keyId], { key: before.publicKeyBase64, expired_ts: 1_700_000_000_000 });
      assert.equal(old.length, 1);
      const parsed = parseKeyDocument(doc, "gatehouse.test", Date.now());
      assert.ok(parsed.ok, "a fetcher accepts the rotated document");
      assert.equal(parsed.keys[before.keyId]?.expiredTs, 1_700_000_000_000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the key document is cached until half its validity has passed, then re-signed", () => {
    const dir = mkdtempSync(join(tmpdir(), "gatehouse-keys-"));
    try {
      const key = loadOrCreateSigningKeys(join(dir, "signing.key")).keys[0]!;
      const own = new OwnKeys("gatehouse.test", [key], [], 1000);
      const a = own.keyDocument(0);
      assert.equal(own.keyDocument(499).body, a.body);
      const b = own.keyDocument(501);
      assert.notEqual(b.body, a.body);
      assert.equal((b.doc.valid_until_ts as number) - 501, 1000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
