/**
 * The `gatehouse` command. Output here is for people (console), the service logs JSON.
 *   gatehouse serve            start the gateway (embedded Redis when REDIS_URL is unset)
 *   gatehouse keygen           create the signing key and a self-signed TLS pair in the data folder
 *   gatehouse worker           run only the outbound sender workers (needs REDIS_URL)
 *   gatehouse queue [...]      the outbound queue (pages, retry, dead letters), via the admin API
 *   gatehouse rooms …          list, show and create hosted rooms (admin API)
 *   gatehouse knocks …         pending knocks of a room: list, accept, deny (admin API)
 *   gatehouse users …          local users who take invites from other servers: list, show, add, remove (admin API)
 *   gatehouse config check     validate the settings and print them (secrets hidden)
 */
import { existsSync, readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { loadConfig, ConfigError, type Config } from "./config.js";
import type { Logger } from "./logger.js";
import { parseServerName } from "./protocol/ids.js";
import type { RoomSummary } from "./rooms/room-queries.js";
// serve, worker and keygen import what they need (server, logger, keys, TLS) when they run: the
// admin-API commands (queue, rooms, knocks) and config check start faster without them.

const HELP = `gatehouse — Matrix federation gateway for knock rooms

Usage:
  gatehouse serve           Start the gateway (federation HTTPS, admin API, sender worker).
  gatehouse worker          Run only outbound sender workers (any number of them may share the
                            Redis given by REDIS_URL with serve processes).
  gatehouse queue           List destinations of the outbound queue: pending PDUs/EDUs, the
                            transaction in flight, last success and error, backoff.
  gatehouse queue show <destination>    One destination in detail (JSON).
  gatehouse queue retry <destination>   Clear the destination's backoff and send now.
  gatehouse queue dead-letters <destination> [replay|drop]
                            List, replay or drop the PDUs the destination rejected.
  gatehouse rooms [list]    Hosted rooms: version, join rule, members, pending knocks, name.
  gatehouse rooms show <roomId>         One room's summary.
  gatehouse rooms create --creator <user> [--name N] [--topic T] [--join-rule knock]
                            [--version 12] [--alias localpart]   Create a hosted room.
  gatehouse knocks list <roomId>        Pending knocks of a room.
  gatehouse knocks accept <roomId> <userId> [--reason R]   Accept (invite the knocker).
  gatehouse knocks deny <roomId> <userId> [--reason R]     Deny (kick the knocker).
  gatehouse users [list|show|add|remove] [<userId>]   Local users invites from other servers
                            are taken for (known through the admin API; see README).
                            (queue, rooms, knocks and users call the admin API of a running serve,
                            at GATEHOUSE_ADMIN_LISTEN with its token; "gatehouse <command> --help"
                            describes each.)
  gatehouse keygen          Create the signing key (and a self-signed TLS certificate when
                            GATEHOUSE_TLS=auto) in the data folder, if they do not exist.
  gatehouse keygen --kubernetes-secret <name>   In a pod: create the Secret holding the
                            signing key unless it exists (the gatehouse-keygen Job).
  gatehouse keys rotate     Make a new signing key; the old one moves to the retired-keys file
                            (published as old_verify_keys). Restart serve/worker afterwards.
  gatehouse config check    Validate the settings from the environment and print them.
  gatehouse help            This text.

Settings come from environment variables (see README.md, "Settings").`;

function loadOrExit(): Config {
  try {
    return loadConfig(process.env);
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`gatehouse: invalid setting ${e.message}`);
      process.exit(2);
    }
    throw e;
  }
}

async function serve(): Promise<void> {
  const config = loadOrExit();
  const { createLogger } = await import("./logger.js");
  const logger = createLogger(config.logLevel);
  const { startGatehouse } = await import("./server.js");
  // The handlers come first: a signal during the start (a pod deleted while it starts) waits for
  // the start to finish, then stops as any stop does (locks released, Redis stopped), instead
  // of ending the process mid-start with whatever it had claimed still locked.
  const starting = startGatehouse(config, logger);
  onSignals(config, logger, async () => (await starting).stop());
  try {
    await starting;
  } catch (e) {
    logger.fatal({ err: (e as Error).message }, "gatehouse failed to start");
    process.exit(1);
  }
}

