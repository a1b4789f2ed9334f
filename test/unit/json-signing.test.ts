import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { signJson, signedBytes, verifySignature, verifySignedJson, type VerifierLookup } from "../../src/protocol/json-signing.js";
import { nodeEd25519, tweetnaclEd25519, type Ed25519 } from "../../src/protocol/ed25519.js";
import { decodeBase64, encodeBase64 } from "../../src/protocol/base64.js";
import { formatSigningKeyFile, makeSigningKey, parseSigningKeyFile, type SigningKey } from "../../src/protocol/signing-key.js";
import { canonicalJson } from "../../src/protocol/canonical-json.js";
import { loadVectors } from "../support/vectors.js";

const vectors = loadVectors("signing");
const seed = decodeBase64(vectors.key.seed_base64)!;
const IMPLS: Ed25519[] = [nodeEd25519, tweetnaclEd25519];

function lookupFor(impl: Ed25519, ...entries: [server: string, key: SigningKey][]): VerifierLookup {
  return (entity, keyId) => {
    for (const [server, key] of entries) if (server === entity && key.keyId === keyId) return impl.verifier(key.publicKey);
    return undefined;
  };
}

/** Deterministic bytes so that failures reproduce (sha256 counter mode). */
function pseudoRandom(n: number, label: string): Uint8Array {
  const out = Buffer.alloc(n);
  for (let i = 0, off = 0; off < n; i++) off += createHash("sha256").update(`${label}:${i}`).digest().copy(out, off);
  return new Uint8Array(out);
}

describe("JSON signing: spec vectors", () => {
  for (const impl of IMPLS) {
    const key = makeSigningKey(vectors.key.key_id, seed, impl);
    test(`${impl.name}: public key derived from the spec seed`, () => {
      assert.equal(key.publicKeyBase64, vectors.key.public_key_base64);
    });
    for (const c of vectors.cases as any[]) {
      test(`${impl.name}: ${c.name}`, () => {
        const snapshot = canonicalJson(c.input);
        assert.equal(signedBytes(c.input).toString("utf8"), c.signed_bytes);
        const signed = signJson(c.input, vectors.key.server_name, key);
        assert.deepEqual(signed, c.expected_output);
        assert.equal(canonicalJson(c.input), snapshot, "input untouched");
        for (const verifyImpl of IMPLS) {
          assert.deepEqual(verifySignedJson(signed, "domain", lookupFor(verifyImpl, ["domain", key])), { ok: true, keyId: "ed25519:1" });
        }
      });
    }
  }
  test("tweetnacl secret key is seed || public key", () => {
    const pk = decodeBase64(vectors.key.public_key_base64)!;
    assert.equal(Buffer.concat([seed, pk]).toString("hex"), vectors.key.tweetnacl_secret_key_hex);
    assert.equal(Buffer.from(seed).toString("hex"), vectors.key.seed_hex);
  });
});

describe("ed25519: node:crypto and tweetnacl agree", () => {
  test("byte-identical signatures over varied messages and keys; each verifies the other's", () => {
    for (let i = 0; i < 40; i++) {
      const keySeed = pseudoRandom(32, `seed${i}`);
      const message = pseudoRandom(i * 37, `msg${i}`);
      const a = nodeEd25519.signer(keySeed);
      const b = tweetnaclEd25519.signer(keySeed);
      assert.deepEqual(Buffer.from(a.publicKey), Buffer.from(b.publicKey));
      const sa = a.sign(message);
      const sb = b.sign(message);
      assert.equal(Buffer.from(sa).toString("hex"), Buffer.from(sb).toString("hex"));
      assert.ok(tweetnaclEd25519.verifier(a.publicKey).verify(message, sa));
      assert.ok(nodeEd25519.verifier(b.publicKey).verify(message, sb));
      // A flipped bit must fail in both.
      const bad = new Uint8Array(sa);
      bad[i % 64]! ^= 1;
      assert.ok(!nodeEd25519.verifier(a.publicKey).verify(message, bad));
      assert.ok(!tweetnaclEd25519.verifier(a.publicKey).verify(message, bad));
    }
  });
  test("both reject wrong-length keys, seeds and signatures", () => {
    for (const impl of IMPLS) {
      assert.throws(() => impl.signer(new Uint8Array(31)));
      assert.throws(() => impl.verifier(new Uint8Array(33)));
      assert.equal(impl.verifier(nodeEd25519.signer(seed).publicKey).verify(new Uint8Array(1), new Uint8Array(63)), false);
    }
  });
});

