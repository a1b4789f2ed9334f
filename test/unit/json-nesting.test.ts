// The nesting-depth scan of raw bodies and the walk over parsed values (protocol/json-nesting.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { jsonTextDepth, exceedsNesting } from "../../src/protocol/json-nesting.js";

const depthOf = (v: unknown): number =>
  typeof v !== "object" || v === null ? 0 : 1 + Math.max(0, ...(Array.isArray(v) ? v : Object.values(v)).map(depthOf));

const cases: { why: string; text: string; depth: number }[] = [
  { why: "a scalar opens nothing", text: "12", depth: 0 },
  { why: "an empty object is one level", text: "{}", depth: 1 },
  { why: "siblings do not add up", text: '[{},{},[]]', depth: 2 },
  { why: "brackets inside strings are text", text: '{"a":"[[[{{{"}', depth: 1 },
  { why: "an escaped quote does not end the string", text: '{"a":"\\"[[["}', depth: 1 },
  { why: "an escaped backslash before the quote does end it", text: '{"a":"\\\\","b":[[1]]}', depth: 3 },
  { why: "keys are strings too", text: '{"[[[":{"}}}":[]}}', depth: 3 },
  { why: "multi-byte UTF-8 inside strings", text: '{"é€😀":["[é"]}', depth: 2 },
];

for (const c of cases) {
  test(`jsonTextDepth: ${c.why}`, () => {
    assert.equal(jsonTextDepth(Buffer.from(c.text), 1000), c.depth);
  });
}

test("jsonTextDepth stops past the limit (a 100,000-level body costs one pass up to the limit)", () => {
  const deep = Buffer.from("[".repeat(100_000) + "]".repeat(100_000));
  assert.equal(jsonTextDepth(deep, 1024), 1025);
});

test("property: jsonTextDepth of JSON.stringify(v) is the value's depth, and exceedsNesting agrees", () => {
  fc.assert(
    fc.property(fc.jsonValue({ maxDepth: 12 }), (v) => {
      const d = depthOf(v);
      assert.equal(jsonTextDepth(Buffer.from(JSON.stringify(v)), 1000), d);
      assert.equal(exceedsNesting(v, d), false);
      if (d > 0) assert.equal(exceedsNesting(v, d - 1), true);
    }),
    { numRuns: 300 },
  );
});

test("exceedsNesting on a 100,000-level value stops at the limit (no stack overflow)", () => {
  let v: unknown = 1;
  for (let i = 0; i < 100_000; i++) v = [v];
  assert.equal(exceedsNesting(v, 100), true);
  assert.equal(exceedsNesting(v, 1024), true);
});

test("exceedsNesting: scalars never exceed, containers exceed 0", () => {
  assert.equal(exceedsNesting("x", 0), false);
  assert.equal(exceedsNesting({}, 0), true);
  assert.equal(exceedsNesting({}, 1), false);
});
