import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { canonicalJson, CanonicalJsonError, findNonCanonicalNumber, parseStrictJson } from "../../src/protocol/canonical-json.js";
import { loadVectors } from "../support/vectors.js";

const vectors = loadVectors("canonical-json");

describe("canonical JSON: shared vectors", () => {
  for (const [i, c] of (vectors.cases as any[]).entries()) {
    test(`case ${i}: ${JSON.stringify(c.input).slice(0, 60)}`, () => {
      assert.equal(canonicalJson(JSON.parse(c.input)), c.expected);
    });
  }
  for (const c of vectors.must_reject as any[]) {
    test(`rejects ${c.input} (${c.reason})`, () => {
      // Either the parsed value cannot be encoded, or the raw text carries a non-integer.
      const raw = findNonCanonicalNumber(c.input);
      let encodeFailed = false;
      try {
        canonicalJson(JSON.parse(c.input));
      } catch (e) {
        assert.ok(e instanceof CanonicalJsonError);
        encodeFailed = true;
      }
      assert.ok(encodeFailed, "encoder must refuse the parsed value");
      assert.ok(raw !== null, "raw-text scan must flag it");
      assert.throws(() => parseStrictJson(c.input), CanonicalJsonError);
    });
  }
});

describe("canonical JSON: encoder rules", () => {
  test("sorts by code point, not UTF-16 units", () => {
    assert.equal(canonicalJson({ "\uFB01": 1, "😀": 2, a: 0 }), '{"a":0,"ﬁ":1,"😀":2}');
  });
  test("integer-like keys sort as strings", () => {
    assert.equal(canonicalJson({ b: 1, 10: 2, 9: 3, a: 4 }), '{"10":2,"9":3,"a":4,"b":1}');
  });
  test("-0 encodes as 0; bounds are inclusive", () => {
    assert.equal(canonicalJson([-0, 9007199254740991, -9007199254740991]), "[0,9007199254740991,-9007199254740991]");
  });
  test("refuses floats, NaN, Infinity, out-of-range integers", () => {
    for (const v of [1.5, NaN, Infinity, -Infinity, 2 ** 53, -(2 ** 53)]) {
      assert.throws(() => canonicalJson({ v }), CanonicalJsonError, String(v));
    }
  });
  test("refuses lone surrogates in values and keys", () => {
    assert.throws(() => canonicalJson("\uD800"), CanonicalJsonError);
    assert.throws(() => canonicalJson({ "\uDC00": 1 }), CanonicalJsonError);
  });
  test("refuses non-JSON values", () => {
    for (const v of [undefined, () => 1, 1n, Symbol("x"), new Date(0), new Map()]) {
      assert.throws(() => canonicalJson(v), CanonicalJsonError);
    }
  });
  test("errors name the path of the offending value", () => {
    assert.throws(() => canonicalJson({ a: [1, { b: 1.5 }] }), { name: "CanonicalJsonError", message: /at a\[1\]\.b$/ });
    assert.throws(() => canonicalJson({ x: { "\uD800": 1 } }), { name: "CanonicalJsonError", message: /at x$/ });
    assert.throws(() => canonicalJson([[new Map()]]), { name: "CanonicalJsonError", message: /at \[0\]\[0\]$/ });
  });
  test("plain ASCII and escaped strings, keys and values, encode alike on every path", () => {
    const v = { "a b": "x~", 'q"': 'v"', "\\": "\\", "\u007f": "\u007f", "é": "é", "\uE000": ["\u{1F600}", "\n", " !#[]}"] };
    assert.equal(canonicalJson(v), '{"\\\\":"\\\\","a b":"x~","q\\"":"v\\"","\u007f":"\u007f","é":"é","\uE000":["\u{1F600}","\\n"," !#[]}"]}');
  });
  test("skips undefined object members like JSON.stringify", () => {
    assert.equal(canonicalJson({ a: undefined, b: 1 }), '{"b":1}');
  });
  test("escapes exactly quote, backslash and C0 controls", () => {
    let all = "";
    for (let c = 0; c < 0x80; c++) all += String.fromCharCode(c);
    const out = canonicalJson(all + "\u2028\u2029\u00e9");
    assert.equal(
      out,
      '"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f' +
        "\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f" +
        ' !\\"#$%&\'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\\\]^_`abcdefghijklmnopqrstuvwxyz{|}~\u007f\u2028\u2029\u00e9"',
    );
  });
  test("nested arrays and objects, no whitespace", () => {
    assert.equal(canonicalJson({ z: [{ b: [], a: {} }], a: [true, false, null] }), '{"a":[true,false,null],"z":[{"a":{},"b":[]}]}');
  });
});

describe("raw-text number scan", () => {
  test("flags fractions and exponents that JSON.parse hides", () => {
    assert.match(findNonCanonicalNumber('{"a":1.0}')!, /not an integer/);
    assert.match(findNonCanonicalNumber('{"a":1e3}')!, /not an integer/);
    assert.match(findNonCanonicalNumber('[-2E-1]')!, /not an integer/);
    assert.match(findNonCanonicalNumber('{"a":12345678901234567890}')!, /out of range/);
  });
  test("ignores digits, dots and exponents inside strings (with escapes)", () => {
    assert.equal(findNonCanonicalNumber('{"1.5":"2e10","q":"\\"1.0\\"","n":-12}'), null);
  });
  test("accepts the extreme safe integers", () => {
    assert.equal(findNonCanonicalNumber("[9007199254740991,-9007199254740991,0,-0]"), null);
  });
});
