/**
 * Cross-check against Matrix's own Python libraries (python3-signedjson, python3-canonicaljson,
 * python3-nacl from Debian). Uses /usr/bin/python3 explicitly: the python3 on PATH may be a
 * pyenv build without the Debian packages. Everything runs in ONE python process: the script
 * reads all tasks from stdin and prints all results, because interpreter start-up dominates.
 */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { canonicalJson, canonicalJsonBytes, CanonicalJsonError } from "../../src/protocol/canonical-json.js";
import { signJson, verifySignedJson, type VerifierLookup } from "../../src/protocol/json-signing.js";
import { nodeEd25519 } from "../../src/protocol/ed25519.js";
import { encodeBase64, decodeBase64 } from "../../src/protocol/base64.js";
import { formatSigningKeyFile, makeSigningKey, parseSigningKeyFile } from "../../src/protocol/signing-key.js";
import { getRoomVersion, type RoomVersion } from "../../src/protocol/room-versions.js";
import { checkEvent, signEvent } from "../../src/protocol/event-signing.js";
import { computeEventId } from "../../src/protocol/event-hashing.js";
import { redactEvent } from "../../src/protocol/redaction.js";

const PYTHON = "/usr/bin/python3";

const SCRIPT = String.raw`
import sys, json, hashlib, base64
try:
    import canonicaljson, nacl.signing
    from signedjson.key import decode_signing_key_base64, decode_verify_key_bytes, encode_verify_key_base64, get_verify_key, read_signing_keys, write_signing_keys
    from signedjson.sign import sign_json, verify_signed_json, SignatureVerifyException
except ImportError as e:
    print(json.dumps({"missing": str(e)}))
    sys.exit(0)
import io

def b64(b): return base64.b64encode(b).decode().rstrip("=")
def b64url(b): return base64.urlsafe_b64encode(b).decode().rstrip("=")
def sha(obj): return hashlib.sha256(canonicaljson.encode_canonical_json(obj)).digest()
def strip(obj, *keys): return {k: v for k, v in obj.items() if k not in keys}
def vkey(key_id, pk_b64): return decode_verify_key_bytes(key_id, base64.b64decode(pk_b64 + "=" * (-len(pk_b64) % 4)))

def verify(obj, entity, key_id, pk):
    try:
        verify_signed_json(obj, entity, vkey(key_id, pk)); return True
    except SignatureVerifyException:
        return False

tasks = json.load(sys.stdin)
out = {}

out["verify_json"] = [verify(t["obj"], t["entity"], t["key_id"], t["pk"]) for t in tasks["verify_json"]]

ev = []
for t in tasks["verify_events"]:
    full, red = t["full"], t["redacted"]
    ref = sha(strip(red, "signatures", "unsigned"))
    ev.append({
        "sig_ok": verify(red, t["entity"], t["key_id"], t["pk"]),
        "sig_ok_on_full": verify(full, t["entity"], t["key_id"], t["pk"]),
        "content_hash": b64(sha(strip(full, "unsigned", "signatures", "hashes"))),
        "ref_b64": b64(ref), "ref_b64url": b64url(ref),
    })
out["verify_events"] = ev

signed = []
for t in tasks["sign_json"]:
    key = decode_signing_key_base64("ed25519", t["version"], t["seed"])
    signed.append({"pk": encode_verify_key_base64(get_verify_key(key)), "signed": sign_json(t["obj"], t["entity"], key)})
out["sign_json"] = signed

# Independent, deliberately minimal event signer for event types whose content is fully
# redacted: hash the full event, keep only the version's top-level keys, sign, copy back.
KEEP_V1_V10 = ["event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures", "depth",
               "prev_events", "prev_state", "auth_events", "origin", "origin_server_ts", "membership"]
KEEP_V11 = ["event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures", "depth",
            "prev_events", "auth_events", "origin_server_ts"]
sev = []
for t in tasks["sign_events"]:
    key = decode_signing_key_base64("ed25519", t["version"], t["seed"])
    e = dict(t["event"])
    e["hashes"] = {"sha256": b64(sha(strip(e, "unsigned", "signatures", "hashes")))}
    keep = KEEP_V11 if t["rules"] == "v11" else KEEP_V1_V10
    red = {k: v for k, v in e.items() if k in keep}
    red["content"] = {}
    red = sign_json(red, t["entity"], key)
    e["signatures"] = red["signatures"]
    sev.append(e)
out["sign_events"] = sev

out["canonical"] = [canonicaljson.encode_canonical_json(json.loads(text)).hex() for text in tasks["canonical"]]

# Key files: Gatehouse-written file read by signedjson, and signedjson-written file for Gatehouse.
keys = read_signing_keys(io.StringIO(tasks["key_file"]))
out["key_file_read"] = [{"key_id": k.alg + ":" + k.version, "pk": encode_verify_key_base64(get_verify_key(k)),
                         "sig": sign_json({}, "domain", k)["signatures"]["domain"][k.alg + ":" + k.version]} for k in keys]
buf = io.StringIO()
write_signing_keys(buf, [decode_signing_key_base64("ed25519", "py_1", tasks["py_key_seed"])])
out["key_file_written"] = buf.getvalue()

print(json.dumps(out))
`;

