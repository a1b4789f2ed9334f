// jsonStringList: the comma-separated JSON strings of /state_ids's batches, quoted at once when no
// character needs escaping; byte for byte what a JSON.stringify per string gives.
import { test } from "node:test";
import assert from "node:assert/strict";
import { jsonStringList } from "../../src/rooms/json-chunks.js";

const cases: { why: string; values: string[] }[] = [
  { why: "no values: an empty list's inside", values: [] },
  { why: "v4+ event IDs ($ and URL-safe base64): the quick path", values: ["$abc-_DEF012", "$x", "$YQ"] },
  { why: "a quote in one ID of the batch: every ID escaped as JSON.stringify does", values: ["$ok", '$a"b'] },
  { why: "a backslash", values: ["$a\\b", "$c"] },
  { why: "control characters (\\n, \\u0001, \\u001f)", values: ["$a\nb", "$\u0001", "$\u001f"] },
  { why: "a lone surrogate is escaped by JSON.stringify", values: ["$\ud800x", "$y"] },
  { why: "a surrogate pair is kept as is (the careful path, same bytes)", values: ["$\ud83d\ude00", "$z"] },
  { why: "DEL, U+2028 and non-ASCII need no escaping", values: ["$\u007f", "$\u2028", "$é"] },
  { why: "an empty string and a comma inside an ID (v1 IDs are free text)", values: ["", "$a,b@example.org"] },
];

for (const c of cases) {
  test(`jsonStringList: ${c.why}`, () => {
    assert.equal(jsonStringList(c.values), c.values.map((v) => JSON.stringify(v)).join(","));
    assert.deepEqual(JSON.parse(`[${jsonStringList(c.values)}]`), c.values);
  });
}

test("jsonStringList: random strings over the whole UTF-16 range read back the same and match JSON.stringify (why: the quick path must never skip an escape)", () => {
  let seed = 7;
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
  for (let run = 0; run < 300; run++) {
    const values = Array.from({ length: 1 + rand(6) }, () =>
      String.fromCharCode(...Array.from({ length: rand(8) }, () => (rand(4) === 0 ? rand(0x10000) : 0x21 + rand(0x5e)))),
    );
    assert.equal(jsonStringList(values), values.map((v) => JSON.stringify(v)).join(","), JSON.stringify(values));
  }
});
