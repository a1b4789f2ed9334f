import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { getRoomVersion, ROOM_VERSIONS } from "../../src/protocol/room-versions.js";

// Flags that switch auth rules and the state resolution algorithm on, per the spec's
// room version pages. Each row: the flag, the versions where it is true, and why.
const CASES = [
  { flag: "aliasesAuthRule", on: ["1", "2", "3", "4", "5"], why: "v6 (MSC2432) removed the m.room.aliases auth rule" },
  { flag: "redactionDomainAuthRule", on: ["1", "2"], why: "v3 removed the redaction rule that compares event-ID domains" },
] as const;

describe("room-version flags for auth rules", () => {
  for (const c of CASES) {
    test(`${c.flag} is on in v${c.on.join(", v")} only (${c.why})`, () => {
      for (const [id, rv] of ROOM_VERSIONS) assert.equal(rv[c.flag], (c.on as readonly string[]).includes(id), `v${id}`);
    });
  }
});

describe("state resolution algorithm per room version", () => {
  const rows = [
    { id: "1", algo: "v1", why: "room version 1 uses the original algorithm" },
    { id: "2", algo: "v2", why: "v2 introduced state resolution v2" },
    { id: "11", algo: "v2", why: "v3–v11 keep v2" },
    { id: "12", algo: "v2.1", why: "v12 uses state resolution v2.1 (MSC4297)" },
  ] as const;
  for (const r of rows) test(`v${r.id}: ${r.algo} (${r.why})`, () => assert.equal(getRoomVersion(r.id)?.stateResolution, r.algo));
});
