// GATEHOUSE_PARTIAL_STATE_JOINS (rooms/partial-state.ts): whether send_join asks for partial state
// (omit_members=true) when a local user joins a room hosted elsewhere. Parsed by loadConfig with one
// default, refused with a ConfigError naming the variable, documented in README.md's settings table.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { loadConfig, ConfigError } from "../../src/config.js";

const CASES: { why: string; value: string | undefined; expect: boolean | "error" }[] = [
  { why: "unset: the default, on (big rooms are joined without waiting for their whole state)", value: undefined, expect: true },
  { why: "false asks for the full state, as before", value: "false", expect: false },
  { why: "true", value: "true", expect: true },
  { why: "anything else is refused (no silent default)", value: "maybe", expect: "error" },
];

for (const c of CASES) {
  test(`GATEHOUSE_PARTIAL_STATE_JOINS: ${c.why}`, () => {
    const env = c.value === undefined ? {} : { GATEHOUSE_PARTIAL_STATE_JOINS: c.value };
    if (c.expect === "error") {
      assert.throws(() => loadConfig(env, "/tmp"), (e: unknown) => e instanceof ConfigError && /GATEHOUSE_PARTIAL_STATE_JOINS/.test(e.message));
    } else {
      assert.equal(loadConfig(env, "/tmp").partialStateJoins, c.expect);
    }
  });
}

test("GATEHOUSE_PARTIAL_STATE_JOINS is in README.md's settings table with its default", () => {
  const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
  assert.match(readme, /^\| `GATEHOUSE_PARTIAL_STATE_JOINS` \| `true` \|/m);
});
