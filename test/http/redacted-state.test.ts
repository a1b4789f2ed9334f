// Redacted state in the auth rules and the current state: once a valid redaction of a state event
// is persisted, the auth rules, the state cache and state resolution read the redacted copy, as
// Synapse does (its event cache serves the pruned event). Over HTTP: what a remote server may do
// changes when the room's m.room.power_levels or m.room.server_acl is redacted.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, FED, ADMIN, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";
import { getRoomVersion } from "../../src/protocol/room-versions.js";
import { stateField } from "../../src/store/room-store.js";

let t: TestGatehouse;
let remote: RemoteServer;
let n = 0;
before(async () => {
  t = await TestGatehouse.start({ name: "redacted-state" });
  remote = await RemoteServer.start();
});
after(async () => {
  await t.cleanup();
  await remote.close();
});

function send(pdus: unknown[]) {
  return t.fed(remote, "PUT", `${FED}/v1/send/rs-${Date.now()}-${++n}`, { origin: remote.serverName, origin_server_ts: Date.now(), pdus });
}

async function setPowerLevels(roomId: string, change: (pl: Record<string, unknown>) => Record<string, unknown>): Promise<string> {
  const pl = structuredClone((await t.graph(roomId)).state.get(stateField("m.room.power_levels", ""))!.content) as Record<string, unknown>;
  const res = await t.admin.put(`${ADMIN}/rooms/${enc(roomId)}/state/m.room.power_levels/`).send({ content: change(pl) });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.event_id as string;
}

/** A remote user (power 0) invites another user of its server over /send: accepted or not. */
async function remoteInvites(roomId: string, sender: string): Promise<{ accepted: boolean; error?: string }> {
  const invite = await t.remoteEvent(remote, roomId, { type: "m.room.member", sender, state_key: remote.userId(`guest${++n}`), content: { membership: "invite" } });
  const res = await send([invite.pdu]);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  const result = res.body.pdus[invite.eventId] as { error?: string };
  return result.error === undefined ? { accepted: true } : { accepted: false, error: result.error };
}

describe("a redacted m.room.power_levels changes what a remote server may do", () => {
  const cases: { version: string; invitesAfter: boolean; why: string }[] = [
    { version: "10", invitesAfter: true, why: "v1–v10 redaction drops `invite`: the level falls back to its default, 0" },
    { version: "12", invitesAfter: false, why: "v11+ redaction keeps `invite` (MSC2176): still 100" },
  ];
  for (const c of cases) {
    test(`v${c.version}: invite level 100, a power-0 remote member invites after the power levels are redacted → ${c.invitesAfter ? "accepted" : "rejected"} (${c.why})`, async () => {
      const roomId = await t.createRoom({ room_version: c.version });
      const user = remote.userId(`member${++n}`);
      await t.knockAcceptJoin(remote, roomId, user);
      const plId = await setPowerLevels(roomId, (pl) => ({ ...pl, invite: 100 }));
      const before = await remoteInvites(roomId, user);
      assert.equal(before.accepted, false, "before the redaction: power 0 < invite 100");
      const red = await t.admin.post(`${ADMIN}/rooms/${enc(roomId)}/redact/${enc(plId)}`).send({ reason: "test" });
      assert.equal(red.status, 200, JSON.stringify(red.body));
      // The current state as the auth rules read it is the redacted copy.
      const current = (await t.gh.rooms.snapshot(roomId)).state.get(stateField("m.room.power_levels", ""))!;
      assert.equal((current.content as { invite?: number }).invite, getRoomVersion(c.version)!.id === "10" ? undefined : 100);
      const afterRedaction = await remoteInvites(roomId, user);
      assert.equal(afterRedaction.accepted, c.invitesAfter, `${c.why}: ${afterRedaction.error ?? ""}`);
    });
  }
});

describe("a redacted m.room.server_acl denies every server", () => {
  test("v12: a remote moderator redacts the ACL over /send; the ACL read from state is empty, and the room refuses the remote server (a redacted ACL keeps no key, and an ACL without allow allows nobody)", async () => {
    const roomId = await t.createRoom({ room_version: "12" });
    const mod = remote.userId(`mod${++n}`);
    await t.knockAcceptJoin(remote, roomId, mod);
    await setPowerLevels(roomId, (pl) => ({ ...pl, users: { ...(pl.users as Record<string, number>), [mod]: 100 } }));
    const acl = await t.admin.put(`${ADMIN}/rooms/${enc(roomId)}/state/m.room.server_acl/`).send({ content: { allow: ["*"], deny: ["evil.example"], allow_ip_literals: true } });
    assert.equal(acl.status, 200, JSON.stringify(acl.body));
    const ok = await t.fed(remote, "GET", `${FED}/v1/state_ids/${enc(roomId)}?event_id=${enc(acl.body.event_id)}`);
    assert.equal(ok.status, 200, "the ACL allows the remote server");
    const redaction = await t.remoteEvent(remote, roomId, { type: "m.room.redaction", sender: mod, content: { redacts: acl.body.event_id } });
    const res = await send([redaction.pdu]);
    assert.deepEqual(res.body, { pdus: { [redaction.eventId]: {} } });
    const current = (await t.gh.rooms.snapshot(roomId)).state.get(stateField("m.room.server_acl", ""))!;
    assert.deepEqual(current.content, {}, "the state holds the redacted ACL");
    const refused = await t.fed(remote, "GET", `${FED}/v1/state_ids/${enc(roomId)}?event_id=${enc(acl.body.event_id)}`);
    assert.equal(refused.status, 403, JSON.stringify(refused.body));
    assert.equal(refused.body.errcode, "M_FORBIDDEN");
  });
});
