/**
 * The bench's summary of a read's PDUs (bench/lib/pdu-summary.ts), used to compare Gatehouse's and
 * Synapse's /backfill answers in the scale-room row (bench/README.md, "/backfill: why Synapse's
 * answer is smaller").
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { summarisePdus, describePdus } from "../../bench/lib/pdu-summary.js";
import type { Pdu } from "../../src/protocol/pdu.js";

const join = (n: number, extra: Record<string, unknown> = {}): Pdu =>
  ({ type: "m.room.member", state_key: `@m${n}:a.test`, sender: `@m${n}:a.test`, room_id: "!r:a.test", content: { membership: "join" }, depth: n, prev_events: [`$${n - 1}`], auth_events: [], origin_server_ts: n, hashes: { sha256: "x" }, signatures: {}, ...extra }) as unknown as Pdu;
const idOf = (p: Pdu) => String(p.state_key);

describe("summary of a read's PDUs", () => {
  const cases: { why: string; pdus: Pdu[]; want: Partial<ReturnType<typeof summarisePdus> & object> | null }[] = [
    { why: "no events: nothing to summarise", pdus: [], want: null },
    {
      why: "a contiguous chain: no depth absent, sizes from compact JSON",
      pdus: [join(10), join(11), join(12)],
      want: { count: 3, distinct: 3, minDepth: 10, maxDepth: 12, absentDepths: 0, minBytes: Buffer.byteLength(JSON.stringify(join(10))), unsignedKeys: [] },
    },
    {
      why: "a chain with a hole (events the server did not serve): the absent depths are counted",
      pdus: [join(20), join(15)],
      want: { count: 2, minDepth: 15, maxDepth: 20, absentDepths: 4 },
    },
    {
      why: "the same event twice is one distinct event",
      pdus: [join(5), join(5)],
      want: { count: 2, distinct: 1 },
    },
    {
      why: "an `unsigned` object (Synapse sends `{}`) shows as a key, with its own keys listed",
      pdus: [join(1, { unsigned: {} }), join(2, { unsigned: { age_ts: 3 } })],
      want: { keys: ["auth_events", "content", "depth", "hashes", "origin_server_ts", "prev_events", "room_id", "sender", "signatures", "state_key", "type", "unsigned"], unsignedKeys: ["age_ts"] },
    },
  ];
  for (const c of cases)
    it(c.why, () => {
      const got = summarisePdus(c.pdus, idOf);
      if (c.want === null) return assert.equal(got, null);
      assert.ok(got);
      for (const [k, v] of Object.entries(c.want)) assert.deepEqual(got[k as keyof typeof got], v, k);
    });

  it("the log line names count, depth range and absent depths", () => {
    assert.match(describePdus([join(20), join(15)], idOf), /^2 events \(2 distinct\), .* depth 15–20 \(4 depths of that range absent\)/);
    assert.equal(describePdus([], idOf), "0 events");
  });
});
