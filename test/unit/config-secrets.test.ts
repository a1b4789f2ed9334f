// Secret settings from files (`*_FILE`, as Kubernetes and Docker mount secrets): loadConfig reads
// them, refuses ambiguity and unreadable files with a ConfigError naming the variable, and puts
// REDIS_PASSWORD into REDIS_URL so the URL itself can live in a ConfigMap.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig, secretSetting, ConfigError } from "../../src/config.js";

let dir: string;
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};
before(() => (dir = mkdtempSync(join(tmpdir(), "gatehouse-config-secrets-"))));
after(() => rmSync(dir, { recursive: true, force: true }));

describe("*_FILE secret settings", () => {
  const TOKEN = "0123456789abcdef-token";
  const accepted: { why: string; env: () => Record<string, string>; token: string | null; redisUrl: string | null }[] = [
    { why: "the token from a file, one trailing newline removed (what `echo` and kubectl write)", env: () => ({ GATEHOUSE_ADMIN_TOKEN_FILE: file("t1", `${TOKEN}\n`) }), token: TOKEN, redisUrl: null },
    { why: "a CRLF line end is one newline too", env: () => ({ GATEHOUSE_ADMIN_TOKEN_FILE: file("t2", `${TOKEN}\r\n`) }), token: TOKEN, redisUrl: null },
    { why: "a relative path is relative to the working folder", env: () => (file("t3", TOKEN), { GATEHOUSE_ADMIN_TOKEN_FILE: "t3" }), token: TOKEN, redisUrl: null },
    { why: "an empty variable counts as unset, as everywhere in loadConfig", env: () => ({ GATEHOUSE_ADMIN_TOKEN: "", GATEHOUSE_ADMIN_TOKEN_FILE: file("t4", TOKEN) }), token: TOKEN, redisUrl: null },
    { why: "the whole Redis URL from a file", env: () => ({ REDIS_URL_FILE: file("u1", "rediss://:pw@redis.example.net:6380/0\n") }), token: null, redisUrl: "rediss://:pw@redis.example.net:6380/0" },
    { why: "the password alone from a Secret, the URL from a ConfigMap", env: () => ({ REDIS_URL: "redis://redis.example.net:6379/0", REDIS_PASSWORD_FILE: file("p1", "s3cret\n") }), token: null, redisUrl: "redis://:s3cret@redis.example.net:6379/0" },
    { why: "a password with URL-special characters is percent-encoded (ioredis decodes it)", env: () => ({ REDIS_URL: "redis://redis.example.net:6379", REDIS_PASSWORD: "p@ss/w:rd" }), token: null, redisUrl: "redis://:p%40ss%2Fw%3Ard@redis.example.net:6379" },
    { why: "a Redis Cluster's seed nodes take the password too", env: () => ({ REDIS_URL: "redis-cluster://redis-0.example.net:6379,redis-1.example.net:6379", REDIS_PASSWORD: "p@ss" }), token: null, redisUrl: "redis-cluster://:p%40ss@redis-0.example.net:6379,redis-1.example.net:6379" },
    { why: "a Redis Cluster ACL user keeps its name", env: () => ({ REDIS_URL: "redis-cluster://gatehouse@redis-0.example.net:6379", REDIS_PASSWORD: "pw" }), token: null, redisUrl: "redis-cluster://gatehouse:pw@redis-0.example.net:6379" },
    { why: "a Redis ACL user in the URL keeps its name", env: () => ({ REDIS_URL: "redis://gatehouse@redis.example.net:6379", REDIS_PASSWORD: "pw" }), token: null, redisUrl: "redis://gatehouse:pw@redis.example.net:6379" },
  ];
  for (const c of accepted) {
    test(`accepted: ${c.why}`, () => {
      const config = loadConfig(c.env(), dir);
      assert.equal(config.admin.token, c.token);
      assert.equal(config.redisUrl, c.redisUrl);
    });
  }

  const refused: { why: string; env: () => Record<string, string>; key: string; message: RegExp }[] = [
    { why: "both forms set: which one wins would be a guess", env: () => ({ GATEHOUSE_ADMIN_TOKEN: TOKEN, GATEHOUSE_ADMIN_TOKEN_FILE: file("b1", TOKEN) }), key: "GATEHOUSE_ADMIN_TOKEN_FILE", message: /set either GATEHOUSE_ADMIN_TOKEN or GATEHOUSE_ADMIN_TOKEN_FILE, not both/ },
    { why: "a missing file (the Secret is not mounted)", env: () => ({ GATEHOUSE_ADMIN_TOKEN_FILE: join(dir, "absent") }), key: "GATEHOUSE_ADMIN_TOKEN_FILE", message: /cannot read .*absent.*ENOENT/ },
    { why: "a folder instead of a file (a Secret mounted without subPath/key)", env: () => ({ REDIS_URL_FILE: dir }), key: "REDIS_URL_FILE", message: /cannot read .*EISDIR/ },
    { why: "an empty file", env: () => ({ REDIS_PASSWORD_FILE: file("e1", "\n"), REDIS_URL: "redis://r.example.net" }), key: "REDIS_PASSWORD_FILE", message: /is empty/ },
    { why: "a file's value is checked like the variable's (token too short)", env: () => ({ GATEHOUSE_ADMIN_TOKEN_FILE: file("s1", "short") }), key: "GATEHOUSE_ADMIN_TOKEN", message: /at least 16 characters/ },
    { why: "a file's value is checked like the variable's (not a Redis URL)", env: () => ({ REDIS_URL_FILE: file("s2", "redis.example.net:6379") }), key: "REDIS_URL", message: /expected redis:\/\// },
    { why: "a password without REDIS_URL (the embedded Redis has none)", env: () => ({ REDIS_PASSWORD: "pw" }), key: "REDIS_PASSWORD", message: /needs REDIS_URL/ },
    { why: "a cluster seed without a port (ioredis would guess 6379 for one node and not the others)", env: () => ({ REDIS_URL: "redis-cluster://redis-0.example.net,redis-1.example.net:6379" }), key: "REDIS_URL", message: /host:port,host:port/ },
    { why: "two passwords", env: () => ({ REDIS_URL: "redis://:a@r.example.net", REDIS_PASSWORD: "b" }), key: "REDIS_PASSWORD", message: /already has a password/ },
    { why: "a unix socket URL has no place for it", env: () => ({ REDIS_URL: "unix:///run/redis.sock", REDIS_PASSWORD: "b" }), key: "REDIS_PASSWORD", message: /redis:\/\/ and rediss:\/\// },
  ];
  for (const c of refused) {
    test(`refused: ${c.why}`, () => {
      assert.throws(
        () => loadConfig(c.env(), dir),
        (e: unknown) => e instanceof ConfigError && e.key === c.key && c.message.test(e.message),
      );
    });
  }

  test("secretSetting is the general mechanism: any key gets a _FILE form", () => {
    assert.equal(secretSetting({ GATEHOUSE_AS_TOKEN_FILE: file("as", "hs-token\n") }, "GATEHOUSE_AS_TOKEN", dir), "hs-token");
    assert.equal(secretSetting({ GATEHOUSE_AS_TOKEN: "direct" }, "GATEHOUSE_AS_TOKEN", dir), "direct");
    assert.equal(secretSetting({}, "GATEHOUSE_AS_TOKEN", dir), null);
  });
});