describe("JSON signing: behaviour", () => {
  const a1 = makeSigningKey("ed25519:a1", pseudoRandom(32, "a1"));
  const a2 = makeSigningKey("ed25519:a2", pseudoRandom(32, "a2"));
  const b1 = makeSigningKey("ed25519:b1", pseudoRandom(32, "b1"));
  const object = { method: "GET", uri: "/x", origin: "a.example", content: { n: [1, 2, { "ü": "😀" }] } };

  test("signJson never mutates its input (deep-frozen input)", () => {
    const input = structuredClone({ ...object, signatures: { "c.example": { "ed25519:c": "sig" } }, unsigned: { age: 1 } });
    const deepFreeze = (o: any): any => {
      Object.freeze(o);
      for (const v of Object.values(o)) if (typeof v === "object" && v !== null) deepFreeze(v);
      return o;
    };
    deepFreeze(input);
    const snapshot = canonicalJson(input);
    const signed = signJson(input, "a.example", a1);
    assert.equal(canonicalJson(input), snapshot);
    assert.deepEqual(signed.unsigned, { age: 1 });
    assert.deepEqual(Object.keys(signed.signatures).sort(), ["a.example", "c.example"]);
  });
  test("multiple signers and multiple keys per signer all verify", () => {
    let signed = signJson(object, "a.example", a1);
    signed = signJson(signed, "a.example", a2);
    signed = signJson(signed, "b.example", b1);
    assert.deepEqual(Object.keys(signed.signatures["a.example"]!).sort(), ["ed25519:a1", "ed25519:a2"]);
    const all = lookupFor(nodeEd25519, ["a.example", a1], ["a.example", a2], ["b.example", b1]);
    assert.ok(verifySignedJson(signed, "a.example", all).ok);
    assert.ok(verifySignedJson(signed, "b.example", all).ok);
    // Knowing only one of a.example's keys is enough.
    assert.deepEqual(verifySignedJson(signed, "a.example", lookupFor(nodeEd25519, ["a.example", a2])), { ok: true, keyId: "ed25519:a2" });
    // Signature order does not matter: each covers the same bytes.
    assert.equal(signed.signatures["a.example"]!["ed25519:a1"], signJson(object, "a.example", a1).signatures["a.example"]!["ed25519:a1"]);
  });
  test("a known key with a bad signature fails even if another key is good", () => {
    const signed = structuredClone(signJson(signJson(object, "a.example", a1), "a.example", a2));
    signed.signatures["a.example"]!["ed25519:a1"] = signed.signatures["a.example"]!["ed25519:a2"]!;
    const check = verifySignedJson(signed, "a.example", lookupFor(nodeEd25519, ["a.example", a1], ["a.example", a2]));
    assert.deepEqual(check, { ok: false, reason: "bad signature by a.example with ed25519:a1" });
  });
  test("tampered objects fail; unsigned and other signatures are not covered", () => {
    const signed = signJson(object, "a.example", a1);
    const lookup = lookupFor(tweetnaclEd25519, ["a.example", a1]);
    assert.equal(verifySignedJson({ ...signed, uri: "/y" }, "a.example", lookup).ok, false);
    assert.equal(verifySignedJson({ ...signed, extra: null }, "a.example", lookup).ok, false);
    assert.equal(verifySignedJson({ ...signed, content: { n: [1, 2, { "ü": "😁" }] } }, "a.example", lookup).ok, false);
    assert.ok(verifySignedJson({ ...signed, unsigned: { anything: 1 } }, "a.example", lookup).ok);
    assert.ok(verifySignedJson(signJson(signed, "b.example", b1), "a.example", lookup).ok);
  });
  test("missing entity, unknown keys, non-ed25519 keys, garbage signatures", () => {
    const signed = signJson(object, "a.example", a1);
    const lookup = lookupFor(nodeEd25519, ["a.example", a1]);
    assert.equal(verifySignedJson(object, "a.example", lookup).ok, false);
    assert.deepEqual(verifySignedJson(signed, "b.example", lookup), { ok: false, reason: "not signed by b.example" });
    assert.deepEqual(verifySignedJson(signed, "a.example", () => undefined), { ok: false, reason: "no known key for a.example" });
    const curve = { ...object, signatures: { "a.example": { "curve25519:x": "AAAA" } } };
    assert.equal(verifySignedJson(curve, "a.example", lookup).ok, false);
    const sig = signed.signatures["a.example"]!["ed25519:a1"]!;
    assert.equal(verifySignature(object, sig.slice(1), nodeEd25519.verifier(a1.publicKey)), false);
    assert.equal(verifySignature(object, "%%%", nodeEd25519.verifier(a1.publicKey)), false);
    assert.ok(verifySignature(object, sig + "==", nodeEd25519.verifier(a1.publicKey)), "padded base64 accepted");
    assert.equal(sig.length, 86, "unpadded 64-byte signature");
  });
});

