/**
 * Crypto throughput: raw ed25519 (node:crypto vs tweetnacl) on a ~600-byte canonical event,
 * canonical JSON + SHA-256, and whole-event sign/verify (hash → redact → sign; redact → verify →
 * hash). These numbers justify `defaultEd25519` in src/protocol/ed25519.ts and size how many
 * PDUs per second one core can sign or check.
 */
import { createHash } from "node:crypto";
import { canonicalJsonBytes } from "../src/protocol/canonical-json.js";
import { nodeEd25519, tweetnaclEd25519, type Ed25519 } from "../src/protocol/ed25519.js";
import { loadSodiumEd25519 } from "../src/keys/sodium-ed25519.js";
import { makeSigningKey } from "../src/protocol/signing-key.js";
import { getRoomVersion } from "../src/protocol/room-versions.js";
import { checkEvent, signEvent } from "../src/protocol/event-signing.js";
import type { VerifierLookup } from "../src/protocol/json-signing.js";
import { isUtf8 } from "node:buffer";
import { jsonTextDepth, exceedsNesting, MAX_BODY_NESTING, MAX_EVENT_NESTING } from "../src/protocol/json-nesting.js";

export interface BenchRow {
  name: string;
  impl: string;
  opsPerSec: number;
  usPerOp: number;
}

/** Runs `fn` repeatedly for about `seconds` (after a short warm-up) and reports its rate. */
function measure(name: string, impl: string, seconds: number, fn: () => unknown): BenchRow {
  const warmUntil = performance.now() + Math.min(200, seconds * 200);
  while (performance.now() < warmUntil) fn();
  let ops = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  let now = start;
  // Check the clock every 16 calls so that timing overhead stays negligible for fast ops.
  while (now < end) {
    for (let i = 0; i < 16; i++) fn();
    ops += 16;
    now = performance.now();
  }
  const elapsed = (now - start) / 1000;
  return { name, impl, opsPerSec: ops / elapsed, usPerOp: (elapsed * 1e6) / ops };
}

/** A realistic knock membership event whose canonical JSON (as signed) is about 600 bytes. */
export function sampleEvent(): Record<string, unknown> {
  return {
    type: "m.room.member",
    state_key: "@alice:remote.example",
    sender: "@alice:remote.example",
    room_id: "!kT1ZcWQbBhrlsDcSuu:gateway.example",
    content: {
      membership: "knock",
      displayname: "Alice",
      avatar_url: "mxc://remote.example/aBcDeFgHiJkL",
      reason: "Hi! I'd like to join the support room.",
    },
    origin_server_ts: 1764115200000,
    depth: 42,
    prev_events: ["$Nt_z68EwFfPqBeHjzEHGsp461Z4EfNEzR-KH5bOYdOY"],
    auth_events: [
      "$gbHO7IPUHybc7ULFnT7P0r3iWlZFHGmr6zBfEYCUyKw",
      "$hy1eZFYcgNxMFNNBgCD5fyOzyWRcBkxfNcrUI5ZpZlE",
      "$4FbpZrgPQTwoLD9H5y7jcikucCypUOn78mXhQX7WliY",
    ],
    unsigned: { age: 12 },
  };
}

export function runCryptoBench(options: { seconds?: number } = {}): BenchRow[] {
  const seconds = options.seconds ?? 1;
  const roomVersion = getRoomVersion("12")!;
  const seed = new Uint8Array(32).fill(42);
  const event = sampleEvent();
  // sodium-native (optional dependency, GATEHOUSE_ED25519_BACKEND) when it loads here.
  const sodium = loadSodiumEd25519();
  const impls: Ed25519[] = [nodeEd25519, tweetnaclEd25519, ...("error" in sodium ? [] : [sodium])];

  // The message for raw sign/verify: the canonical bytes of the signed event (with hashes).
  const signedOnce = signEvent(event, "remote.example", makeSigningKey("ed25519:a_1", seed), roomVersion);
  const message = canonicalJsonBytes({ ...signedOnce, signatures: undefined, unsigned: undefined });

  const rows: BenchRow[] = [];
  for (const impl of impls) {
    const signer = impl.signer(seed);
    const signature = signer.sign(message);
    const verifier = impl.verifier(signer.publicKey);
    rows.push(measure(`ed25519 sign (${message.length} B)`, impl.name, seconds, () => signer.sign(message)));
    rows.push(measure(`ed25519 verify (${message.length} B)`, impl.name, seconds, () => {
      if (!verifier.verify(message, signature)) throw new Error("verify failed");
    }));
  }
  rows.push(measure("canonical JSON + sha256 (event)", "node:crypto", seconds, () =>
    createHash("sha256").update(canonicalJsonBytes(event)).digest(),
  ));
  // What every request body now costs before JSON.parse (src/http/body.ts), and the nesting walk
  // of a knock Gatehouse is asked to accept, next to the parse they precede (issue #12).
  const knockBody = Buffer.from(JSON.stringify(signEvent(event, "remote.example", makeSigningKey("ed25519:a_1", seed), roomVersion)));
  const parsedKnock = JSON.parse(knockBody.toString("utf8")) as unknown;
  rows.push(measure(`request body: toString + JSON.parse (${knockBody.length} B knock)`, "node", seconds, () => JSON.parse(knockBody.toString("utf8"))));
  rows.push(measure(`request body: isUtf8 + depth scan (${knockBody.length} B knock)`, "gatehouse", seconds, () => {
    if (!isUtf8(knockBody) || jsonTextDepth(knockBody, MAX_BODY_NESTING) > MAX_BODY_NESTING) throw new Error("refused");
  }));
  rows.push(measure("event nesting walk (knock PDU)", "gatehouse", seconds, () => {
    if (exceedsNesting(parsedKnock, MAX_EVENT_NESTING)) throw new Error("refused");
  }));
  for (const impl of impls) {
    const key = makeSigningKey("ed25519:a_1", seed, impl);
    const signed = signEvent(event, "remote.example", key, roomVersion);
    const verifier = impl.verifier(key.publicKey);
    const lookup: VerifierLookup = (entity, keyId) => (entity === "remote.example" && keyId === key.keyId ? verifier : undefined);
    rows.push(measure("event sign (hash+redact+sign)", impl.name, seconds, () => signEvent(event, "remote.example", key, roomVersion)));
    rows.push(measure("event check (redact+verify+hash+ID)", impl.name, seconds, () => {
      if (!checkEvent(signed, roomVersion, lookup).signaturesOk) throw new Error("check failed");
    }));
  }
  return rows;
}

export function formatTable(rows: BenchRow[]): string {
  const header = ["operation", "implementation", "ops/s", "µs/op"];
  const body = rows.map((r) => [r.name, r.impl, Math.round(r.opsPerSec).toLocaleString("en-US"), r.usPerOp.toFixed(1)]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) =>
    "| " + cells.map((c, i) => (i >= 2 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(" | ") + " |";
  return [line(header), "|" + widths.map((w, i) => (i >= 2 ? "-".repeat(w + 1) + ":" : "-".repeat(w + 2))).join("|") + "|", ...body.map(line)].join("\n");
}

/** Entry used by bench/run.ts: runs the crypto benches and prints a markdown table. */
export function cryptoBench(options: { seconds?: number } = {}): BenchRow[] {
  const rows = runCryptoBench(options);
  console.log(`\n## crypto (${options.seconds ?? 1}s per row)\n`);
  console.log(formatTable(rows));
  return rows;
}
