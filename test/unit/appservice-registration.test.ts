// Registration files: the standard YAML, validated with errors that name the file and field;
// ids and tokens unique across files; namespace regexes matched from the start, as Synapse does.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig, ConfigError } from "../../src/config.js";
import { parseRegistration } from "../../src/appservice/registration.js";
import { AppserviceRegistry } from "../../src/appservice/registry.js";

const SERVER = "gatehouse.test";
const GOOD = `
id: bridge
url: http://localhost:9000
as_token: as-secret-1
hs_token: hs-secret-1
sender_localpart: bridgebot
rate_limited: false
receive_ephemeral: true
namespaces:
  users:
    - exclusive: true
      regex: "@_bridge_.*:gatehouse\\\\.test"
  aliases:
    - exclusive: false
      regex: "#_bridge_.*"
  rooms: []
`;

describe("registration files", () => {
  test("a standard registration parses with every field", () => {
    const r = parseRegistration(GOOD, "bridge.yaml", SERVER);
    assert.equal(r.id, "bridge");
    assert.equal(r.url, "http://localhost:9000");
    assert.equal(r.asToken, "as-secret-1");
    assert.equal(r.hsToken, "hs-secret-1");
    assert.equal(r.senderLocalpart, "bridgebot");
    assert.equal(r.rateLimited, false);
    assert.equal(r.receiveEphemeral, true);
    assert.equal(r.namespaces.users.length, 1);
    assert.equal(r.namespaces.users[0]!.exclusive, true);
    assert.equal(r.namespaces.aliases[0]!.exclusive, false);
  });

  test("defaults: rate_limited true, receive_ephemeral false; url null means no pushes", () => {
    const r = parseRegistration(GOOD.replace("rate_limited: false\n", "").replace("receive_ephemeral: true\n", "").replace("url: http://localhost:9000", "url: null"), "f.yaml", SERVER);
    assert.equal(r.rateLimited, true);
    assert.equal(r.receiveEphemeral, false);
    assert.equal(r.url, null);
  });

  const bad: { why: string; edit: (s: string) => string; field: string }[] = [
    { why: "id is required", edit: (s) => s.replace("id: bridge\n", ""), field: "id" },
    { why: "url must be present (null is allowed, absent is not)", edit: (s) => s.replace("url: http://localhost:9000\n", ""), field: "url" },
    { why: "url must be http(s)", edit: (s) => s.replace("http://localhost:9000", "ftp://x"), field: "url" },
    { why: "as_token is required", edit: (s) => s.replace("as_token: as-secret-1\n", ""), field: "as_token" },
    { why: "hs_token must be a string", edit: (s) => s.replace("hs_token: hs-secret-1", "hs_token: 5"), field: "hs_token" },
    { why: "the two tokens must differ (the service could forge pushes otherwise)", edit: (s) => s.replace("hs-secret-1", "as-secret-1"), field: "hs_token" },
    { why: "sender_localpart must make a valid user ID", edit: (s) => s.replace("bridgebot", "Bridge Bot"), field: "sender_localpart" },
    { why: "exclusive is required on each namespace", edit: (s) => s.replace("    - exclusive: true\n      regex", "    - regex"), field: "namespaces.users[0].exclusive" },
    { why: "a regex must compile", edit: (s) => s.replace('"#_bridge_.*"', '"#_bridge_(["'), field: "namespaces.aliases[0].regex" },
    { why: "unknown namespace kinds are refused, not ignored", edit: (s) => s.replace("  rooms: []", "  groups: []"), field: "namespaces.groups" },
    { why: "rate_limited must be a boolean", edit: (s) => s.replace("rate_limited: false", "rate_limited: sometimes"), field: "rate_limited" },
    { why: "not YAML at all", edit: () => "id: [unclosed", field: "(document)" },
  ];
  for (const c of bad) {
    test(`refused: ${c.why}`, () => {
      assert.throws(() => parseRegistration(c.edit(GOOD), "bridge.yaml", SERVER), (e: Error) => {
        assert.ok(e.message.startsWith(`bridge.yaml: ${c.field}: `), e.message);
        return true;
      });
    });
  }

  test("loadConfig: files relative to the data folder; duplicate ids and tokens refused naming both files", () => {
    const dir = mkdtempSync(join(tmpdir(), "gh-reg-"));
    try {
      writeFileSync(join(dir, "a.yaml"), GOOD);
      writeFileSync(join(dir, "long-token.yaml"), GOOD.replace("as-secret-1", "as-secret-long-enough-1"));
      writeFileSync(join(dir, "b.yaml"), GOOD.replace("id: bridge", "id: other").replace("as-secret-1", "as-secret-2").replace("hs-secret-1", "hs-secret-2"));
      writeFileSync(join(dir, "dup-id.yaml"), GOOD.replace("as-secret-1", "as-secret-3").replace("hs-secret-1", "hs-secret-3"));
      writeFileSync(join(dir, "dup-token.yaml"), GOOD.replace("id: bridge", "id: third").replace("hs-secret-1", "hs-secret-4"));
      const env = (files: string) => ({ GATEHOUSE_DATA_DIR: dir, GATEHOUSE_APPSERVICE_REGISTRATION_FILES: files });
      const ok = loadConfig(env("a.yaml, b.yaml"), "/");
      assert.deepEqual(ok.appservices.map((r) => r.id), ["bridge", "other"]);
      assert.deepEqual(loadConfig({ GATEHOUSE_DATA_DIR: dir }, "/").appservices, [], "none by default");
      const refused = (files: string, pattern: RegExp) =>
        assert.throws(() => loadConfig(env(files), "/"), (e: Error) => e instanceof ConfigError && e.key === "GATEHOUSE_APPSERVICE_REGISTRATION_FILES" && pattern.test(e.message));
      refused("a.yaml,dup-id.yaml", /dup-id\.yaml: id: "bridge" is already used by .*a\.yaml/);
      refused("a.yaml,dup-token.yaml", /dup-token\.yaml: as_token: the same token is already used by .*a\.yaml/);
      refused("missing.yaml", /missing\.yaml: cannot be read: ENOENT/);
      assert.throws(
        () => loadConfig({ ...env("long-token.yaml"), GATEHOUSE_ADMIN_TOKEN: "as-secret-long-enough-1" }, "/"),
        /as_token: must differ from GATEHOUSE_ADMIN_TOKEN/,
        "the admin API keeps its own token",
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("namespaces", () => {
  const reg = parseRegistration(GOOD, "bridge.yaml", SERVER);
  const other = parseRegistration(GOOD.replace("id: bridge", "id: b2").replace("as-secret-1", "x1").replace("hs-secret-1", "x2").replace("@_bridge_", "@_other_"), "b2.yaml", SERVER);
  const registry = new AppserviceRegistry([reg, other], SERVER);
  const cases: { why: string; user: string; masquerade: boolean; exclusiveOwner: string | undefined }[] = [
    { why: "a namespace user", user: "@_bridge_alice:gatehouse.test", masquerade: true, exclusiveOwner: "bridge" },
    { why: "the sender_localpart user is always the service's own", user: "@bridgebot:gatehouse.test", masquerade: true, exclusiveOwner: undefined },
    { why: "matched from the start only: a user merely containing the pattern is outside", user: "@x_bridge_alice:gatehouse.test", masquerade: false, exclusiveOwner: undefined },
    { why: "another service's exclusive namespace", user: "@_other_bob:gatehouse.test", masquerade: false, exclusiveOwner: "b2" },
  ];
  for (const c of cases) {
    test(c.why, () => {
      assert.equal(registry.mayMasquerade(reg, c.user), c.masquerade);
      assert.equal(registry.exclusiveOwner("users", c.user)?.id, c.exclusiveOwner);
    });
  }
  test("tokens find their service; hs_tokens authenticate nothing here", () => {
    assert.equal(registry.byAsToken("as-secret-1")?.id, "bridge");
    assert.equal(registry.byAsToken("hs-secret-1"), undefined);
  });
});
