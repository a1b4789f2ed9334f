import { test, describe } from "node:test";
import assert from "node:assert/strict";
import {
  ACL_DENIED_MESSAGE,
  checkServerAcl,
  compileServerAcl,
  isAclProtectedPath,
  isIpLiteralHost,
  NO_ACL,
  serverAllowedByAcl,
} from "../../src/protocol/server-acl.js";
import { loadVectors } from "../support/vectors.js";

interface AclCase {
  source: string;
  level: "evaluator" | "server_name";
  acl_content: unknown;
  server_name: string;
  expected_allowed: boolean;
  note?: string;
  kind: string;
}

const vectors = loadVectors<{ cases: AclCase[] }>("acl-cases");

describe("server ACL: shared vectors (acl-cases.json)", () => {
  test("vector file holds the 50 documented cases", () => {
    assert.equal(vectors.cases.length, 50);
  });
  for (const [i, c] of vectors.cases.entries()) {
    const name = `#${i} ${c.level} ${JSON.stringify(c.acl_content)} ${c.server_name} → ${c.expected_allowed ? "allow" : "deny"}${c.note ? ` (${c.note})` : ""}`;
    test(name, () => {
      const acl = compileServerAcl(c.acl_content);
      // Evaluator cases give a host whose port is already gone (and "1:2:3:4", which is no
      // server name at all); server_name cases go through port stripping.
      const allowed = c.level === "evaluator" ? acl.allowsHost(c.server_name) : acl.allowsServer(c.server_name);
      assert.equal(allowed, c.expected_allowed);
      if (c.level === "server_name") assert.equal(serverAllowedByAcl(c.acl_content, c.server_name), c.expected_allowed);
    });
  }
});

describe("server ACL: content parsing", () => {
  test("no event (null/undefined) allows everyone, including IP literals", () => {
    for (const content of [null, undefined]) {
      const acl = compileServerAcl(content);
      assert.equal(acl, NO_ACL);
      assert.ok(acl.allowsServer("1.2.3.4"));
      assert.ok(acl.allowsServer("[::1]:8448"));
    }
  });
  test("redacted ACL ({}) denies everyone", () => {
    assert.equal(serverAllowedByAcl({}, "example.org"), false);
  });
  test("non-object content is treated as {} (deny)", () => {
    for (const content of ["allow", 5, true, ["*"]]) assert.equal(serverAllowedByAcl(content, "example.org"), false, JSON.stringify(content));
  });
  test("non-string entries are ignored, strings still apply", () => {
    const acl = compileServerAcl({ allow: [1, null, { a: 1 }, ["*"], "good.org"], deny: [true, "bad.org"] });
    assert.deepEqual(acl.allow, ["good.org"]);
    assert.deepEqual(acl.deny, ["bad.org"]);
    assert.ok(acl.allowsServer("good.org"));
    assert.equal(acl.allowsServer("other.org"), false);
  });
  test("non-list deny is ignored (treated as [])", () => {
    assert.ok(serverAllowedByAcl({ allow: ["*"], deny: "evil.com" }, "evil.com"));
    assert.ok(serverAllowedByAcl({ allow: ["*"], deny: { "evil.com": true } }, "evil.com"));
  });
  test("allow_ip_literals: only exactly false denies literals", () => {
    for (const value of [true, "false", 0, null, undefined, "no"])
      assert.ok(compileServerAcl({ allow: ["*"], allow_ip_literals: value }).allowIpLiterals, String(value));
    assert.equal(compileServerAcl({ allow: ["*"], allow_ip_literals: false }).allowIpLiterals, false);
  });
  test("compiling the same content object twice returns the cached matcher", () => {
    const content = { allow: ["*"] };
    assert.equal(compileServerAcl(content), compileServerAcl(content));
    assert.notEqual(compileServerAcl({ allow: ["*"] }), compileServerAcl(content));
  });
  test("the compiled matcher is frozen", () => {
    const acl = compileServerAcl({ allow: ["a"] });
    assert.ok(Object.isFrozen(acl));
    assert.ok(Object.isFrozen(acl.allow));
  });
});

