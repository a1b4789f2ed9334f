// GATEHOUSE_GAP_STATE_MAX_EVENTS (rooms/gap-state.ts): the bound on the events one state fallback
// at a gap fetches. Parsed by loadConfig with one default, refused with a ConfigError naming the
// variable, documented in README.md's settings table.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { loadConfig, ConfigError } from "../../src/config.js";

const CASES: { why: string; value: string | undefined; expect: number | "error" }[] = [
  { why: "unset: the default, 5000 events", value: undefined, expect: 5000 },
  { why: "0 turns the fallback off", value: "0", expect: 0 },
  { why: "a larger bound for rooms with a large state", value: "200000", expect: 200_000 },
  { why: "negative is refused", value: "-1", expect: "error" },
  { why: "not a number is refused", value: "many", expect: "error" },
  { why: "over the ceiling (1,000,000) is refused", value: "1000001", expect: "error" },
];

for (const c of CASES) {
  test(`GATEHOUSE_GAP_STATE_MAX_EVENTS: ${c.why}`, () => {
    const env = c.value === undefined ? {} : { GATEHOUSE_GAP_STATE_MAX_EVENTS: c.value };
    if (c.expect === "error") {
      assert.throws(() => loadConfig(env, "/tmp"), (e: unknown) => e instanceof ConfigError && /GATEHOUSE_GAP_STATE_MAX_EVENTS/.test(e.message));
    } else {
      assert.equal(loadConfig(env, "/tmp").gapStateMaxEvents, c.expect);
    }
  });
}

test("GATEHOUSE_GAP_STATE_MAX_EVENTS is in README.md's settings table with its default", () => {
  const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
  assert.match(readme, /^\| `GATEHOUSE_GAP_STATE_MAX_EVENTS` \| `5000` \|/m);
});
