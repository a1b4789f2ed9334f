// GATEHOUSE_SENDER_LINGER_MS (sender.ts processJob): how long a drained destination job waits for
// a wake from its process. Parsed by loadConfig with one default, refused with a ConfigError naming
// the variable, documented in README.md's settings table.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { loadConfig, ConfigError } from "../../src/config.js";

const CASES: { why: string; value: string | undefined; expect: number | "error" }[] = [
  { why: "unset: the default, 50 ms", value: undefined, expect: 50 },
  { why: "0: a drained job ends at once", value: "0", expect: 0 },
  { why: "the ceiling, 1000 ms", value: "1000", expect: 1000 },
  { why: "over the ceiling is refused (a waiting job holds a worker slot)", value: "1001", expect: "error" },
  { why: "negative is refused", value: "-5", expect: "error" },
  { why: "not an integer is refused", value: "50ms", expect: "error" },
];

for (const c of CASES) {
  test(`GATEHOUSE_SENDER_LINGER_MS: ${c.why}`, () => {
    const env = c.value === undefined ? {} : { GATEHOUSE_SENDER_LINGER_MS: c.value };
    if (c.expect === "error") {
      assert.throws(() => loadConfig(env, "/tmp"), (e: unknown) => e instanceof ConfigError && /GATEHOUSE_SENDER_LINGER_MS/.test(e.message));
    } else {
      assert.equal(loadConfig(env, "/tmp").sender.lingerMs, c.expect);
    }
  });
}

test("GATEHOUSE_SENDER_LINGER_MS is in README.md's settings table with its default", () => {
  const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
  assert.match(readme, /^\| `GATEHOUSE_SENDER_LINGER_MS` \| `50` \|/m);
});
