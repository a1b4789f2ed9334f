/**
 * glibc's malloc seen from outside (bench/lib/glibc-malloc.ts, used by bench/malloc-info.ts to tell
 * a native leak from allocator fragmentation in the soak): the parser on real `malloc_info()`
 * output, and gdb against a real child process that freed ~100 MB on its main thread.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mallocInfo, parseMallocInfo } from "../../bench/lib/glibc-malloc.js";

// glibc 2.36's malloc_info() of a node process (Debian 12), shortened to three of its seven heaps
// and two of heap 0's free-chunk size lines (whole elements removed; nothing edited).
const XML = `<malloc version="1">
<heap nr="0">
<sizes>
  <size from="33" to="33" total="165" count="5"/>
  <size from="730801" to="730801" total="730801" count="1"/>
</sizes>
<total type="fast" count="0" size="0"/>
<total type="rest" count="40" size="1206631"/>
<system type="current" size="3821568"/>
<system type="max" size="3870720"/>
<aspace type="total" size="3821568"/>
<aspace type="mprotect" size="3821568"/>
</heap>
<heap nr="1">
<sizes>
</sizes>
<total type="fast" count="0" size="0"/>
<total type="rest" count="1" size="132256"/>
<system type="current" size="135168"/>
<system type="max" size="135168"/>
<aspace type="total" size="135168"/>
<aspace type="mprotect" size="135168"/>
<aspace type="subheaps" size="1"/>
</heap>
<heap nr="2">
<sizes>
</sizes>
<total type="fast" count="0" size="0"/>
<total type="rest" count="1" size="132256"/>
<system type="current" size="135168"/>
<system type="max" size="4845568"/>
<aspace type="total" size="135168"/>
<aspace type="mprotect" size="4845568"/>
<aspace type="subheaps" size="1"/>
</heap>
<total type="fast" count="0" size="0"/>
<total type="rest" count="46" size="1999463"/>
<total type="mmap" count="1" size="135168"/>
<system type="current" size="4632576"/>
<system type="max" size="22384640"/>
<aspace type="total" size="4632576"/>
<aspace type="mprotect" size="22335488"/>
</malloc>
`;

describe("parseMallocInfo", () => {
  const info = parseMallocInfo(XML);
  const cases: { why: string; got: () => unknown; want: unknown }[] = [
    { why: "one entry per <heap>, main arena first", got: () => info.arenas.map((a) => a.nr), want: [0, 1, 2] },
    { why: "held = the arena's current system bytes, not its maximum", got: () => info.arenas[0]!.system, want: 3821568 },
    { why: "free = fast bins + the rest (bins and top chunk)", got: () => info.arenas[0]!.free, want: 1206631 },
    { why: "in use = held − free", got: () => info.arenas[0]!.inUse, want: 3821568 - 1206631 },
    { why: "large free = binned free chunks of ≥ 128 KiB only (the 33-byte ones are not)", got: () => info.arenas[0]!.largeFree, want: 730801 },
    { why: "an arena with no <size> lines has no large free chunks", got: () => info.arenas[1]!.largeFree, want: 0 },
    { why: "a thread arena's own figures, not the process totals", got: () => info.arenas[2]!.system, want: 135168 },
    { why: "mmapped chunks come from the process totals after the last heap", got: () => info.mmap, want: 135168 },
  ];
  for (const c of cases) it(c.why, () => assert.deepEqual(c.got(), c.want));
  it("refuses text that is not malloc_info output", () => assert.throws(() => parseMallocInfo("<html></html>"), /not glibc malloc_info/));
});

const gdbMissing = (() => {
  try {
    execFileSync("gdb", ["--version"], { stdio: "ignore" });
    return process.getuid?.() === 0 ? false : "attaching gdb needs root (ptrace)";
  } catch {
    return "gdb is not installed";
  }
})();
if (gdbMissing) console.log(`# skipped: malloc_info of a live process (${gdbMissing})`);

describe("mallocInfo of a live process", { skip: gdbMissing }, () => {
  it("sees memory freed on the main thread as free in the main arena, and malloc_trim gives it back", async () => {
    // 20,000 × 5 kB Buffers (below the mmap threshold: malloc'ed from the main arena), then dropped and collected.
    const script = "let a = []; for (let i = 0; i < 20000; i++) a.push(Buffer.alloc(5000, 1)); a = null; gc(); process.stdout.write('ready\\n'); setTimeout(() => {}, 60000)";
    const child = spawn(process.execPath, ["--expose-gc", "-e", script], { stdio: ["ignore", "pipe", "ignore"] });
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on("data", (d: Buffer) => d.toString().includes("ready") && resolve());
        child.on("exit", () => reject(new Error("child exited")));
      });
      const info = mallocInfo(child.pid!, { trim: true });
      const main = info.arenas.find((a) => a.nr === 0)!;
      assert.ok(main.free > 80 * 1048576, `main arena free ${main.free}`);
      assert.ok(main.inUse < 40 * 1048576, `main arena in use ${main.inUse}`);
      const t = info.trimmed!;
      assert.ok(t.before.rss - t.after.rss > 80 * 1048576, `malloc_trim gave back ${t.before.rss - t.after.rss} bytes`);
      assert.ok(t.after.brkHeap < t.before.brkHeap, "the brk heap's resident part shrank");
      assert.equal(child.exitCode, null, "the process goes on after gdb detaches");
    } finally {
      child.kill("SIGKILL");
    }
  });
});
