/**
 * Room state as each server's API shows it, for the state-resolution interop suites: Synapse's
 * client API (`GET /rooms/{roomId}/state`) and Gatehouse's admin API (`GET /rooms/{roomId}/state`),
 * both as a map "type|state_key" → event ID, and a readable difference between two such maps.
 * Also a federation cut between two servers inside the interop network namespace (iptables).
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import type { AdminCall } from "../../src/dev/loopback.js";
import type { SynapseUser } from "./synapse.js";

export type StateIds = Map<string, string>;

const enc = encodeURIComponent;
const keyOf = (e: { type: string; state_key: string }) => `${e.type}|${e.state_key}`;

export async function synapseState(user: SynapseUser, roomId: string): Promise<StateIds> {
  const r = await user.call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/state`);
  if (r.status !== 200) throw new Error(`${user.userId}'s server: state ${r.status} ${JSON.stringify(r.body)}`);
  return new Map((r.body as { type: string; state_key: string; event_id: string }[]).map((e) => [keyOf(e), e.event_id]));
}

export async function gatehouseState(admin: AdminCall, roomId: string): Promise<StateIds> {
  const r = await admin("GET", `/rooms/${enc(roomId)}/state`);
  if (r.status !== 200) throw new Error(`Gatehouse: state ${r.status} ${JSON.stringify(r.body)}`);
  return new Map((r.body.state as { type: string; state_key: string; event_id: string }[]).map((e) => [keyOf(e), e.event_id]));
}

/** The keys where `a` and `b` differ, as "key: a=… b=…" lines (empty when equal). */
export function stateDiff(a: StateIds, b: StateIds, names: [string, string]): string[] {
  const out: string[] = [];
  for (const k of [...new Set([...a.keys(), ...b.keys()])].sort()) {
    if (a.get(k) !== b.get(k)) out.push(`${k}: ${names[0]}=${a.get(k) ?? "-"} ${names[1]}=${b.get(k) ?? "-"}`);
  }
  return out;
}

/** Why a federation cut cannot be made here, or null (needs the interop network namespace and iptables). */
export function netCutUnavailable(): string | null {
  if (process.env.GATEHOUSE_INTEROP_NETNS !== "1") return "not in the interop network namespace (npm run test:interop as root makes one)";
  if (spawnSync("iptables", ["-S", "INPUT"], { stdio: "ignore" }).status !== 0) return "iptables is not available";
  return null;
}

/**
 * Refuses (TCP reset) new connections to each listener `host:port` until `heal()`: a federation
 * cut between servers inside the private network namespace. Connections already open are reset
 * too (their next packet hits the rule), so no request slips through on a kept-alive socket.
 */
export class NetCut {
  private readonly rules: string[][];
  private active = false;
  constructor(listeners: { address: string; port: number }[]) {
    this.rules = listeners.map((l) => ["INPUT", "-p", "tcp", "-d", l.address, "--dport", String(l.port), "-j", "REJECT", "--reject-with", "tcp-reset"]);
  }
  cut(): void {
    for (const r of this.rules) iptables(["-I", ...r]);
    this.active = true;
  }
  heal(): void {
    if (!this.active) return;
    for (const r of this.rules) iptables(["-D", ...r]);
    this.active = false;
  }
}

function iptables(args: string[]): void {
  const r = spawnSync("iptables", args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`iptables ${args.join(" ")}: ${r.stderr}`);
}

/** What a Synapse logged from `offset` (bytes) on, for the federation events it received. */
export interface SynapseLogCheck {
  /** Events it rejected (`Rejecting …`) or soft-failed (`Soft-failing …`): each line. */
  refused: string[];
  /** PDUs it received again and ignored ("which we have already seen"). */
  duplicates: number;
}

/** The size of `file` now: where a later `readSynapseLog` starts. */
export function logOffset(file: string): number {
  return existsSync(file) ? statSync(file).size : 0;
}

export function readSynapseLog(file: string, offset: number): SynapseLogCheck {
  const text = readFileSync(file).subarray(offset).toString("utf8");
  const lines = text.split("\n");
  return {
    refused: lines.filter((l) => / - (WARNING|ERROR) - .*(Rejecting |Soft-failing )/.test(l)),
    duplicates: lines.filter((l) => l.includes("which we have already seen")).length,
  };
}