describe("server ACL: glob semantics", () => {
  const allows = (pattern: string, host: string) => compileServerAcl({ allow: [pattern] }).allowsHost(host);

  test("* matches zero or more characters, including dots", () => {
    assert.ok(allows("a*b", "ab"));
    assert.ok(allows("a*b", "a.x.y.b"));
    assert.ok(allows("*", ""));
    assert.ok(allows("*.org", ".org"));
  });
  test("? matches exactly one character", () => {
    assert.ok(allows("a?c", "abc"));
    assert.ok(allows("a?c", "a.c"));
    assert.equal(allows("a?c", "ac"), false);
    assert.equal(allows("a?c", "abbc"), false);
    assert.ok(allows("??", "ab"));
    assert.equal(allows("??", "a"), false);
  });
  test("mixed wildcard runs: ?* needs at least one, *?* too", () => {
    assert.ok(allows("a?*", "ab"));
    assert.equal(allows("a?*", "a"), false);
    assert.ok(allows("a*?*b", "axb"));
    assert.equal(allows("a*?*b", "ab"), false);
    assert.ok(allows("a**b", "ab"));
    assert.ok(allows("?**?", "ab"));
    assert.equal(allows("?**?", "a"), false);
  });
  test("anchored at both ends", () => {
    assert.equal(allows("evil.com", "evil.com.au"), false);
    assert.equal(allows("evil.com", "notevil.com"), false);
    assert.equal(allows("*.evil.com", "evil.com"), false);
    assert.ok(allows("*evil.com", "notevil.com"));
  });
  test("regex metacharacters are literal", () => {
    assert.ok(allows("a.b", "a.b"));
    assert.equal(allows("a.b", "axb"), false);
    for (const meta of ["a+b", "a|b", "(a)", "[ab]", "a{2}", "^a$", "a\\b", "a$"]) {
      assert.ok(allows(meta, meta), meta);
      assert.equal(allows(meta, "ab"), false, meta);
    }
  });
  test("case-insensitive for ASCII in both pattern and host", () => {
    assert.ok(allows("EXAMPLE.org", "example.ORG"));
    assert.ok(allows("Ex*.ORG", "example.org"));
    assert.ok(allows("ex?mple.org", "EXAMPLE.ORG"));
  });
  test("no Unicode case folding: the Kelvin sign does not match k", () => {
    assert.equal(allows("\u212A.org", "k.org"), false);
    assert.equal(allows("\u212A*", "k.org"), false);
  });
  test("? counts code points, not UTF-16 units", () => {
    assert.ok(allows("?", "😀"));
    assert.equal(allows("??", "😀"), false);
  });
  test("pathological patterns finish quickly (no exponential backtracking)", () => {
    const pattern = "*a".repeat(30) + "*b";
    const host = "a".repeat(250);
    const start = process.hrtime.bigint();
    assert.equal(allows(pattern, host), false);
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    assert.ok(ms < 200, `took ${ms} ms`);
  });
  test("agrees with a regex translation on 20,000 random small patterns and hosts", () => {
    // Deterministic LCG so a failure reproduces.
    let seed = 12345;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
    const pick = (alphabet: string, max: number) => Array.from({ length: rand(max + 1) }, () => alphabet[rand(alphabet.length)]).join("");
    for (let i = 0; i < 20000; i++) {
      const pattern = pick("ab.*?A", 6);
      const host = pick("abB.", 7);
      const source = pattern.replace(/[.*?]/g, (c) => (c === "*" ? "[^]*" : c === "?" ? "[^]" : "\\."));
      const expected = new RegExp(`^${source}$`, "i").test(host);
      assert.equal(allows(pattern, host), expected, `${JSON.stringify(pattern)} vs ${JSON.stringify(host)}`);
    }
  });
  test("a pattern with a port never matches (ports are stripped from the server first)", () => {
    const acl = compileServerAcl({ allow: ["*"], deny: ["evil.com:8448"] });
    assert.ok(acl.allowsServer("evil.com:8448"));
  });
});

