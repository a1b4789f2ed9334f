/**
 * A `StateFork` for given state sets, as room-state.ts builds from state groups: a base every
 * set shares and a delta per set. `moveToDeltas` (0..1) moves that share of the shared entries
 * out of the base into every delta (keys the branches added alike). `breakBase`: also puts into
 * the base a key whose value not every set keeps, which the resolver must notice (it then
 * compares the whole sets). Either way the answer must be the one without a fork.
 */
import { stateAuthChain, type StateFork, type StateMap, type StateResolutionInput } from "../../src/protocol/state-res/index.js";

export async function forkOf(
  input: Pick<StateResolutionInput, "roomVersion" | "roomId" | "fetchEvents" | "stateSets">,
  opts: { moveToDeltas: number; breakBase?: boolean; seed?: number },
): Promise<StateFork> {
  const sets = input.stateSets;
  let seed = opts.seed ?? 1;
  const rand = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
  const keys = new Set<string>();
  for (const s of sets) for (const k of s.keys()) keys.add(k);
  const base = new Map<string, string>();
  const deltas = sets.map(() => new Map<string, string | null>());
  for (const k of keys) {
    const v = sets[0]!.get(k);
    const shared = v !== undefined && sets.every((s) => s.get(k) === v);
    if (shared && rand() >= opts.moveToDeltas) {
      base.set(k, v);
      continue;
    }
    if (!shared && opts.breakBase && v !== undefined && base.size % 2 === 0) {
      // In the base with set 0's value; the other sets override it (or drop it).
      base.set(k, v);
      sets.forEach((s, i) => {
        if (s.get(k) !== v) deltas[i]!.set(k, s.get(k) ?? null);
      });
      continue;
    }
    sets.forEach((s: StateMap, i) => {
      const x = s.get(k);
      if (x !== undefined) deltas[i]!.set(k, x);
    });
  }
  return { base, baseChain: await stateAuthChain(input, [...base.values()]), deltas };
}
