// GATEHOUSE_CACHE_MAX_BYTES (src/store/byte-lru.ts): the byte budget of the in-process caches.
// Parsed by loadConfig with one default, refused with a ConfigError naming the variable,
// documented in README.md's settings table, and within the deployment's V8 heap cap.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { loadConfig, ConfigError } from "../../src/config.js";
import { DEFAULT_CACHE_MAX_BYTES } from "../../src/store/byte-lru.js";

const CASES: { why: string; value: string | undefined; expect: number | "error" }[] = [
  { why: "unset: the default, 64 MiB", value: undefined, expect: 64 * 1_048_576 },
  { why: "a smaller budget for a small pod", value: "8388608", expect: 8_388_608 },
  { why: "the floor, 1 MiB", value: "1048576", expect: 1_048_576 },
  { why: "under 1 MiB is refused (the caches would hold almost nothing)", value: "1048575", expect: "error" },
  { why: "0 is refused (the caches are not optional: the hot path relies on them)", value: "0", expect: "error" },
  { why: "not a number is refused", value: "64M", expect: "error" },
  { why: "over 16 GiB is refused", value: String(16 * 1_073_741_824 + 1), expect: "error" },
];

for (const c of CASES) {
  test(`GATEHOUSE_CACHE_MAX_BYTES: ${c.why}`, () => {
    const env = c.value === undefined ? {} : { GATEHOUSE_CACHE_MAX_BYTES: c.value };
    if (c.expect === "error") {
      assert.throws(() => loadConfig(env, "/tmp"), (e: unknown) => e instanceof ConfigError && /GATEHOUSE_CACHE_MAX_BYTES/.test(e.message));
    } else {
      assert.equal(loadConfig(env, "/tmp").cacheMaxBytes, c.expect);
    }
  });
}

test("GATEHOUSE_CACHE_MAX_BYTES is in README.md's settings table with its default", () => {
  const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
  assert.match(readme, new RegExp(`^\\| \`GATEHOUSE_CACHE_MAX_BYTES\` \\| \`${DEFAULT_CACHE_MAX_BYTES}\` \\|`, "m"));
});

test("the default cache budget leaves most of the Kubernetes deployment's V8 heap cap to the rest", () => {
  const configMap = readFileSync(new URL("../../deploy/kubernetes/base/configmap.yaml", import.meta.url), "utf8");
  const cap = /--max-old-space-size=(\d+)/.exec(configMap);
  assert.ok(cap, "the ConfigMap sets V8's heap cap");
  const budget = Number(/GATEHOUSE_CACHE_MAX_BYTES: "(\d+)"/.exec(configMap)?.[1] ?? DEFAULT_CACHE_MAX_BYTES);
  assert.ok(budget <= (Number(cap[1]) * 1_048_576) / 3, `cache budget ${budget} B against a heap cap of ${cap[1]} MB`);
});