describe("signing key files (Synapse format)", () => {
  test("parses the spec key in Synapse's `ed25519 <version> <seed>` format", () => {
    const [key] = parseSigningKeyFile(`ed25519 1 ${vectors.key.seed_base64}\n`);
    assert.equal(key!.keyId, "ed25519:1");
    assert.equal(key!.publicKeyBase64, vectors.key.public_key_base64);
    assert.equal(signJson({}, "domain", key!).signatures.domain!["ed25519:1"], vectors.cases[0].expected_output.signatures.domain["ed25519:1"]);
  });
  test("round-trips several keys byte for byte, with either implementation", () => {
    const text = `ed25519 a_AbCd ${encodeBase64(pseudoRandom(32, "k1"))}\ned25519 a_9_z ${encodeBase64(pseudoRandom(32, "k2"))}\n`;
    for (const impl of IMPLS) {
      const keys = parseSigningKeyFile(text, impl);
      assert.deepEqual(keys.map((k) => k.keyId), ["ed25519:a_AbCd", "ed25519:a_9_z"]);
      assert.equal(formatSigningKeyFile(keys), text);
    }
    const [n] = parseSigningKeyFile(text, nodeEd25519);
    const [t] = parseSigningKeyFile(text, tweetnaclEd25519);
    assert.equal(n!.publicKeyBase64, t!.publicKeyBase64);
  });
  test("ignores blank lines and comments, accepts padded seeds and CRLF", () => {
    const keys = parseSigningKeyFile(`# comment\r\n\r\ned25519 1 ${vectors.key.seed_base64}=\r\n`);
    assert.equal(keys[0]!.publicKeyBase64, vectors.key.public_key_base64);
  });
  test("rejects malformed files", () => {
    for (const bad of ["", "# only a comment\n", "ed25519 1", `rsa 1 ${vectors.key.seed_base64}`, "ed25519 1 AAAA", `ed25519 bad-version ${vectors.key.seed_base64}`, "ed25519 1 !!!!"]) {
      assert.throws(() => parseSigningKeyFile(bad), Error, JSON.stringify(bad));
    }
  });
});

describe("src/protocol is pure", () => {
  // Protocol code must stay testable without a network, disk or Redis: only node:crypto,
  // tweetnacl and sibling modules may be imported.
  const FORBIDDEN = new Set([
    "express", "ioredis", "bullmq", "pino", "prom-client", "supertest",
    "fs", "fs/promises", "net", "tls", "http", "https", "http2", "dgram", "dns", "dns/promises",
    "child_process", "cluster", "worker_threads", "readline", "os", "process", "inspector", "vm",
  ]);
  const dir = fileURLToPath(new URL("../../src/protocol/", import.meta.url));
  // Subfolders too (auth/, state resolution): the whole tree is the core.
  const files = (readdirSync(dir, { recursive: true }) as string[]).filter((f) => f.endsWith(".ts"));
  const IMPORT = /(?:\bfrom\s*|\bimport\s*\(?\s*|\brequire\s*\(\s*)["']([^"']+)["']/g;

  test("finds the protocol files", () => assert.ok(files.length >= 10, files.join(",")));
  for (const file of files) {
    test(`${file} imports no I/O modules`, () => {
      const source = readFileSync(join(dir, file), "utf8");
      for (const [, spec] of source.matchAll(IMPORT)) {
        const bare = spec!.replace(/^node:/, "");
        assert.ok(!FORBIDDEN.has(bare) && !FORBIDDEN.has(bare.split("/")[0]!), `${file} imports ${spec}`);
      }
    });
  }
  test("the scanner catches the import forms it claims to", () => {
    const sample = `import x from "node:fs";\nimport { y } from 'ioredis';\nconst z = await import("express");\nrequire("net");\nexport { w } from "http";`;
    const found = [...sample.matchAll(IMPORT)].map((m) => m[1]);
    assert.deepEqual(found, ["node:fs", "ioredis", "express", "net", "http"]);
  });
});
