// The sender's pure parts: the Lua scripts' headers, the federation transaction envelope, and
// which transport a destination gets.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { luaScript } from "../../src/store/lua-scripts.js";
import { canonicalJson } from "../../src/protocol/canonical-json.js";
import { parseServerName } from "../../src/protocol/ids.js";
import { FederationTransport, Transports, type DestinationTransport } from "../../src/sender/transport.js";

const luaDir = fileURLToPath(new URL("../../src/store/lua/", import.meta.url));

test("every Lua script opens with a comment header naming its KEYS and ARGV", () => {
  const files = readdirSync(luaDir).filter((f) => f.endsWith(".lua"));
  assert.ok(files.length >= 4, `scripts found: ${files.join(", ")}`);
  for (const f of files) {
    const text = luaScript(f.replace(/\.lua$/, ""));
    const header = text.split("\n").filter((l) => l.startsWith("--")).join("\n");
    assert.match(header, /KEYS:/, `${f}: no KEYS line in its header`);
    assert.match(header, /ARGV:/, `${f}: no ARGV line in its header`);
    assert.ok(text.startsWith("--"), `${f}: the header comes first`);
  }
});

test("no Lua is written inline in src/: every script is a file in src/store/lua/", () => {
  const srcDir = fileURLToPath(new URL("../../src/", import.meta.url));
  const inline: string[] = [];
  for (const f of readdirSync(srcDir, { recursive: true, encoding: "utf8" })) {
    if (!f.endsWith(".ts")) continue;
    const text = readFileSync(srcDir + f, "utf8");
    // Lua's redis.call('…') (single quotes; TypeScript here uses double quotes, e.g. ioredis's own redis.call("CONFIG", …)).
    if (/redis\.(p?call)\s*\(\s*'/.test(text)) inline.push(f);
  }
  assert.deepEqual(inline, [], "files with inline Lua");
});

const fed = new FederationTransport({ request: () => Promise.reject(new Error("not used")) }, "gatehouse.test", (s) => parseServerName(s) !== null);

test("the federation envelope is canonical JSON of {edus, origin, origin_server_ts, pdus}", () => {
  const pdu = (n: number) => ({ type: "m.room.message", content: { body: `é ${n}`, n }, room_id: "!r:gatehouse.test" });
  const cases = [
    { why: "PDUs and EDUs", pdus: [pdu(1), pdu(2)], edus: [{ edu_type: "m.typing", content: { z: 1, a: [2] } }] },
    { why: "no EDUs: the key is left out, as an empty list would be noise", pdus: [pdu(1)], edus: [] },
    { why: "EDUs only", pdus: [], edus: [{ edu_type: "m.receipt", content: {} }] },
    { why: "nothing (never built, but well formed)", pdus: [], edus: [] },
  ];
  for (const c of cases) {
    const body = fed.encodeBody({
      events: c.pdus.map((p) => Buffer.from(fed.encodeEvent(JSON.stringify(p)), "utf8")),
      edus: c.edus.map((e) => canonicalJson(e)),
      ts: 1_700_000_000_123,
    });
    const expected = canonicalJson({ ...(c.edus.length ? { edus: c.edus } : {}), origin: "gatehouse.test", origin_server_ts: 1_700_000_000_123, pdus: c.pdus });
    assert.equal(body.toString("utf8"), expected, c.why);
  }
});

test("federation reports the per-PDU errors of a 200 answer", () => {
  const cases = [
    { why: "one error among successes", body: { pdus: { $a: {}, $b: { error: "bad" } } }, expected: [{ eventId: "$b", error: "bad" }] },
    { why: "no pdus object", body: {}, expected: [] },
    { why: "not an object at all", body: "nope", expected: [] },
  ];
  for (const c of cases) assert.deepEqual(fed.eventErrors(c.body), c.expected, c.why);
});

test("Transports: a kind of destination added later takes its own names; federation the rest", () => {
  const other: DestinationTransport = {
    kind: "appservice",
    handles: (d) => d.startsWith("as:"),
    isValidDestination: (d) => /^as:[a-z]+$/.test(d),
    encodeEvent: (t) => t,
    encodeBody: () => Buffer.from("{}"),
    send: () => Promise.reject(new Error("not used")),
    eventErrors: () => [],
  };
  const t = new Transports(fed);
  assert.equal(t.for("as:bridge").kind, "federation", "before it is added");
  t.add(other);
  const cases = [
    { why: "a server name", d: "remote.example:8448", kind: "federation", valid: true },
    { why: "the added kind's name", d: "as:bridge", kind: "appservice", valid: true },
    { why: "the added kind judges its own names", d: "as:BAD", kind: "appservice", valid: false },
    { why: "not a server name", d: "no spaces allowed", kind: "federation", valid: false },
  ];
  for (const c of cases) {
    assert.equal(t.for(c.d).kind, c.kind, c.why);
    assert.equal(t.isValidDestination(c.d), c.valid, c.why);
  }
});
