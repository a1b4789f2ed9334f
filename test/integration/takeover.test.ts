// claimInstance: when a restarted sender process may take back its predecessor's jobs at once.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { claimInstance } from "../../src/sender/takeover.js";
import { connect, deleteKeys, uniquePrefix } from "../support/sender-fixture.js";
import type { Logger } from "../../src/logger.js";

const redis = connect();
const prefix = uniquePrefix("takeover");
after(async () => {
  await deleteKeys(redis, prefix);
  await redis.quit();
});

/** A pid that existed and has exited (a finished child). */
const deadPid = spawnSync(process.execPath, ["-e", "0"]).pid!;

test("a restarted process takes back its predecessor's jobs only when that process is certainly dead", async () => {
  const cases = [
    { why: "first start: nothing to take back", previous: null, host: "pod-0", want: null, warns: 0 },
    { why: "same host, predecessor's pid gone (a restart on a VM)", previous: { worker: "w-old", host: "pod-0", pid: deadPid }, host: "pod-0", want: "w-old", warns: 0 },
    { why: "same host, our own pid (a container restarted in its pod: pid 1 again)", previous: { worker: "w-old", host: "pod-0", pid: process.pid }, host: "pod-0", want: "w-old", warns: 0 },
    { why: "same host, predecessor still alive (two processes given one ID)", previous: { worker: "w-twin", host: "pod-0", pid: process.ppid }, host: "pod-0", want: null, warns: 1 },
    { why: "another host: its pid means nothing here", previous: { worker: "w-far", host: "pod-1", pid: deadPid }, host: "pod-0", want: null, warns: 1 },
    { why: "the record is ours already", previous: { worker: "w-new", host: "pod-0", pid: deadPid }, host: "pod-0", want: null, warns: 0 },
    { why: "an unreadable record", previous: "not json", host: "pod-0", want: null, warns: 0 },
  ];
  for (const [i, c] of cases.entries()) {
    const key = `${prefix}:sender:instance:case${i}`;
    if (c.previous !== null) await redis.set(key, typeof c.previous === "string" ? c.previous : JSON.stringify(c.previous));
    const warnings: unknown[] = [];
    const logger = { warn: (o: unknown) => warnings.push(o) } as unknown as Logger;
    const got = await claimInstance(redis, key, { instanceId: "serve@pod-0", workerId: "w-new", host: c.host, now: 1, logger });
    assert.equal(got, c.want, c.why);
    assert.equal(warnings.length, c.warns, c.why);
    assert.equal(JSON.parse((await redis.get(key))!).worker, "w-new", `${c.why}: the record names this process now`);
  }
});
