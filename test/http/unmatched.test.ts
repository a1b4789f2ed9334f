/** Unknown endpoints answer 404 M_UNRECOGNIZED; a known path with the wrong method 405 M_UNRECOGNIZED + Allow. */
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestGatehouse, FED, ADMIN, enc } from "../support/gatehouse.js";
import { RemoteServer } from "../support/remote-server.js";

describe("unmatched requests", () => {
  let gh: TestGatehouse;
  let remote: RemoteServer;
  before(async () => {
    remote = await RemoteServer.start();
    gh = await TestGatehouse.start({ name: "unmatched" });
  });
  after(async () => {
    await gh.cleanup();
    await remote.close();
  });

  test("federation: wrong method on make_knock → 405 with Allow; unknown path → 404", async () => {
    const uri = `${FED}/v1/make_knock/${enc("!r:x")}/${enc(remote.userId("a"))}?ver=12`;
    const res = await gh.fed(remote, "PUT", uri, {});
    assert.equal(res.status, 405, res.text);
    assert.equal(res.body.errcode, "M_UNRECOGNIZED");
    assert.equal(res.headers.allow, "GET, HEAD");
    const unknown = await gh.fed(remote, "GET", `${FED}/v1/no_such_endpoint`);
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.errcode, "M_UNRECOGNIZED");
  });

  test("admin: wrong method on /rooms → 405 listing GET and POST", async () => {
    const res = await gh.admin.delete(`${ADMIN}/rooms`);
    assert.equal(res.status, 405, res.text);
    assert.equal(res.headers.allow, "GET, HEAD, POST");
  });
});