function onSignals(config: Config, logger: Logger, stop: () => Promise<void>): void {
  const shutdown = (signal: string) => {
    logger.info({ signal }, "shutting down");
    const hard = setTimeout(() => process.exit(1), config.shutdownTimeoutMs + 5000);
    hard.unref();
    stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  // Every signal that would end the process by default: a terminal hangup (SIGHUP) or quit
  // (SIGQUIT) must stop the embedded redis-server and drain like SIGTERM, not orphan it.
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"] as const) process.once(signal, () => shutdown(signal));
}

async function worker(): Promise<void> {
  const config = loadOrExit();
  const { createLogger } = await import("./logger.js");
  const logger = createLogger(config.logLevel);
  const { startWorker } = await import("./server.js");
  // As serve: a signal during the start stops once the start is done.
  const starting = startWorker(config, logger);
  onSignals(config, logger, async () => (await starting).stop());
  try {
    await starting;
  } catch (e) {
    logger.fatal({ err: (e as Error).message }, "gatehouse worker failed to start");
    process.exit(1);
  }
}

/** The admin API base URL of the running serve, from GATEHOUSE_ADMIN_LISTEN (wildcards → loopback). */
function adminBaseUrl(config: Config): string {
  const host = config.admin.host === "0.0.0.0" ? "127.0.0.1" : config.admin.host === "::" ? "::1" : config.admin.host;
  return `http://${host.includes(":") ? `[${host}]` : host}:${config.admin.port}/_gatehouse/admin/v1`;
}

/**
 * One admin API call (shared by queue, rooms and knocks). Exits 1 with the Matrix error
 * (errcode, message and any extra fields such as replacement_room) when the call fails.
 */
async function adminCall(config: Config, method: "GET" | "POST" | "DELETE", path: string, body?: Record<string, unknown>): Promise<unknown> {
  let token = config.admin.token;
  if (!token) {
    if (!existsSync(config.admin.tokenFile)) {
      console.error(`gatehouse: no admin token (set GATEHOUSE_ADMIN_TOKEN, or run where ${config.admin.tokenFile} exists)`);
      process.exit(2);
    }
    token = readFileSync(config.admin.tokenFile, "utf8").trim();
  }
  const url = `${adminBaseUrl(config)}${path}`;
  const payload = method === "POST" ? JSON.stringify(body ?? {}) : undefined;
  let res: Response;
  try {
    res = await fetch(url, { method, headers: { Authorization: `Bearer ${token}`, ...(payload ? { "Content-Type": "application/json" } : {}) }, ...(payload ? { body: payload } : {}) });
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    console.error(`gatehouse: cannot reach the admin API at ${url}: ${cause?.code ?? cause?.message ?? (e as Error).message} (is gatehouse serve running?)`);
    process.exit(1);
  }
  const answer = (await res.json().catch(() => null)) as unknown;
  if (!res.ok) {
    const err = (answer ?? {}) as { errcode?: unknown; error?: unknown; [k: string]: unknown };
    if (typeof err.errcode === "string") {
      const { errcode, error, ...extra } = err;
      const more = Object.keys(extra).length ? ` ${JSON.stringify(extra)}` : "";
      console.error(`gatehouse: ${method} ${path} failed (HTTP ${res.status}): ${errcode}: ${String(error ?? "")}${more}`);
    } else {
      console.error(`gatehouse: ${method} ${path} answered ${res.status}: ${JSON.stringify(answer)}`);
    }
    process.exit(1);
  }
  return answer;
}

/** Columns padded to their widest cell (the last column is not padded). */
function printTable(rows: string[][]): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  for (const r of rows) console.log(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd());
}

