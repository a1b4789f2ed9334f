/**
 * Synapse's own state resolution (synapse.state.v2, Synapse 1.160 from Debian sid) as an oracle,
 * run with python3 in the Synapse peers chroot (/work/shared/peers/README.md). One python
 * process resolves every case given (Synapse's import dominates). Needs root (chroot).
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import type { Pdu } from "../../src/protocol/pdu.js";
import { parseStateMapKey } from "../../src/protocol/state-res/index.js";

const PEERS_DIR = process.env.PEERS_DIR ?? "/var/tmp/matrix-peers";
const CHROOT = `${PEERS_DIR}/sid`;

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

/** Why the oracle cannot run here, or null. */
export function synapseOracleSkipReason(): string | null {
  if (process.getuid?.() !== 0) return "not root: the Synapse oracle runs python3 in the peers chroot (chroot needs root)";
  if (!existsSync(`${CHROOT}/usr/lib/python3/dist-packages/synapse`)) return `no Synapse in ${CHROOT} (install it with /work/shared/peers/synapse-peers.sh install)`;
  return null;
}

/** A state map as sorted [type, state_key, event ID] triples (the oracle's format). */
export const triples = (m: ReadonlyMap<string, string>): [string, string, string][] =>
  [...m].map(([k, id]) => [...parseStateMapKey(k), id] as [string, string, string]).sort();

export interface OracleCase {
  roomVersion: string;
  roomId: string;
  /** Every event the resolution may need (parents before children is not required). */
  events: { eventId: string; pdu: Pdu }[];
  stateSets: ReadonlyMap<string, string>[];
}

export interface OracleAnswer {
  resolved: [string, string, string][];
  /** Event IDs Synapse computes differently, and events that fail Synapse's auth rules against their auth events. */
  problems: string[];
}

/** Synapse's resolution of each case. */
export function resolveWithSynapse(cases: readonly OracleCase[]): OracleAnswer[] {
  const input = cases.map((c) => ({
    room_version: c.roomVersion,
    room_id: c.roomId,
    events: c.events.map((e) => ({ event_id: e.eventId, pdu: e.pdu })),
    state_sets: c.stateSets.map(triples),
  }));
  const py = spawnSync("chroot", [CHROOT, "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8", "python3", "-c", SCRIPT], {
    input: JSON.stringify(input),
    encoding: "utf8",
    maxBuffer: 256 * 1024 * 1024,
  });
  if (py.status !== 0) throw new Error(`python in the chroot failed (${String(py.status)}): ${py.stderr}`);
  const out = JSON.parse(py.stdout) as OracleAnswer[];
  if (out.length !== cases.length) throw new Error(`the oracle answered ${out.length} of ${cases.length} cases`);
  return out;
}