describe("server ACL: evaluation order and server names", () => {
  const spec = { allow_ip_literals: false, allow: ["*"], deny: ["*.evil.com", "evil.com"] };

  test("deny wins over allow even for an exact allow entry", () => {
    assert.equal(serverAllowedByAcl({ allow: ["evil.com"], deny: ["evil.com"] }, "evil.com"), false);
  });
  test("ports never matter", () => {
    for (const name of ["evil.com", "evil.com:1", "evil.com:8448", "evil.com:65535"]) assert.equal(serverAllowedByAcl(spec, name), false, name);
    for (const name of ["good.org", "good.org:1", "good.org:8448"]) assert.ok(serverAllowedByAcl(spec, name), name);
  });
  test("IPv6 literal with and without port, with allow_ip_literals false", () => {
    for (const name of ["[::1]", "[::1]:8448", "[2001:db8::1]:443"]) assert.equal(serverAllowedByAcl(spec, name), false, name);
  });
  test("IP literals can still be matched by globs when literals are allowed", () => {
    const acl = compileServerAcl({ allow: ["[::1]", "10.0.0.*"] });
    assert.ok(acl.allowsServer("[::1]:8448"));
    assert.ok(acl.allowsServer("10.0.0.7:8448"));
    assert.equal(acl.allowsServer("10.0.1.7"), false);
  });
  test("uppercase server names are matched case-insensitively", () => {
    assert.equal(serverAllowedByAcl(spec, "EVIL.COM:8448"), false);
    assert.equal(serverAllowedByAcl(spec, "Sub.Evil.Com"), false);
  });
  test("allowsServer denies strings that are not server names (fail closed)", () => {
    const acl = compileServerAcl({ allow: ["*"] });
    for (const name of ["", "evil.com.", "evil.com:0", "evil.com:65536", "1:2:3:4", "bücher.example", "[::1"])
      assert.equal(acl.allowsServer(name), false, name);
  });
  test("trailing-dot twin cannot dodge a deny entry", () => {
    assert.equal(serverAllowedByAcl({ allow: ["*"], deny: ["evil.com"] }, "evil.com."), false);
  });
  test("empty allow list denies everyone even with no deny list", () => {
    assert.equal(serverAllowedByAcl({ allow: [] }, "example.org"), false);
    assert.equal(serverAllowedByAcl({ allow: [], allow_ip_literals: true }, "1.2.3.4"), false);
  });
  test("out-of-range dotted quads are treated as IP literals by the host evaluator", () => {
    assert.ok(isIpLiteralHost("999.1.1.1"));
    assert.ok(isIpLiteralHost("[::1]"));
    assert.equal(isIpLiteralHost("1a.2.3.4"), false);
    assert.equal(isIpLiteralHost("1.2.3"), false);
    assert.equal(compileServerAcl({ allow: ["*"], allow_ip_literals: false }).allowsHost("999.1.1.1"), false);
  });
  test("checkServerAcl returns Synapse's 403 body", () => {
    const acl = compileServerAcl(spec);
    assert.equal(checkServerAcl(acl, "example.org"), null);
    const err = checkServerAcl(acl, "evil.com")!;
    assert.equal(err.status, 403);
    assert.deepEqual(err.toJSON(), { errcode: "M_FORBIDDEN", error: ACL_DENIED_MESSAGE });
  });
});

describe("server ACL: protected endpoints", () => {
  const protectedPaths = [
    "/_matrix/federation/v1/make_join/!r:x/@u:y",
    "/_matrix/federation/v1/make_leave/!r:x/@u:y",
    "/_matrix/federation/v1/send_join/!r:x/$e",
    "/_matrix/federation/v2/send_join/!r:x/$e",
    "/_matrix/federation/v1/send_leave/!r:x/$e",
    "/_matrix/federation/v2/send_leave/!r:x/$e",
    "/_matrix/federation/v1/invite/!r:x/$e",
    "/_matrix/federation/v2/invite/!r:x/$e",
    "/_matrix/federation/v1/make_knock/!r:x/@u:y",
    "/_matrix/federation/v1/send_knock/!r:x/$e",
    "/_matrix/federation/v1/state/!r:x",
    "/_matrix/federation/v1/state_ids/!r:x",
    "/_matrix/federation/v1/backfill/!r:x",
    "/_matrix/federation/v1/event_auth/!r:x/$e",
    "/_matrix/federation/v1/get_missing_events/!r:x",
    "/_matrix/federation/v1/timestamp_to_event/!r:x",
    "/_matrix/federation/v1/STATE/!r:x",
  ];
  for (const p of protectedPaths) test(`protected: ${p}`, () => assert.ok(isAclProtectedPath(p)));
  const open = [
    "/_matrix/federation/v1/send/123",
    "/_matrix/federation/v1/version",
    "/_matrix/key/v2/server",
    "/_matrix/federation/v1/query/directory",
    "/_matrix/federation/v1/event/$e",
    "/_matrix/federation/v1/statefoo/!r:x",
    "/_matrix/federation/v1/state",
  ];
  for (const p of open) test(`not protected: ${p}`, () => assert.equal(isAclProtectedPath(p), false));
});
