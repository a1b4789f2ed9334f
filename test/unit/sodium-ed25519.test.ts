// The optional sodium-native ed25519 backend gives the answers Node's crypto gives, and Gatehouse
// falls back to Node's crypto when it cannot be loaded.
import { test } from "node:test";
import assert from "node:assert/strict";
import { nodeEd25519, tweetnaclEd25519 } from "../../src/protocol/ed25519.js";
import { chooseEd25519, loadSodiumEd25519 } from "../../src/keys/sodium-ed25519.js";

const sodium = loadSodiumEd25519();

test("sodium-native signs and verifies exactly as Node's crypto and tweetnacl do", { skip: "error" in sodium ? `sodium-native cannot be loaded here: ${sodium.error}` : false }, () => {
  assert.ok(!("error" in sodium));
  const seed = new Uint8Array(32).map((_, i) => i * 7 + 1);
  const message = new TextEncoder().encode('{"content":{"body":"hi"},"type":"m.room.message"}');
  const signers = [nodeEd25519, tweetnaclEd25519, sodium].map((impl) => impl.signer(seed));
  for (const s of signers) assert.deepEqual([...s.publicKey], [...signers[0]!.publicKey]);
  const signature = signers[0]!.sign(message);
  for (const s of signers) assert.deepEqual([...s.sign(message)], [...signature], "ed25519 signatures are deterministic");
  const other = nodeEd25519.signer(new Uint8Array(32).fill(9));
  const flip = (b: Uint8Array, i: number) => b.map((x, j) => (j === i ? x ^ 1 : x));
  const cases = [
    { why: "the signature over the message", msg: message, sig: signature, key: signers[0]!.publicKey, ok: true },
    { why: "a message changed by one bit", msg: flip(message, 3), sig: signature, key: signers[0]!.publicKey, ok: false },
    { why: "R changed by one bit", msg: message, sig: flip(signature, 5), key: signers[0]!.publicKey, ok: false },
    { why: "S changed by one bit", msg: message, sig: flip(signature, 40), key: signers[0]!.publicKey, ok: false },
    { why: "another server's key", msg: message, sig: signature, key: other.publicKey, ok: false },
    { why: "a truncated signature", msg: message, sig: signature.subarray(0, 63), key: signers[0]!.publicKey, ok: false },
    { why: "S ≥ L (S + L, malleable): refused by both", msg: message, sig: plusL(signature), key: signers[0]!.publicKey, ok: false },
  ];
  for (const c of cases) {
    for (const impl of [nodeEd25519, sodium]) assert.equal(impl.verifier(c.key).verify(c.msg, c.sig), c.ok, `${impl.name}: ${c.why}`);
  }
});

test("GATEHOUSE_ED25519_BACKEND: node is Node's crypto; sodium-native falls back to it, with the reason, when it cannot load", () => {
  assert.equal(chooseEd25519("node").ed25519, nodeEd25519);
  const fellBack = chooseEd25519("sodium-native", () => ({ error: "Cannot find module 'sodium-native'" }));
  assert.equal(fellBack.ed25519, nodeEd25519);
  assert.equal(fellBack.fellBack, "Cannot find module 'sodium-native'");
  const chosen = chooseEd25519("sodium-native");
  if ("error" in sodium) assert.equal(chosen.ed25519, nodeEd25519);
  else assert.equal(chosen.ed25519.name, "sodium-native");
});

/** The signature with L (the group order) added to S (little-endian): the same point, a non-canonical S. */
function plusL(signature: Uint8Array): Uint8Array {
  const L = [0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
  const out = new Uint8Array(signature);
  let carry = 0;
  for (let i = 0; i < 32; i++) {
    const sum = out[32 + i]! + L[i]! + carry;
    out[32 + i] = sum & 0xff;
    carry = sum >> 8;
  }
  return out;
}
