import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import express from "express";
import { expressServerOptions } from "../../src/http/express-server.js";

async function serve(app: express.Express): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer(expressServerOptions(app), app);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

test("express-server: requests and responses are built with the app's prototypes", async () => {
  const app = express();
  let seen: { reqProto: boolean; resProto: boolean; app: boolean; param: string; query: unknown } | null = null;
  app.get("/things/:id", (req, res) => {
    seen = {
      reqProto: Object.getPrototypeOf(req) === app.request,
      resProto: Object.getPrototypeOf(res) === app.response,
      app: req.app === app,
      param: req.params.id!,
      query: req.query.x,
    };
    res.status(201).json({ ok: true });
  });
  const s = await serve(app);
  try {
    const r = await fetch(`${s.url}/things/a%20b?x=1`);
    assert.equal(r.status, 201);
    assert.deepEqual(await r.json(), { ok: true });
    assert.deepEqual(seen, { reqProto: true, resProto: true, app: true, param: "a b", query: "1" });
  } finally {
    await s.close();
  }
});

test("express-server: bodies stream and errors reach the app's error handler", async () => {
  const app = express();
  app.use(express.json());
  app.put("/echo", (req, res) => void res.json(req.body));
  app.get("/boom", () => {
    throw new Error("boom");
  });
  app.use((err: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => void res.status(500).json({ error: err.message }));
  const s = await serve(app);
  try {
    const r = await fetch(`${s.url}/echo`, { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify({ a: [1, 2] }) });
    assert.deepEqual(await r.json(), { a: [1, 2] });
    const b = await fetch(`${s.url}/boom`);
    assert.equal(b.status, 500);
    assert.deepEqual(await b.json(), { error: "boom" });
  } finally {
    await s.close();
  }
});

test("express-server: each app gets its own prototypes", () => {
  const a = express();
  const b = express();
  const oa = expressServerOptions(a);
  const ob = expressServerOptions(b);
  assert.equal(oa.IncomingMessage.prototype, a.request);
  assert.equal(ob.ServerResponse.prototype, b.response);
  assert.notEqual(oa.IncomingMessage.prototype, ob.IncomingMessage.prototype);
});