const gw = makeSigningKey("ed25519:gw_1", new Uint8Array(32).fill(7));
const gw2 = makeSigningKey("ed25519:gw_2", new Uint8Array(32).fill(8));
const pySeed = encodeBase64(new Uint8Array(32).fill(9));
const pyKeySeed = encodeBase64(new Uint8Array(32).fill(10));

function rv(id: string): RoomVersion {
  const v = getRoomVersion(id);
  assert.ok(v);
  return v;
}

// (a) JSON objects Gatehouse signs.
const jsonObjects: Record<string, unknown>[] = [
  {},
  { one: 1, two: "Two" },
  { "日": 1, "本": 2, "😀": [{ "ﬁ": true }], "a\u0000b": "\u001f\u007f\u2028", n: -9007199254740991 },
  { unsigned: { age: 5 }, signatures: { "other.example": { "ed25519:x": "AAAA" } }, nested: { "10": 1, "9": 2, b: null } },
];
const signedJsonObjects = jsonObjects.flatMap((o) => [
  { obj: signJson(o, "gateway.example", gw), key: gw },
  { obj: signJson(signJson(o, "gateway.example", gw), "gateway.example", gw2), key: gw2 },
]);

// Events Gatehouse signs, across room versions with different hashing/redaction rules.
const base = {
  sender: "@gw:gateway.example",
  room_id: "!r:gateway.example",
  origin_server_ts: 1700000000000,
  depth: 12,
  prev_events: ["$Nt_z68EwFfPqBeHjzEHGsp461Z4EfNEzR-KH5bOYdOY"],
  auth_events: ["$gbHO7IPUHybc7ULFnT7P0r3iWlZFHGmr6zBfEYCUyKw"],
  unsigned: { age: 3 },
};
const eventInputs: [string, Record<string, unknown>][] = [
  ["1", { ...base, event_id: "$e1:gateway.example", prev_events: [], auth_events: [], type: "m.room.message", content: { body: "v1 ü" }, origin: "gateway.example" }],
  ["3", { ...base, type: "m.room.message", content: { body: "v3 😀" } }],
  ["6", { ...base, type: "m.room.aliases", state_key: "gateway.example", content: { aliases: ["#a:gateway.example"] } }],
  ["10", { ...base, type: "m.room.member", state_key: "@k:remote.example", content: { membership: "knock", reason: "hi", displayname: "K" } }],
  ["10", { ...base, type: "m.room.join_rules", state_key: "", content: { join_rule: "knock_restricted", allow: [{ type: "m.room_membership", room_id: "!s:gateway.example" }] } }],
  ["11", { ...base, type: "m.room.power_levels", state_key: "", content: { users: { "@gw:gateway.example": 100 }, invite: 50, notifications: { room: 50 } } }],
  ["11", { ...base, type: "m.room.redaction", content: { redacts: "$x", reason: "spam" }, origin: "gateway.example" }],
  ["12", { type: "m.room.create", state_key: "", sender: "@gw:gateway.example", content: { room_version: "12", additional_creators: [] }, origin_server_ts: 1, depth: 1, prev_events: [], auth_events: [] }],
  ["12", { ...base, type: "m.room.member", state_key: "@gw:gateway.example", content: { membership: "join", displayname: "Gateway" } }],
];
const signedEvents = eventInputs.map(([version, e]) => {
  const v = rv(version);
  const full = signEvent(e, "gateway.example", gw, v);
  return { version: v, full, redacted: redactEvent(full, v) };
});

