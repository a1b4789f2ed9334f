/**
 * Property test with Synapse as the oracle: random small forked rooms (test/support/forked-rooms.ts)
 * are resolved by Gatehouse's state resolution and by Synapse's own synapse.state.v2, in the
 * Synapse peers chroot (/work/shared/peers/README.md), and the answers must be equal. Room
 * versions 10 (v2) and 12 (v2.1). Synapse also checks that it computes the same event IDs and
 * that every generated event passes its auth rules against its own auth events, so the rooms
 * are ones Synapse would accept.
 *
 * One python process runs every case (Synapse's import dominates). Skips, saying why, when not
 * root or the chroot is absent. GATEHOUSE_STATE_RES_ORACLE_SEED / _CASES choose other rooms.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { getRoomVersion } from "../../src/protocol/room-versions.js";
import { parseStateMapKey, resolveState } from "../../src/protocol/state-res/index.js";
import { makeForkedRoom, type ForkedRoom } from "../support/forked-rooms.js";

const PEERS_DIR = process.env.PEERS_DIR ?? "/var/tmp/matrix-peers";
const CHROOT = `${PEERS_DIR}/sid`;
const SEED = Number(process.env.GATEHOUSE_STATE_RES_ORACLE_SEED ?? 1);
const CASES = Number(process.env.GATEHOUSE_STATE_RES_ORACLE_CASES ?? 150);

const SCRIPT = String.raw`
import json, sys
from synapse import event_auth
from synapse.api.errors import AuthError
from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
from synapse.events import make_event_from_dict
from synapse.state import v2
from synapse.storage.databases.main.event_federation import StateDifference

def run(coro):
    try:
        coro.send(None)
    except StopIteration as e:
        return e.value
    raise RuntimeError("coroutine suspended")

class Clock:
    async def sleep(self, d):
        return None

class Store:
    """Every event is passed in event_map, so Synapse computes the auth difference and the
    conflicted subgraph itself (its 'unpersisted events' path); nothing is persisted here."""
    def __init__(self, events):
        self.events = events
    async def get_events(self, ids, allow_rejected=False, **kw):
        return {e: self.events[e] for e in ids if e in self.events}
    async def get_auth_chain_difference(self, room_id, state_sets, conflicted, additional):
        assert all(not s for s in state_sets), "no persisted events expected"
        return StateDifference(auth_difference=set(), conflicted_subgraph=None if conflicted is None else set())

out = []
for case in json.load(sys.stdin):
    rv = KNOWN_ROOM_VERSIONS[case["room_version"]]
    events = {}
    problems = []
    for e in case["events"]:
        ev = make_event_from_dict(e["pdu"], rv)
        if ev.event_id != e["event_id"]:
            problems.append("event ID %s, Gatehouse computed %s" % (ev.event_id, e["event_id"]))
        events[ev.event_id] = ev
    for ev in events.values():
        try:
            event_auth.check_state_dependent_auth_rules(ev, [events[a] for a in ev.auth_event_ids()])
        except AuthError as err:
            problems.append("%s (%s) fails Synapse's auth rules against its auth events: %s" % (ev.event_id, ev.type, err))
    sets = [{(t, k): i for t, k, i in s} for s in case["state_sets"]]
    resolved = run(v2.resolve_events_with_store(Clock(), case["room_id"], rv, sets, dict(events), Store(events)))
    out.append({"resolved": sorted([t, k, i] for (t, k), i in resolved.items()), "problems": problems})
json.dump(out, sys.stdout)
`;

function skipReason(): string | null {
  if (process.getuid?.() !== 0) return "not root: the Synapse oracle runs python3 in the peers chroot (chroot needs root)";
  if (!existsSync(`${CHROOT}/usr/lib/python3/dist-packages/synapse`)) return `no Synapse in ${CHROOT} (install it with /work/shared/peers/synapse-peers.sh install)`;
  return null;
}

const triples = (m: ReadonlyMap<string, string>) => [...m].map(([k, id]) => [...parseStateMapKey(k), id] as [string, string, string]).sort();

const reason = skipReason();
if (reason) console.log(`# state-res oracle skipped: ${reason}`);

test(`state resolution agrees with Synapse's synapse.state.v2 on ${CASES} random forked rooms × room versions 10 and 12 (seed ${SEED})`, { skip: reason ?? false }, async () => {
  const rooms: ForkedRoom[] = [];
  for (let i = 0; i < CASES; i++) {
    for (const v of ["10", "12"]) rooms.push(await makeForkedRoom(getRoomVersion(v)!, SEED * 100_003 + i));
  }
  const ours = [];
  for (const room of rooms) {
    const events = new Map(room.events.map((e) => [e.eventId, e.pdu] as const));
    ours.push(
      await resolveState({
        roomVersion: room.roomVersion,
        roomId: room.roomId,
        stateSets: room.stateSets,
        fetchEvents: (ids) => new Map(ids.filter((id) => events.has(id)).map((id) => [id, events.get(id)!] as const)),
      }),
    );
  }
  const input = rooms.map((r) => ({
    room_version: r.roomVersion.id,
    room_id: r.roomId,
    events: r.events.map((e) => ({ event_id: e.eventId, pdu: e.pdu })),
    state_sets: r.stateSets.map(triples),
  }));
  const py = spawnSync("chroot", [CHROOT, "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8", "python3", "-c", SCRIPT], {
    input: JSON.stringify(input),
    encoding: "utf8",
    maxBuffer: 256 * 1024 * 1024,
  });
  assert.equal(py.status, 0, `python in the chroot failed: ${py.stderr}`);
  const synapse = JSON.parse(py.stdout) as { resolved: [string, string, string][]; problems: string[] }[];
  assert.equal(synapse.length, rooms.length);
  let conflicted = 0;
  for (let i = 0; i < rooms.length; i++) {
    const room = rooms[i]!;
    const where = `room seed ${room.seed}, v${room.roomVersion.id}`;
    assert.deepEqual(synapse[i]!.problems, [], `${where}: Synapse would not accept the generated room`);
    if (new Set(room.stateSets.map((s) => JSON.stringify(triples(s)))).size > 1) conflicted++;
    assert.deepEqual(triples(ours[i]!), synapse[i]!.resolved, `${where}: resolved state differs from Synapse's`);
  }
  // The generator must produce real conflicts, or the test proves little.
  assert.ok(conflicted > rooms.length * 0.8, `only ${conflicted} of ${rooms.length} rooms had differing state sets`);
  console.log(`# state-res oracle: ${rooms.length} rooms (${conflicted} with conflicting state sets) agree with Synapse`);
});