/** Shortens free text for a table cell (one line, at most `max` characters). */
function cell(v: unknown, max = 40): string {
  if (v === null || v === undefined || v === "") return "-";
  const text = String(v).replace(/\s+/g, " ");
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function usage(text: string): never {
  console.error(text);
  process.exit(2);
}

function ago(ts: number | null, now: number): string {
  if (!ts) return "-";
  const s = Math.round((now - ts) / 1000);
  return s < 0 ? `in ${-s}s` : `${s}s ago`;
}

async function queue(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const enc = encodeURIComponent;
  if (sub === "retry" || sub === "show") {
    const { positionals } = parse(rest, {}, ["destination"], QUEUE_HELP);
    const config = loadOrExit();
    const out = await adminCall(config, sub === "retry" ? "POST" : "GET", `/queue/${enc(positionals[0]!)}${sub === "retry" ? "/retry" : ""}`);
    console.log(JSON.stringify(out, null, 2));
    return;
  }
  if (sub === "dead-letters") {
    const action = rest[1];
    if (action === "replay" || action === "drop") {
      const { positionals } = parse(rest, {}, ["destination", "action"], QUEUE_HELP);
      const config = loadOrExit();
      const out = (await adminCall(config, "POST", `/queue/${enc(positionals[0]!)}/dead-letters/${action}`)) as { replayed?: number; dropped?: number };
      console.log(action === "replay" ? `${out.replayed} dead letters queued again for ${positionals[0]}` : `${out.dropped} dead letters dropped for ${positionals[0]}`);
      return;
    }
    const { values, positionals } = parse(rest, { json: { type: "boolean" }, from: { type: "string" }, limit: { type: "string" } }, ["destination"], QUEUE_HELP);
    const config = loadOrExit();
    const q = new URLSearchParams();
    if (values.from !== undefined) q.set("from", values.from);
    if (values.limit !== undefined) q.set("limit", values.limit);
    const out = (await adminCall(config, "GET", `/queue/${enc(positionals[0]!)}/dead-letters${q.size ? `?${q}` : ""}`)) as {
      total: number;
      next_token?: string;
      dead_letters: { event_id: string; room_id: string; reason: string; ts: number }[];
    };
    if (values.json) {
      console.log(JSON.stringify(out, null, 2));
      return;
    }
    const now = Date.now();
    const rows = [["EVENT", "ROOM", "SINCE", "REASON"]];
    for (const d of out.dead_letters) rows.push([d.event_id, d.room_id, ago(d.ts, now), cell(d.reason, 60)]);
    if (out.dead_letters.length > 0) printTable(rows);
    else console.log(`(no dead letters for ${positionals[0]})`);
    if (out.next_token) console.log(`(${out.total} in all; next page: --from ${out.next_token})`);
    return;
  }
  if (sub !== undefined && !sub.startsWith("-")) usage(`gatehouse: unknown queue command ${JSON.stringify(sub)}\n\n${QUEUE_HELP}`);
  const { values } = parse(
    args,
    { json: { type: "boolean" }, from: { type: "string" }, limit: { type: "string" }, "order-by": { type: "string" }, dir: { type: "string" } },
    [],
    QUEUE_HELP,
  );
  const config = loadOrExit();
  const q = new URLSearchParams();
  if (values.from !== undefined) q.set("from", values.from);
  if (values.limit !== undefined) q.set("limit", values.limit);
  if (values["order-by"] !== undefined) q.set("order_by", values["order-by"]);
  if (values.dir !== undefined) q.set("dir", values.dir);
  const out = (await adminCall(config, "GET", `/queue${q.size ? `?${q}` : ""}`)) as {
    destinations: {
      destination: string; pending_pdus: number; pending_edus: number; txn_id: string | null; txn_age_ms: number | null;
      last_success_ts: number | null; last_error: string | null; last_error_ts: number | null; failures: number; backoff_until: number | null;
      dead_letters: number;
    }[];
    total: number;
    next_token?: string;
  };
  if (values.json) {
    console.log(JSON.stringify(out, null, 2));
    return;
  }
  const now = Date.now();
  const rows = [["DESTINATION", "PDUS", "EDUS", "IN FLIGHT", "LAST SUCCESS", "FAILURES", "BACKOFF", "DEAD", "LAST ERROR"]];
  for (const d of out.destinations) {
    rows.push([
      d.destination,
      String(d.pending_pdus),
      String(d.pending_edus),
      d.txn_id ? `${d.txn_id} (${Math.round((d.txn_age_ms ?? 0) / 1000)}s)` : "-",
      ago(d.last_success_ts, now),
      String(d.failures),
      d.backoff_until ? ago(d.backoff_until, now) : "-",
      String(d.dead_letters),
      d.last_error ? `${d.last_error} (${ago(d.last_error_ts, now)})` : "-",
    ]);
  }
  printTable(rows);
  if (out.total === 0) console.log("(no destinations yet)");
  if (out.next_token) console.log(`(${out.total} destinations; next page: --from ${out.next_token})`);
}

const ROOMS_HELP = `gatehouse rooms — hosted rooms, through the admin API of a running serve

Usage:
  gatehouse rooms [list] [--json]
      Table of hosted rooms: room ID, version, join rule, joined members, pending knocks,
      name, and the replacement room of an upgraded one.
  gatehouse rooms show <roomId> [--json]
      One room's summary: version, creator, name, topic, join rule, memberships, joined
      servers, aliases, replacement room.
  gatehouse rooms create --creator <userId> [--name <name>] [--topic <topic>]
                         [--join-rule <rule>] [--version <room version>] [--alias <localpart>]
      Create a room (default version 12; join rules: public, invite, knock, restricted,
      knock_restricted, private). The creator must be a user on Gatehouse's server name.
      Prints the new room ID.

The admin API is at GATEHOUSE_ADMIN_LISTEN (default 127.0.0.1:8009); the token is
GATEHOUSE_ADMIN_TOKEN or the data folder's admin.token. Exit status: 0 on success, 1 when the
admin API refuses (its Matrix error is printed) or cannot be reached, 2 on a usage error.`;

const KNOCKS_HELP = `gatehouse knocks — pending knocks of a hosted room, through the admin API of a running serve

Usage:
  gatehouse knocks list <roomId> [--json]
      Table of pending knocks: user, when, reason, event ID. Names the replacement room when
      the room was upgraded.
  gatehouse knocks accept <roomId> <userId> [--reason <text>] [--sender <userId>]
      Accept a knock: invite the knocker (over federation for a remote user).
  gatehouse knocks deny <roomId> <userId> [--reason <text>] [--sender <userId>]
      Deny a knock: kick the knocker.
  (--sender: the local user acting; defaults to the room's creator.)

Room and user IDs are passed as they are (quote them for the shell: '!room:server').
Exit status: 0 on success, 1 when the admin API refuses (its Matrix error is printed, e.g.
M_NOT_FOUND when the user has no pending knock) or cannot be reached, 2 on a usage error.`;

const USERS_HELP = `gatehouse users — local users who exist, through the admin API of a running serve

Invites from other servers (/v2/invite) are taken only for local users who exist: registered by
an application service, confirmed by a service's user query, or known through the admin API (it
created a room for them, joined them, knocked out for them, or an operator added them here).

  gatehouse users [list] [--json]     Users known through the admin API.
  gatehouse users show <userId>       Whether the user exists, and why (admin, registered, appservice_query).
  gatehouse users add <userId>        Add a user (idempotent).
  gatehouse users remove <userId>     Remove it from the admin API's set (a registration stays).

Exit status: 0 on success, 1 when the admin API refuses (its Matrix error is printed) or cannot
be reached, 2 on a usage error.`;

const QUEUE_HELP = `gatehouse queue — the outbound federation queue, through the admin API of a running serve

Usage:
  gatehouse queue [--from N] [--limit N] [--order-by FIELD] [--dir f|b] [--json]
      Table: destination, pending PDUs/EDUs, transaction in flight, last success, failures,
      backoff, dead letters, last error. One page (default 100, at most 1000) sorted by FIELD
      (destination, pending_pdus, pending_edus, failures, last_success_ts, last_error_ts,
      backoff_until, txn_age_ms, txns_sent, pdus_sent, dead_letters; default destination),
      f ascending (default) or b descending; --from takes the next_token printed.
  gatehouse queue show <destination>    One destination in detail (JSON).
  gatehouse queue retry <destination>   Clear the destination's backoff and send now.
  gatehouse queue dead-letters <destination> [--from N] [--limit N] [--json]
      PDUs the destination rejected when sent alone (event, room, when, reason).
  gatehouse queue dead-letters <destination> replay
      Queue them again (after what is queued now) and send.
  gatehouse queue dead-letters <destination> drop
      Forget them (counted as dropped PDUs).

Exit status: 0 on success, 1 when the admin API refuses (its Matrix error is printed) or cannot
be reached, 2 on a usage error.`;

const CONFIG_HELP = `gatehouse config check — validate the settings (environment variables) and print them

Secrets are hidden. Exit status 2 and the offending variable's name when a setting is invalid.`;

const wantsHelp = (args: readonly string[]) => args.some((a) => a === "--help" || a === "-h");

/** Parses options for one subcommand; unknown options and wrong arity are usage errors (exit 2). */
function parse<T extends Record<string, { type: "string" | "boolean" }>>(
  args: string[],
  options: T,
  positionals: string[],
  help: string,
): { values: { [K in keyof T]?: T[K]["type"] extends "boolean" ? boolean : string }; positionals: string[] } {
  let parsed;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (e) {
    usage(`gatehouse: ${(e as Error).message}\n\n${help}`);
  }
  if (parsed.positionals.length !== positionals.length) {
    usage(`gatehouse: expected ${positionals.length ? positionals.map((p) => `<${p}>`).join(" ") : "no arguments"}, got ${parsed.positionals.length ? parsed.positionals.join(" ") : "none"}\n\n${help}`);
  }
  return parsed as never;
}


async function rooms(args: string[]): Promise<void> {
  if (wantsHelp(args)) {
    console.log(ROOMS_HELP);
    return;
  }
  const [sub = "list", ...rest] = args;
  const enc = encodeURIComponent;
  switch (sub) {
    case "list": {
      const { values } = parse(rest, { json: { type: "boolean" } }, [], ROOMS_HELP);
      const config = loadOrExit();
      const { rooms: ids } = (await adminCall(config, "GET", "/rooms")) as { rooms: string[] };
      const summaries = await Promise.all(ids.map(async (id) => (await adminCall(config, "GET", `/rooms/${enc(id)}`)) as RoomSummary));
      if (values.json) {
        console.log(JSON.stringify(summaries, null, 2));
        return;
      }
      const rows = [["ROOM", "VERSION", "JOIN RULE", "JOINED", "KNOCKS", "NAME", "REPLACED BY"]];
      for (const r of summaries) {
        rows.push([r.room_id, r.room_version, r.join_rule, String(r.membership_counts.join ?? 0), String(r.membership_counts.knock ?? 0), cell(r.name), r.replacement_room ?? "-"]);
      }
      printTable(rows);
      if (summaries.length === 0) console.log("(no rooms yet: gatehouse rooms create --creator @you:<server name>)");
      return;
    }
    case "show": {
      const { values, positionals } = parse(rest, { json: { type: "boolean" } }, ["roomId"], ROOMS_HELP);
      const config = loadOrExit();
      const r = (await adminCall(config, "GET", `/rooms/${enc(positionals[0]!)}`)) as RoomSummary;
      if (values.json) {
        console.log(JSON.stringify(r, null, 2));
        return;
      }
      const counts = Object.entries(r.membership_counts).sort().map(([m, n]) => `${n} ${m}`).join(", ");
      const lines: [string, string][] = [
        ["room", r.room_id],
        ["version", r.room_version],
        ["creator", r.creator],
        ["created", new Date(r.created_ts).toISOString()],
        ["name", r.name ?? "-"],
        ["topic", r.topic ?? "-"],
        ["join rule", r.join_rule],
        ["members", counts || "-"],
        ["joined servers", r.joined_servers.join(", ") || "-"],
        ["aliases", r.aliases.join(", ") || "-"],
        ["depth", String(r.depth)],
        ["extremities", String(r.forward_extremities)],
      ];
      if (r.replacement_room) lines.push(["replaced by", r.replacement_room]);
      const width = Math.max(...lines.map(([k]) => k.length));
      for (const [k, v] of lines) console.log(`${`${k}:`.padEnd(width + 2)}${v}`);
      return;
    }
    case "create": {
      const { values } = parse(
        rest,
        { creator: { type: "string" }, name: { type: "string" }, topic: { type: "string" }, "join-rule": { type: "string" }, version: { type: "string" }, alias: { type: "string" } },
        [],
        ROOMS_HELP,
      );
      if (!values.creator) usage(`gatehouse: rooms create needs --creator <userId>\n\n${ROOMS_HELP}`);
      const config = loadOrExit();
      const body: Record<string, unknown> = { creator: values.creator };
      if (values.name !== undefined) body.name = values.name;
      if (values.topic !== undefined) body.topic = values.topic;
      if (values["join-rule"] !== undefined) body.join_rule = values["join-rule"];
      if (values.version !== undefined) body.room_version = values.version;
      if (values.alias !== undefined) body.room_alias_name = values.alias;
      const out = (await adminCall(config, "POST", "/rooms", body)) as { room_id: string; room_version: string; room_alias?: string };
      console.log(`created room ${out.room_id} (version ${out.room_version}${out.room_alias ? `, alias ${out.room_alias}` : ""})`);
      return;
    }
    default:
      usage(`gatehouse: unknown rooms command ${sub}\n\n${ROOMS_HELP}`);
  }
}

async function users(args: string[]): Promise<void> {
  if (wantsHelp(args)) {
    console.log(USERS_HELP);
    return;
  }
  const [sub, ...rest] = args;
  const enc = encodeURIComponent;
  switch (sub) {
    case undefined:
    case "list": {
      const { values } = parse(rest, { json: { type: "boolean" } }, [], USERS_HELP);
      const out = (await adminCall(loadOrExit(), "GET", "/users")) as { users: string[] };
      if (values.json) console.log(JSON.stringify(out, null, 2));
      else if (out.users.length === 0) console.log("(no users known through the admin API)");
      else for (const u of out.users) console.log(u);
      return;
    }
    case "show": {
      const { positionals } = parse(rest, {}, ["userId"], USERS_HELP);
      const out = (await adminCall(loadOrExit(), "GET", `/users/${enc(positionals[0]!)}`)) as { user_id: string; exists: boolean; source?: string };
      console.log(out.exists ? `${out.user_id} exists (${out.source})` : `${out.user_id} does not exist: invites for it are refused`);
      return;
    }
    case "add":
    case "remove": {
      const { positionals } = parse(rest, {}, ["userId"], USERS_HELP);
      const userId = positionals[0]!;
      const out = (await adminCall(loadOrExit(), sub === "add" ? "POST" : "DELETE", `/users/${enc(userId)}`, sub === "add" ? {} : undefined)) as { added?: boolean; removed?: boolean };
      if (sub === "add") console.log(out.added ? `added ${userId}` : `${userId} was known already`);
      else console.log(out.removed ? `removed ${userId}` : `${userId} was not in the admin API's set`);
      return;
    }
    default:
      usage(`gatehouse: unknown users command ${sub}\n\n${USERS_HELP}`);
  }
}

async function knocks(args: string[]): Promise<void> {
  if (wantsHelp(args)) {
    console.log(KNOCKS_HELP);
    return;
  }
  const [sub, ...rest] = args;
  const enc = encodeURIComponent;
  switch (sub) {
    case "list": {
      const { values, positionals } = parse(rest, { json: { type: "boolean" } }, ["roomId"], KNOCKS_HELP);
      const config = loadOrExit();
      const roomId = positionals[0]!;
      const out = (await adminCall(config, "GET", `/rooms/${enc(roomId)}/knocks`)) as {
        knocks: { user_id: string; event_id: string; reason: string | null; displayname: string | null; ts: number }[];
        replacement_room?: string;
      };
      if (values.json) {
        console.log(JSON.stringify(out, null, 2));
        return;
      }
      const now = Date.now();
      const rows = [["USER", "KNOCKED", "REASON", "EVENT"]];
      for (const k of out.knocks) rows.push([k.user_id, ago(k.ts, now), cell(k.reason), k.event_id]);
      if (out.knocks.length > 0) printTable(rows);
      else console.log(`(no pending knocks in ${roomId})`);
      if (out.replacement_room) console.log(`note: this room was upgraded; new knocks go to ${out.replacement_room}`);
      return;
    }
    case "accept":
    case "deny": {
      const { values, positionals } = parse(rest, { reason: { type: "string" }, sender: { type: "string" } }, ["roomId", "userId"], KNOCKS_HELP);
      const config = loadOrExit();
      const [roomId, userId] = positionals as [string, string];
      const body: Record<string, unknown> = {};
      if (values.reason !== undefined) body.reason = values.reason;
      if (values.sender !== undefined) body.sender = values.sender;
      const out = (await adminCall(config, "POST", `/rooms/${enc(roomId)}/knocks/${enc(userId)}/${sub}`, body)) as { event_id: string };
      console.log(`${sub === "accept" ? "accepted" : "denied"} the knock of ${userId} in ${roomId} (${sub === "accept" ? "invite" : "kick"} ${out.event_id})`);
      return;
    }
    default:
      usage(sub === undefined ? KNOCKS_HELP : `gatehouse: unknown knocks command ${sub}\n\n${KNOCKS_HELP}`);
  }
}

/**
 * A file-system error (unwritable or read-only folder, missing parent) as one line for the
 * operator, instead of a stack trace; anything else is rethrown.
 */
function exitOnFileError(e: unknown, what: string): never {
  const err = e as NodeJS.ErrnoException;
  const reasons: Record<string, string> = {
    EACCES: "permission denied",
    EPERM: "operation not permitted",
    EROFS: "read-only file system",
    ENOENT: "no such file or directory",
    ENOTDIR: "a parent is not a directory",
    ENOSPC: "no space left on the device",
  };
  if (!err || typeof err.code !== "string" || !(err.code in reasons)) throw e;
  console.error(
    `gatehouse: cannot ${what}: ${reasons[err.code]} (${err.code}${err.path ? `, ${err.path}` : ""}). ` +
      "Point GATEHOUSE_DATA_DIR (or GATEHOUSE_SIGNING_KEY_FILE) at a folder this user may write, or mount a writable volume there.",
  );
  process.exit(1);
}

const KEYGEN_HELP = `Usage:
  gatehouse keygen
      Create the signing key (GATEHOUSE_SIGNING_KEY_FILE, in the data folder by default) and, with
      GATEHOUSE_TLS=auto, a self-signed TLS certificate, where they do not exist yet.
  gatehouse keygen --kubernetes-secret <name>
      In a Kubernetes pod (the gatehouse-keygen Job): create the Secret <name> holding a new
      signing key under signing.key, unless the Secret exists (then its key is checked and kept).
      Uses the pod's service account (get and create on Secrets in its namespace). Prints the key
      id and public key, never the private key.`;

async function keygen(args: string[]): Promise<void> {
  const { values } = parse(args, { "kubernetes-secret": { type: "string" }, "serviceaccount-dir": { type: "string" }, help: { type: "boolean" } }, [], KEYGEN_HELP);
  if (values.help) {
    console.log(KEYGEN_HELP);
    return;
  }
  if (values["kubernetes-secret"] !== undefined) {
    const { ensureSigningKeySecret, KubernetesSecretError, SERVICE_ACCOUNT_DIR } = await import("./keys/kubernetes-secret.js");
    try {
      const name = values["kubernetes-secret"];
      const r = await ensureSigningKeySecret(name, process.env, values["serviceaccount-dir"] ?? SERVICE_ACCOUNT_DIR);
      console.log(`${r.created ? "created" : "kept"} Secret ${r.namespace}/${name} with signing key ${r.key.keyId}`);
      console.log(`public key: ${r.key.publicKeyBase64}`);
    } catch (e) {
      if (!(e instanceof KubernetesSecretError)) throw e;
      console.error(`gatehouse: ${e.message}`);
      process.exit(1);
    }
    return;
  }
  const config = loadOrExit();
  const { loadOrCreateSigningKeys } = await import("./keys/own-keys.js");
  const { generateSelfSignedCertificate } = await import("./tls.js");
  const existed = existsSync(config.signingKeyFile);
  let keys;
  try {
    ({ keys } = loadOrCreateSigningKeys(config.signingKeyFile));
  } catch (e) {
    exitOnFileError(e, `create the signing key ${config.signingKeyFile}`);
  }
  console.log(`${existed ? "kept" : "created"} signing key ${keys[0]!.keyId} in ${config.signingKeyFile}`);
  console.log(`public key: ${keys[0]!.publicKeyBase64}`);
  if (config.tls) {
    if (existsSync(config.tls.certFile) && existsSync(config.tls.keyFile)) {
      console.log(`kept TLS certificate ${config.tls.certFile}`);
    } else {
      const host = parseServerName(config.serverName)?.host.replace(/^\[|\]$/g, "") ?? "localhost";
      await generateSelfSignedCertificate(config.tls.certFile, config.tls.keyFile, host).catch((e: unknown) =>
        exitOnFileError(e, `create the TLS certificate ${config.tls!.certFile}`),
      );
      console.log(`created a self-signed TLS certificate for ${host} in ${config.tls.certFile} (development only)`);
    }
  }
}

function configCheck(): void {
  const config = loadOrExit();
  let redisUrl = config.redisUrl;
  if (redisUrl && /^rediss?:/.test(redisUrl)) {
    const u = new URL(redisUrl);
    if (u.password) u.password = "[set]";
    redisUrl = u.toString().replace("%5Bset%5D", "[set]");
  }
  const shown = {
    ...config,
    redisUrl,
    admin: { ...config.admin, token: config.admin.token ? "[set]" : null },
    // Registrations without their tokens; namespaces as written.
    appservices: config.appservices.map((r) => ({
      id: r.id,
      file: r.file,
      url: r.url,
      sender_localpart: r.senderLocalpart,
      as_token: "[set]",
      hs_token: "[set]",
      rate_limited: r.rateLimited,
      receive_ephemeral: r.receiveEphemeral,
      namespaces: Object.fromEntries(Object.entries(r.namespaces).map(([k, list]) => [k, list.map((n) => ({ exclusive: n.exclusive, regex: n.source }))])),
    })),
  };
  console.log(JSON.stringify(shown, null, 2));
  console.log("configuration is valid");
}

const [command, ...args] = process.argv.slice(2);
switch (command) {
  case "serve":
    await serve();
    break;
  case "worker":
    await worker();
    break;
  case "queue":
    if (wantsHelp(args)) console.log(QUEUE_HELP);
    else await queue(args);
    break;
  case "rooms":
    await rooms(args);
    break;
  case "knocks":
    await knocks(args);
    break;
  case "users":
    await users(args);
    break;
  case "keygen":
    await keygen(args);
    break;
  case "keys": {
    if (args[0] !== "rotate" || args.length !== 1) usage("usage: gatehouse keys rotate");
    const config = loadOrExit();
    const { rotateSigningKey } = await import("./keys/own-keys.js");
    let rotated;
    try {
      rotated = rotateSigningKey(config.signingKeyFile, config.oldSigningKeysFile, Date.now());
    } catch (e) {
      exitOnFileError(e, `rotate the signing key ${config.signingKeyFile}`);
    }
    const { current, retired } = rotated;
    console.log(`new signing key ${current.keyId} (${current.publicKeyBase64}) in ${config.signingKeyFile}`);
    for (const r of retired) console.log(`retired ${r.keyId}: published in old_verify_keys from ${config.oldSigningKeysFile}`);
    console.log("restart gatehouse serve and worker processes to sign with the new key");
    break;
  }
  case "config":
    if (wantsHelp(args)) console.log(CONFIG_HELP);
    else if (args[0] === "check" && args.length === 1) configCheck();
    else usage(`usage: gatehouse config check\n\n${CONFIG_HELP}`);
    break;
  case undefined:
  case "help":
  case "--help":
  case "-h":
    console.log(HELP);
    break;
  default:
    console.error(`gatehouse: unknown command ${command}\n\n${HELP}`);
    process.exit(2);
}