// (b) What python signs.
const pyJsonObjects = [{}, { one: 1, two: "Two" }, { "😀": { "ﬁ": [1, -1, 0] }, s: "\u0007\"\\/" }];
const pyEventInputs: [string, "v1" | "v11", Record<string, unknown>][] = [
  ["10", "v1", { ...base, sender: "@u:py.example", type: "m.room.message", content: { body: "from python" }, origin: "py.example" }],
  ["11", "v11", { ...base, sender: "@u:py.example", type: "m.room.message", content: { body: "from python", "m.mentions": {} }, origin: "py.example" }],
  ["12", "v11", { ...base, sender: "@u:py.example", type: "org.example.custom", content: { nested: { "😀": 1 } } }],
];

// (c) Canonical JSON of tricky inputs, as JSON text so both sides parse the same thing.
let controls = "";
for (let c = 0; c < 0x20; c++) controls += String.fromCharCode(c);
const canonicalInputs = [
  JSON.stringify({ "\uFB01": 1, "😀": 2, a: 0, "\uFFFF": 3, "\u{10FFFF}": 4, "\u00e9": 5, "e\u0301": 6 }),
  JSON.stringify({ s: controls + "\u007f\u0080\u2028\u2029\uFEFF/\\\"" }),
  '{"\\ud83d\\ude00":"\\ud83d\\ude00","\\u00e9":"\\u65E5"}',
  JSON.stringify({ big: 9007199254740991, neg: -9007199254740991, zero: 0, list: [1, -1, 123456789012345] }),
  '{"a":-0,"b":[[],{},[{}]],"c":null,"d":true,"e":false}',
  JSON.stringify({ "10": 1, "9": 2, "1a": 3, "": 4, " ": 5 }),
  JSON.stringify({ long: "x".repeat(5000) + "😀".repeat(100), deep: [[[[[[{ z: { y: { x: "w" } } }]]]]]] }),
];

const keyFile = formatSigningKeyFile([gw, gw2]);

function runOracle(): { skip: string } | { results: any } {
  if (!existsSync(PYTHON)) return { skip: `${PYTHON} not found` };
  const tasks = {
    verify_json: signedJsonObjects.map(({ obj, key }) => ({ obj, entity: "gateway.example", key_id: key.keyId, pk: key.publicKeyBase64 })),
    verify_events: signedEvents.map(({ full, redacted }) => ({ full, redacted, entity: "gateway.example", key_id: gw.keyId, pk: gw.publicKeyBase64 })),
    sign_json: pyJsonObjects.map((obj) => ({ obj, entity: "py.example", version: "py_1", seed: pySeed })),
    sign_events: pyEventInputs.map(([, rules, event]) => ({ event, rules, entity: "py.example", version: "py_1", seed: pySeed })),
    canonical: canonicalInputs,
    key_file: keyFile,
    py_key_seed: pyKeySeed,
  };
  const proc = spawnSync(PYTHON, ["-c", SCRIPT], { input: JSON.stringify(tasks), encoding: "utf8", timeout: 60_000 });
  if (proc.error) throw proc.error;
  if (proc.status !== 0) throw new Error(`python oracle failed (${proc.status}): ${proc.stderr}`);
  const results = JSON.parse(proc.stdout);
  if (results.missing) return { skip: `${PYTHON} lacks signedjson/canonicaljson/nacl: ${results.missing}` };
  return { results };
}

const oracle = runOracle();

