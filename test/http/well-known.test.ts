// GET /.well-known/matrix/server on the federation listener (server-server API, "Server
// discovery"): served when GATEHOUSE_WELL_KNOWN_SERVER is set (TLS ending at an ingress on 443),
// absent (404, "no delegation") otherwise; the setting must be a server name.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse } from "../support/gatehouse.js";
import { loadConfig, ConfigError } from "../../src/config.js";
import { parseServerName } from "../../src/protocol/ids.js";
import { validateResponse } from "../support/openapi.js";

describe("/.well-known/matrix/server", () => {
  let on: TestGatehouse;
  let off: TestGatehouse;
  before(async () => {
    [on, off] = await Promise.all([
      TestGatehouse.start({ name: "wellknown-on", env: { GATEHOUSE_WELL_KNOWN_SERVER: "federation.gatehouse.example.org:443" } }),
      TestGatehouse.start({ name: "wellknown-off" }),
    ]);
  });
  after(async () => {
    await Promise.all([on.cleanup(), off.cleanup()]);
  });

  test("set: 200 JSON {m.server}, unauthenticated, cacheable for a day", async () => {
    const res = await on.plain("GET", "/.well-known/matrix/server");
    assert.equal(res.status, 200, res.text);
    assert.match(String(res.headers["content-type"]), /^application\/json/);
    assert.deepEqual(JSON.parse(res.text), { "m.server": "federation.gatehouse.example.org:443" });
    assert.equal(res.headers["cache-control"], "public, max-age=86400");
    // What a remote server does with it: a valid server name with an explicit port.
    assert.deepEqual(parseServerName(JSON.parse(res.text)["m.server"]), { host: "federation.gatehouse.example.org", port: 443, kind: "dns" });
    validateResponse("get", "/.well-known/matrix/server", res.status, JSON.parse(res.text), String(res.headers["content-type"]));
  });

  test("unset: 404 M_UNRECOGNIZED, which remote servers read as no delegation", async () => {
    const res = await off.plain("GET", "/.well-known/matrix/server");
    assert.equal(res.status, 404);
    assert.equal(res.body.errcode, "M_UNRECOGNIZED");
    validateResponse("get", "/.well-known/matrix/server", res.status, res.body, String(res.headers["content-type"]));
  });

  const refused = [
    { why: "a URL is not a server name", value: "https://federation.example.org" },
    { why: "a path is not a server name", value: "federation.example.org/matrix" },
    { why: "a port out of range", value: "federation.example.org:70000" },
  ];
  for (const c of refused) {
    test(`refused: ${c.why}`, () => {
      assert.throws(() => loadConfig({ GATEHOUSE_WELL_KNOWN_SERVER: c.value }, "/"), (e: unknown) => e instanceof ConfigError && e.key === "GATEHOUSE_WELL_KNOWN_SERVER");
    });
  }
});
