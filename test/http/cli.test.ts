// The `gatehouse` command as an operator runs it: `node bin/gatehouse.mjs …` as a child process,
// pointed (GATEHOUSE_ADMIN_LISTEN, GATEHOUSE_ADMIN_TOKEN) at the admin listener of a Gatehouse
// started in this test (buildGatehouse's adminApp on 127.0.0.1:<random port>, real Redis).
// Checks output and exit codes: 0 success, 1 refused by the admin API (Matrix error printed) or
// unreachable, 2 usage or configuration errors.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import http from "node:http";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { TestGatehouse, ADMIN, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";
import { persistPdus } from "../support/sender-fixture.js";

const root = new URL("../..", import.meta.url).pathname;
const bin = join(root, "bin/gatehouse.mjs");

let t: TestGatehouse;
let remote: RemoteServer;
let dataDir: string;

before(async () => {
  t = await TestGatehouse.start({ name: "cli" });
  remote = await RemoteServer.start();
  dataDir = mkdtempSync(join(tmpdir(), "gatehouse-cli-"));
});
after(async () => {
  await t.cleanup();
  await remote.close();
  rmSync(dataDir, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI with the settings of an operator next to the test Gatehouse (plus `env`). */
function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  // Only the variables the CLI reads: nothing of the test runner's environment leaks in.
  const base: Record<string, string> = {
    PATH: process.env.PATH ?? "",
    GATEHOUSE_DATA_DIR: dataDir,
    GATEHOUSE_ADMIN_LISTEN: `127.0.0.1:${t.adminPort}`,
    GATEHOUSE_ADMIN_TOKEN: t.adminToken,
  };
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { cwd: root, env: { ...base, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

function ok(run: Run): string {
  assert.equal(run.code, 0, `exit ${run.code}\nstdout: ${run.stdout}\nstderr: ${run.stderr}`);
  return run.stdout;
}

function fails(run: Run, code: number, stderr: RegExp): void {
  assert.equal(run.code, code, `exit ${run.code}\nstdout: ${run.stdout}\nstderr: ${run.stderr}`);
  assert.match(run.stderr, stderr);
}

/** Table rows (header first) split on runs of 2+ spaces. */
const table = (out: string) => out.trimEnd().split("\n").map((l) => l.split(/ {2,}/));

describe("help, usage errors, config check", () => {
  test("per-command --help and the overview; usage errors exit 2; a bad setting exits 2 naming the variable", async () => {
    writeFileSync(
      join(dataDir, "bridge.yaml"),
      "id: clibridge\nurl: null\nas_token: cli-as-token-secret\nhs_token: cli-hs-token-secret\nsender_localpart: clibot\nnamespaces:\n  users: [{ exclusive: true, regex: '@_cli_.*' }]\n",
    );
    const [overview, rooms, knocks, unknownSub, missingUser, badOption, badSetting, good, withBridge, badBridge] = await Promise.all([
      cli(["help"]),
      cli(["rooms", "create", "--help"]),
      cli(["knocks", "--help"]),
      cli(["rooms", "frobnicate"]),
      // Usage errors are found before any setting is read or any request made.
      cli(["knocks", "accept", "!room:gatehouse.test"], { GATEHOUSE_ADMIN_LISTEN: "nonsense" }),
      cli(["rooms", "list", "--colour"]),
      cli(["config", "check"], { GATEHOUSE_KEY_VALIDITY_HOURS: "500" }),
      cli(["config", "check"]),
      cli(["config", "check"], { GATEHOUSE_APPSERVICE_REGISTRATION_FILES: "bridge.yaml" }),
      cli(["config", "check"], { GATEHOUSE_APPSERVICE_REGISTRATION_FILES: "bridge.yaml,missing.yaml" }),
    ]);
    for (const line of ["gatehouse rooms [list]", "gatehouse rooms show <roomId>", "gatehouse rooms create --creator", "gatehouse knocks list <roomId>", "gatehouse knocks accept", "gatehouse knocks deny"]) {
      assert.ok(ok(overview).includes(line), line);
    }
    assert.match(ok(rooms), /gatehouse rooms create --creator <userId> \[--name <name>\]/);
    assert.match(rooms.stdout, /GATEHOUSE_ADMIN_LISTEN/);
    assert.match(ok(knocks), /gatehouse knocks deny <roomId> <userId> \[--reason <text>\]/);
    fails(unknownSub, 2, /unknown rooms command frobnicate/);
    assert.match(unknownSub.stderr, /gatehouse rooms show <roomId>/, "usage errors print the command's help");
    fails(missingUser, 2, /expected <roomId> <userId>, got !room:gatehouse\.test/);
    fails(badOption, 2, /Unknown option '--colour'/);

    fails(badSetting, 2, /invalid setting GATEHOUSE_KEY_VALIDITY_HOURS: must be between 1 and 168, got 500/);
    assert.equal(badSetting.stdout, "");
    const out = ok(good);
    assert.match(out, /configuration is valid/);
    assert.ok(!out.includes(t.adminToken), "the admin token is not printed");
    assert.match(out, /"token": "\[set\]"/);
    const bridged = ok(withBridge);
    assert.match(bridged, /"id": "clibridge"/);
    assert.match(bridged, /"regex": "@_cli_\.\*"/);
    assert.ok(!bridged.includes("cli-as-token-secret") && !bridged.includes("cli-hs-token-secret"), "registration tokens are not printed");
    fails(badBridge, 2, /invalid setting GATEHOUSE_APPSERVICE_REGISTRATION_FILES: .*missing\.yaml: cannot be read: ENOENT/);
  });

  test("keygen where it cannot write: one line naming the file and the reason, exit 1, no stack trace", async () => {
    // A data folder below a regular file cannot be created, whoever runs the test (root too).
    const file = join(dataDir, "not-a-folder");
    writeFileSync(file, "");
    const r = await cli(["keygen"], { GATEHOUSE_DATA_DIR: join(file, "data"), GATEHOUSE_TLS: "off" });
    fails(r, 1, /^gatehouse: cannot create the signing key .*not-a-folder\/data\/signing\.key: a parent is not a directory \(ENOTDIR/);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
  });
});

describe("rooms", () => {
  test("create, list, show", async () => {
    const created = ok(await cli(["rooms", "create", "--creator", t.creator, "--name", "CLI room", "--topic", "made by the CLI", "--join-rule", "knock", "--version", "11", "--alias", "cli-room"]));
    const m = /^created room (!\S+) \(version 11, alias #cli-room:gatehouse\.test\)\n$/.exec(created);
    assert.ok(m, created);
    const roomId = m[1]!;
    assert.equal((await t.store.getStateEvent(roomId, "m.room.join_rules", ""))?.content.join_rule, "knock");
    assert.equal((await t.store.getStateEvent(roomId, "m.room.topic", ""))?.content.topic, "made by the CLI");
    // An upgraded room shows its replacement.
    const upgraded = await t.createRoom({ room_version: "12" });
    const up = await t.admin.post(`${ADMIN}/rooms/${enc(upgraded)}/upgrade`).send({ new_version: "12" });
    assert.equal(up.status, 200);

    const [list, show] = await Promise.all([cli(["rooms"]), cli(["rooms", "show", roomId])]);
    const rows = table(ok(list));
    assert.deepEqual(rows[0], ["ROOM", "VERSION", "JOIN RULE", "JOINED", "KNOCKS", "NAME", "REPLACED BY"]);
    assert.deepEqual(rows.find((r) => r[0] === roomId), [roomId, "11", "knock", "1", "0", "CLI room", "-"]);
    assert.equal(rows.find((r) => r[0] === upgraded)?.[6], up.body.replacement_room);
    assert.ok(rows.some((r) => r[0] === up.body.replacement_room));
    assert.equal(rows.length, 1 + (await t.store.listRooms()).length);

    const fields = Object.fromEntries(ok(show).trimEnd().split("\n").map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trim()]));
    assert.deepEqual(
      { room: fields.room, version: fields.version, creator: fields.creator, name: fields.name, topic: fields.topic, rule: fields["join rule"], members: fields.members, aliases: fields.aliases },
      { room: roomId, version: "11", creator: t.creator, name: "CLI room", topic: "made by the CLI", rule: "knock", members: "1 join", aliases: "#cli-room:gatehouse.test" },
    );
  });

  test("refusals: exit 1 with the Matrix error", async () => {
    const [unknown, badVersion] = await Promise.all([
      cli(["rooms", "show", "!nowhere:gatehouse.test"]),
      cli(["rooms", "create", "--creator", t.creator, "--version", "2"]),
    ]);
    fails(unknown, 1, /GET \/rooms\/!nowhere%3Agatehouse\.test failed \(HTTP 404\): M_NOT_FOUND: Unknown room !nowhere:gatehouse\.test/);
    fails(badVersion, 1, /failed \(HTTP 400\): M_UNSUPPORTED_ROOM_VERSION: Room version 2 is not supported/);
    assert.equal(unknown.stdout, "");
  });
});

describe("users", () => {
  test("add, show, list, remove; a user of another server is refused (exit 1)", async () => {
    const user = t.local("cliuser");
    assert.equal(ok(await cli(["users", "add", user])), `added ${user}\n`);
    assert.equal(ok(await cli(["users", "add", user])), `${user} was known already\n`);
    assert.equal(ok(await cli(["users", "show", user])), `${user} exists (admin)\n`);
    assert.ok(ok(await cli(["users"])).split("\n").includes(user));
    assert.equal(ok(await cli(["users", "remove", user])), `removed ${user}\n`);
    assert.equal(ok(await cli(["users", "show", user])), `${user} does not exist: invites for it are refused\n`);
    fails(await cli(["users", "add", "@someone:elsewhere.example"]), 1, /POST \/users\/.* failed \(HTTP 400\): M_INVALID_PARAM/);
    fails(await cli(["users", "add"]), 2, /expected <userId>/);
  });
});

describe("knocks", () => {
  test("list, accept, deny; a second deny is refused", async () => {
    const roomId = await t.createRoom({ room_version: "12", name: "Knock here" });
    const alice = remote.userId("alice");
    const bob = remote.userId("bob");
    await t.knock(remote, roomId, alice, { reason: "hello, I am Alice" });
    await t.knock(remote, roomId, bob, { reason: "bob\nhere" });
    const rows = table(ok(await cli(["knocks", "list", roomId])));
    assert.deepEqual(rows[0], ["USER", "KNOCKED", "REASON", "EVENT"]);
    assert.deepEqual(rows.slice(1).map((r) => [r[0], r[2]]), [
      [alice, "hello, I am Alice"],
      [bob, "bob here"],
    ]);
    assert.match(rows[1]![1]!, /^\d+s ago$/);
    assert.match(rows[1]![3]!, /^\$/);
    assert.equal((await t.admin.get(`${ADMIN}/rooms/${enc(roomId)}`)).body.membership_counts.knock, 2);

    const [accepted, denied] = await Promise.all([cli(["knocks", "accept", roomId, alice]), cli(["knocks", "deny", roomId, bob, "--reason", "not today"])]);
    assert.match(ok(accepted), new RegExp(`^accepted the knock of ${alice.replace(/[.]/g, "\\.")} in ${roomId.replace(/[!.]/g, "\\$&")} \\(invite \\$\\S+\\)\\n$`));
    assert.match(ok(denied), /^denied the knock of .* \(kick \$\S+\)\n$/);
    assert.equal(await t.store.getMembership(roomId, alice), "invite");
    assert.equal(await t.store.getMembership(roomId, bob), "leave");
    assert.equal((await t.store.getStateEvent(roomId, "m.room.member", bob))?.content.reason, "not today");
    assert.equal(remote.requestsTo("/_matrix/federation/v2/invite/").length, 1, "accepting invited Alice over federation");

    fails(await cli(["knocks", "deny", roomId, bob]), 1, /POST .*\/deny failed \(HTTP 404\): M_NOT_FOUND: .* has no pending knock/);
    assert.equal(ok(await cli(["knocks", "list", roomId])), `(no pending knocks in ${roomId})\n`);
  });

  test("a replaced room says where knocks go now", async () => {
    const roomId = await t.createRoom({ room_version: "11" });
    await t.knock(remote, roomId, remote.userId("late"));
    const up = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/upgrade`).send({ new_version: "12" });
    assert.equal(up.status, 200);
    const out = ok(await cli(["knocks", "list", roomId]));
    assert.match(out, new RegExp(`note: this room was upgraded; new knocks go to ${up.body.replacement_room.replace(/[!.+]/g, "\\$&")}`));
    assert.ok(out.includes(remote.userId("late")));
  });
});

describe("queue", () => {
  test("a sorted page of destinations, the next page, and a destination's dead letters listed, replayed and dropped", async () => {
    const roomId = `!cliqueue:${t.config.serverName}`;
    // Queued PDUs for three destinations that do not resolve (they stay queued, backing off).
    await persistPdus(t.store, roomId, ["q1.invalid"], 3, 0);
    await persistPdus(t.store, roomId, ["q2.invalid"], 1, 3);
    await persistPdus(t.store, roomId, ["q3.invalid"], 2, 4);
    const dead = (n: number) => JSON.stringify({ ref: `${roomId} $dead${n}`, reason: "HTTP 400 M_NOT_JSON: nesting too deep", status: 400, ts: Date.now() - 5000, txn_id: `t${n}` });
    await t.redis.rpush(t.gh.keys.outboundDead("q2.invalid"), dead(1), dead(2));

    const page1 = table(ok(await cli(["queue", "--order-by", "pending_pdus", "--dir", "b", "--limit", "2"])));
    const mine = (rows: string[][]) => rows.filter((r) => r[0]!.endsWith(".invalid")).map((r) => [r[0], r[1], r[7]]);
    assert.deepEqual(page1[0]!.slice(0, 8), ["DESTINATION", "PDUS", "EDUS", "IN FLIGHT", "LAST SUCCESS", "FAILURES", "BACKOFF", "DEAD"]);
    assert.deepEqual(mine(page1.slice(1, 3)), [["q1.invalid", "3", "0"], ["q3.invalid", "2", "0"]], "most pending first");
    const next = /next page: --from (\d+)/.exec(page1.at(-1)!.join("  "))?.[1];
    assert.equal(next, "2");
    const page2 = table(ok(await cli(["queue", "--order-by", "pending_pdus", "--dir", "b", "--limit", "2", "--from", next!])));
    assert.deepEqual(mine(page2), [["q2.invalid", "1", "2"]]);
    fails(await cli(["queue", "--order-by", "name"]), 1, /failed \(HTTP 400\): M_INVALID_PARAM: order_by must be one of/);

    const list = table(ok(await cli(["queue", "dead-letters", "q2.invalid"])));
    assert.deepEqual(list.map((r) => r[0]), ["EVENT", "$dead1", "$dead2"]);
    assert.equal(list[1]![3], "HTTP 400 M_NOT_JSON: nesting too deep");
    assert.equal(ok(await cli(["queue", "dead-letters", "q2.invalid", "replay"])), "2 dead letters queued again for q2.invalid\n");
    assert.equal(await t.redis.llen(t.gh.keys.outboundPdus("q2.invalid")), 3, "back at the tail of the queue");
    assert.equal(ok(await cli(["queue", "dead-letters", "q2.invalid"])), "(no dead letters for q2.invalid)\n");
    await t.redis.rpush(t.gh.keys.outboundDead("q2.invalid"), dead(3));
    assert.equal(ok(await cli(["queue", "dead-letters", "q2.invalid", "drop"])), "1 dead letters dropped for q2.invalid\n");
    fails(await cli(["queue", "dead-letters", "never.invalid", "drop"]), 1, /HTTP 404\): M_NOT_FOUND: Unknown destination/);
    fails(await cli(["queue", "dead-letters"]), 2, /expected <destination>/);
  });
});

describe("reaching the admin API", () => {
  test("wrong token: exit 1 with M_UNKNOWN_TOKEN; nothing listening: exit 1", async () => {
    const closed = http.createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", () => r()));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const [wrong, down] = await Promise.all([
      cli(["rooms"], { GATEHOUSE_ADMIN_TOKEN: "x".repeat(24) }),
      cli(["knocks", "list", "!r:gatehouse.test"], { GATEHOUSE_ADMIN_LISTEN: `127.0.0.1:${port}` }),
    ]);
    fails(wrong, 1, /failed \(HTTP 401\): M_UNKNOWN_TOKEN/);
    fails(down, 1, new RegExp(`cannot reach the admin API at http://127\\.0\\.0\\.1:${port}/.*ECONNREFUSED.*is gatehouse serve running`));
  });
});