describe("python oracle (signedjson / canonicaljson)", () => {
  if ("skip" in oracle) {
    test("python oracle", (t) => {
      console.log(`# skipping python oracle: ${oracle.skip}`);
      t.skip(oracle.skip);
    });
    return;
  }
  const r = oracle.results;
  const pyKey = makeSigningKey("ed25519:py_1", decodeBase64(pySeed)!);
  const pyLookup: VerifierLookup = (entity, keyId) =>
    entity === "py.example" && keyId === "ed25519:py_1" ? nodeEd25519.verifier(pyKey.publicKey) : undefined;

  describe("(a) Gatehouse signs, python verifies", () => {
    for (const [i, { key }] of signedJsonObjects.entries()) {
      test(`JSON object ${i} (${key.keyId}): verify_signed_json accepts`, () => assert.equal(r.verify_json[i], true));
    }
    for (const [i, { version, full, redacted }] of signedEvents.entries()) {
      test(`event ${i} (room v${version.id}, ${full.type}): signature, content hash and reference hash`, () => {
        const py = r.verify_events[i];
        assert.equal(py.sig_ok, true, "python verifies the redacted event");
        assert.equal(py.content_hash, full.hashes.sha256, "python content hash equals ours");
        if (version.eventIdFormat !== "server-chosen") {
          const id = computeEventId(full, version);
          assert.equal(id, "$" + (version.eventIdFormat === "reference-hash-base64" ? py.ref_b64 : py.ref_b64url));
        }
        // Signing the full event would only coincide when redaction removes nothing.
        const redactionIsNoop = canonicalJson(redacted) === canonicalJson({ ...full, unsigned: undefined });
        assert.equal(py.sig_ok_on_full, redactionIsNoop);
      });
    }
  });

  describe("(b) python signs, Gatehouse verifies", () => {
    for (const [i, obj] of pyJsonObjects.entries()) {
      test(`sign_json object ${i}`, () => {
        const { pk, signed } = r.sign_json[i];
        assert.equal(pk, pyKey.publicKeyBase64, "same public key from the same seed");
        assert.deepEqual(verifySignedJson(signed, "py.example", pyLookup), { ok: true, keyId: "ed25519:py_1" });
        assert.deepEqual(signed, signJson(obj, "py.example", pyKey), "and byte-identical signatures");
        assert.equal(verifySignedJson({ ...signed, extra: 1 }, "py.example", pyLookup).ok, false);
      });
    }
    for (const [i, [version, , input]] of pyEventInputs.entries()) {
      test(`python-signed event ${i} (room v${version}): checkEvent accepts, and matches our signEvent`, () => {
        const event = r.sign_events[i];
        const check = checkEvent(event, rv(version), pyLookup);
        assert.deepEqual(
          { signaturesOk: check.signaturesOk, hashOk: check.hashOk, redacted: check.redactedIfHashBad },
          { signaturesOk: true, hashOk: true, redacted: null },
          check.signatureError,
        );
        assert.deepEqual(event, signEvent(input, "py.example", pyKey, rv(version)));
        assert.equal(checkEvent({ ...event, depth: 13 }, rv(version), pyLookup).signaturesOk, false);
      });
    }
  });

  describe("(c) canonical JSON identical to python-canonicaljson", () => {
    for (const [i, text] of canonicalInputs.entries()) {
      test(`input ${i}: ${text.slice(0, 50)}`, () => {
        assert.equal(canonicalJsonBytes(JSON.parse(text)).toString("hex"), r.canonical[i]);
      });
    }
    test("beyond ±(2^53−1) python encodes the integer, Gatehouse refuses (spec: not canonical)", () => {
      assert.throws(() => canonicalJson(JSON.parse("[9007199254740992]")), CanonicalJsonError);
    });
  });

  describe("key files", () => {
    test("Gatehouse-written key file is read by signedjson.read_signing_keys", () => {
      assert.deepEqual(
        r.key_file_read.map((k: any) => [k.key_id, k.pk, k.sig]),
        [gw, gw2].map((k) => [k.keyId, k.publicKeyBase64, signJson({}, "domain", k).signatures.domain![k.keyId]]),
      );
    });
    test("signedjson.write_signing_keys output is parsed by Gatehouse", () => {
      const [k] = parseSigningKeyFile(r.key_file_written);
      assert.equal(k!.keyId, "ed25519:py_1");
      assert.equal(encodeBase64(k!.seed), pyKeySeed);
      assert.equal(formatSigningKeyFile([k!]), r.key_file_written);
    });
  });
});
