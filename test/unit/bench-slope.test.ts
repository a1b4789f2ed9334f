/**
 * The scale rows' arithmetic (bench/lib/slope.ts) and the memory probe the soak and the scale
 * rows preload into Gatehouse (bench/lib/mem-probe.mjs): a real child process, a real SIGUSR2.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { scaleSizes, slopes } from "../../bench/lib/slope.js";

describe("scale sizes from the environment", () => {
  const cases: { why: string; value: string | undefined; want: number[] | "error" }[] = [
    { why: "unset: the fallback", value: undefined, want: [10, 20, 30] },
    { why: "given out of order: sorted, so slopes read left to right", value: "1000,100,300", want: [100, 300, 1000] },
    { why: "spaces around sizes are allowed", value: " 1 , 2 ", want: [1, 2] },
    { why: "one size has no slope", value: "100", want: "error" },
    { why: "zero is not a size", value: "0,10", want: "error" },
    { why: "fractions are not sizes", value: "1.5,10", want: "error" },
    { why: "words are not sizes", value: "ten,20", want: "error" },
  ];
  for (const c of cases)
    it(c.why, () => {
      const env = c.value === undefined ? {} : { BENCH_X: c.value };
      if (c.want === "error") assert.throws(() => scaleSizes("BENCH_X", "10,20,30", env), /BENCH_X must be sizes/);
      else assert.deepEqual(scaleSizes("BENCH_X", "10,20,30", env), c.want);
    });
});

describe("slopes", () => {
  const cases: { why: string; xs: number[]; ys: number[]; fit: number; steps: number[] }[] = [
    { why: "a straight line: fit and steps agree", xs: [100, 300, 1000], ys: [10, 30, 100], fit: 0.1, steps: [0.1, 0.1] },
    { why: "growth that speeds up shows in the steps", xs: [1, 2, 3], ys: [0, 1, 4], fit: 2, steps: [1, 3] },
    { why: "a size not run (NaN) is left out", xs: [1, 2, 3], ys: [1, NaN, 5], fit: 2, steps: [2] },
  ];
  for (const c of cases)
    it(c.why, () => {
      const s = slopes(c.xs, c.ys);
      assert.ok(Math.abs(s.fit - c.fit) < 1e-9, `fit ${s.fit}`);
      assert.deepEqual(s.steps.map((x) => Math.round(x * 1e9) / 1e9), c.steps);
    });
  it("one point has no fit", () => assert.ok(Number.isNaN(slopes([1, 2], [1, NaN]).fit)));
});

describe("memory probe (bench/lib/mem-probe.mjs)", () => {
  it("writes a sample, and a full-GC sample on SIGUSR2", async () => {
    const dir = mkdtempSync(join(tmpdir(), "gatehouse-probe-test-"));
    const file = join(dir, "mem.jsonl");
    const probe = fileURLToPath(new URL("../../bench/lib/mem-probe.mjs", import.meta.url));
    const child = spawn(process.execPath, ["--import", probe, "-e", "globalThis.keep = Buffer.alloc(1 << 20, 1); setTimeout(() => {}, 20000)"], {
      env: { ...process.env, MEM_PROBE_FILE: file, MEM_PROBE_INTERVAL_MS: "60000" },
      stdio: "ignore",
    });
    try {
      const lines = async (want: (ls: Record<string, unknown>[]) => boolean) => {
        for (let i = 0; i < 200; i++) {
          const ls = existsSync(file) ? readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) : [];
          if (want(ls)) return ls;
          await new Promise((r) => setTimeout(r, 50));
        }
        throw new Error(`probe wrote: ${existsSync(file) ? readFileSync(file, "utf8") : "nothing"}`);
      };
      const first = (await lines((ls) => ls.length >= 1))[0]!;
      for (const k of ["rss", "heapTotal", "heapUsed", "external", "arrayBuffers", "v8Physical", "rssAnon", "threads"]) assert.equal(typeof first[k], "number", k);
      assert.ok((first.arrayBuffers as number) >= 1 << 20, "the 1 MiB Buffer is counted in arrayBuffers");
      assert.equal(first.gc, undefined);
      child.kill("SIGUSR2");
      const gcLine = (await lines((ls) => ls.some((l) => l.gc === true))).find((l) => l.gc === true)!;
      assert.ok((gcLine.heapUsed as number) > 0);
      assert.equal(child.exitCode, null, "SIGUSR2 does not end the process");
    } finally {
      child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
