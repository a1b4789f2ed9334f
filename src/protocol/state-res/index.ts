/**
 * State resolution as a pure function: v2 (room versions 2–11) and v2.1 (room version 12).
 * Room version 1's algorithm (v1) is not implemented: Gatehouse hosts rooms of versions 7–12.
 */
import { resolveStateV2 } from "./v2.js";
import { StateResolutionError, type StateMap, type StateResolutionInput, type StateResolutionTrace } from "./types.js";

export { stateMapKey, parseStateMapKey, StateResolutionError } from "./types.js";
export type { IdSet, StateFork, StateMap, StateResEvent, StateResolutionInput, StateResolutionTrace } from "./types.js";
export { authEdges, createEventIdOfRoom } from "./events.js";
export { isPowerEvent, separate, stateAuthChain } from "./v2.js";

/**
 * The resolved state of `input.stateSets`. With one set, or sets that agree, that state is
 * returned as is (no events are fetched). `trace` receives the intermediate results. A new Map,
 * unless `input.extend` builds a fork's answer (then whatever it returns).
 */
export async function resolveState(input: StateResolutionInput & { extend?: undefined }, trace?: (t: StateResolutionTrace) => void): Promise<Map<string, string>>;
export async function resolveState(input: StateResolutionInput, trace?: (t: StateResolutionTrace) => void): Promise<StateMap>;
export async function resolveState(input: StateResolutionInput, trace?: (t: StateResolutionTrace) => void): Promise<StateMap> {
  if (input.roomVersion.stateResolution === "v1") {
    throw new StateResolutionError(`state resolution v1 (room version ${input.roomVersion.id}) is not implemented`);
  }
  return resolveStateV2(input, trace);
}
