// sendJsonChunks (http/json-stream.ts) over a real socket: an error before the first chunk is the
// route's ordinary error answer; after it, the connection is aborted; a client that stops reading
// holds the producer back (nothing piles up in the process); a client that goes away closes the
// producer (no more reads).
import { test, describe, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import express, { type Response } from "express";
import { errorHandler, route } from "../../src/http/errors.js";
import { sendJsonChunks } from "../../src/http/json-stream.js";
import { notFound } from "../../src/protocol/errors.js";
import { createLogger } from "../../src/logger.js";
import { observeRequests, type RequestSample } from "../../src/http/observe.js";

const CHUNK = Buffer.alloc(64 * 1024, "a");
let server: http.Server;
let port: number;
/** What the producer of the last request did. */
let produced: { pulls: number; closed: Promise<void>; maxWritableLength: number; res: Response };
/** The request samples observeRequests recorded (what the request metrics count). */
const samples: RequestSample[] = [];

/** A producer of `count` chunks of a JSON string (or one that fails after `failAfter` chunks). */
function producer(res: Response, count: number, failAfter?: number) {
  let closed!: () => void;
  produced = { pulls: 0, closed: new Promise((r) => (closed = r)), maxWritableLength: 0, res };
  const p = produced;
  return (async function* () {
    try {
      if (failAfter === 0) throw notFound("no such thing");
      yield '{"s":"';
      for (let i = 0; i < count; i++) {
        p.pulls++;
        p.maxWritableLength = Math.max(p.maxWritableLength, res.writableLength);
        if (failAfter !== undefined && i >= failAfter) throw new Error("the store went away");
        yield CHUNK;
      }
      yield '"}';
    } finally {
      closed();
    }
  })();
}

before(async () => {
  const app = express();
  app.use(observeRequests(createLogger("silent"), (sample) => samples.push(sample)));
  app.get(
    "/chunks",
    route(async (req, res) => {
      const failAfter = req.query.fail === undefined ? undefined : Number(req.query.fail);
      await sendJsonChunks(res, producer(res, Number(req.query.n), failAfter));
    }),
  );
  app.use(errorHandler(createLogger("silent")));
  server = http.createServer(app);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  port = (server.address() as AddressInfo).port;
});
after(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

/** Sends the GET; `onResponse` decides what the client does with the answer. */
function get(path: string, onResponse: (res: http.IncomingMessage, req: http.ClientRequest) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path }, (res) => {
      onResponse(res, req);
      resolve();
    });
    req.on("error", (err) => ((err as NodeJS.ErrnoException).code === "ECONNRESET" ? resolve() : reject(err)));
  });
}

/** Reads a whole answer: status, body, and whether it ended cleanly. */
async function read(path: string): Promise<{ status: number; body: string; complete: boolean }> {
  let out!: Promise<{ status: number; body: string; complete: boolean }>;
  await get(path, (res) => {
    out = new Promise((resolve) => {
      const parts: Buffer[] = [];
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString("utf8"), complete: res.complete });
      };
      res.on("data", (c: Buffer) => parts.push(c));
      res.on("end", finish);
      res.on("error", finish);
      res.on("close", finish);
    });
  });
  return out;
}

/** The sample recorded for the last request, once it is recorded (status and errcode). */
async function lastSample(): Promise<{ status: number; errcode: string }> {
  const deadline = Date.now() + 5000;
  while (samples.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  assert.equal(samples.length, 1, "one request sample per request");
  const { status, errcode } = samples[0]!;
  return { status, errcode };
}

describe("sendJsonChunks", () => {
  beforeEach(() => {
    samples.length = 0;
  });

  test("the chunks arrive whole, as one 200 JSON answer", async () => {
    const res = await read("/chunks?n=40");
    assert.equal(res.status, 200);
    assert.equal(res.complete, true);
    assert.equal((JSON.parse(res.body) as { s: string }).s.length, 40 * CHUNK.length);
    assert.deepEqual(await lastSample(), { status: 200, errcode: "" });
  });

  test("an error before the first chunk is the ordinary error answer (why: 403/404 must keep the spec's status and errcode)", async () => {
    const res = await read("/chunks?n=40&fail=0");
    assert.equal(res.status, 404);
    assert.equal(res.complete, true);
    assert.deepEqual(JSON.parse(res.body), { errcode: "M_NOT_FOUND", error: "no such thing" });
  });

  test("an error after the first byte aborts the connection (why: never a 200 with half a JSON body)", async () => {
    const res = await read("/chunks?n=40&fail=5");
    assert.equal(res.status, 200);
    assert.equal(res.complete, false);
    assert.ok(res.body.startsWith('{"s":"a'));
    assert.throws(() => JSON.parse(res.body));
    await produced.closed;
    // why: a failure the client saw as a broken answer is the server's, counted as a 5xx by the
    // request metrics (the 5xx alert), not lost because the answer never finished.
    assert.deepEqual(await lastSample(), { status: 500, errcode: "M_UNKNOWN" });
  });

  test("a client that stops reading holds the producer back: the response never buffers more than a chunk past its high-water mark (why: 58 MB must not pile up in the process)", async () => {
    let resume!: () => void;
    const resumed = new Promise<void>((r) => (resume = r));
    let body!: Promise<number>;
    await get("/chunks?n=200", (res) => {
      res.pause();
      body = new Promise((resolve) => {
        let bytes = 0;
        void resumed.then(() => {
          res.on("data", (c: Buffer) => (bytes += c.length));
          res.on("end", () => resolve(bytes));
          res.resume();
        });
      });
    });
    // Paused: the sockets' buffers fill and the response reports it is full. Then give the
    // producer 100 more turns of the event loop: held back, it makes nothing in them; without
    // backpressure it would keep pulling (each pull a few microtasks) and the response buffer grow.
    while (!produced.res?.writableNeedDrain) await new Promise((r) => setImmediate(r));
    const pullsWhenFull = produced.pulls;
    for (let i = 0; i < 100; i++) await new Promise((r) => setImmediate(r));
    assert.ok(produced.pulls <= pullsWhenFull + 2, `${produced.pulls - pullsWhenFull} chunks pulled while the client read nothing`);
    resume();
    assert.equal(await body, 200 * CHUNK.length + '{"s":""}'.length);
    // Without backpressure, the response's own buffer holds what the socket could not take: MBs.
    assert.ok(produced.maxWritableLength <= 16 * 1024 + 2 * CHUNK.length, `writableLength reached ${produced.maxWritableLength}`);
  });

  test("a client that goes away mid-answer closes the producer (why: no more Redis reads for nobody)", async () => {
    await get("/chunks?n=100000", (res, req) => {
      res.once("data", () => req.destroy());
    });
    await produced.closed;
    assert.ok(produced.pulls < 100_000);
    // why: the request is still counted, as the client's doing (499), not as a server error.
    assert.deepEqual(await lastSample(), { status: 499, errcode: "" });
  });
});
