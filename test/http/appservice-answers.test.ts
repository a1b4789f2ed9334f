// Answers from an application service are read within bounds, as answers from other servers are
// (net/federation-client.ts parseResponseBody): at most APPSERVICE_MAX_RESPONSE_BYTES, strict
// UTF-8, bounded nesting. A service that breaks these rules fails the request (the sender
// retries a transaction as for any failure) instead of filling memory or the stack. Real HTTP
// server on loopback, real AppserviceClient.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { AppserviceClient, AppserviceRequestError, APPSERVICE_MAX_RESPONSE_BYTES } from "../../src/appservice/as-client.js";
import type { AppserviceRegistration } from "../../src/appservice/registration.js";
import { MAX_BODY_NESTING } from "../../src/protocol/json-nesting.js";

let service: http.Server;
let reg: AppserviceRegistration;
/** What the service answers next: status and raw bytes, sent in 64 kB chunks. */
let next: { status: number; bytes: Buffer } = { status: 200, bytes: Buffer.from("{}") };
let bytesWritten = 0;

before(async () => {
  service = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(next.status, { "Content-Type": "application/json" });
      bytesWritten = 0;
      const write = (offset: number): void => {
        if (offset >= next.bytes.length || res.destroyed) return void res.end();
        const chunk = next.bytes.subarray(offset, offset + 65_536);
        bytesWritten += chunk.length;
        if (res.write(chunk)) write(offset + chunk.length);
        else res.once("drain", () => write(offset + chunk.length));
      };
      write(0);
    });
    res.on("error", () => undefined);
  });
  await new Promise<void>((r) => service.listen(0, "127.0.0.1", () => r()));
  const url = `http://127.0.0.1:${(service.address() as AddressInfo).port}`;
  reg = { id: "answers", url, hsToken: "hs-token-answers-01" } as AppserviceRegistration;
});

after(async () => {
  service.closeAllConnections();
  await new Promise<void>((r) => service.close(() => r()));
});

const deep = (n: number) => "[".repeat(n) + "]".repeat(n);

describe("answers from an application service are parsed within bounds", () => {
  const client = new AppserviceClient({ timeoutMs: 10_000, legacyAuthorization: false });
  const rows: { why: string; status: number; bytes: Buffer; ok: boolean; body?: unknown }[] = [
    { why: "the usual answer: {}", status: 200, bytes: Buffer.from("{}"), ok: true, body: {} },
    { why: "an empty body counts as {}", status: 200, bytes: Buffer.alloc(0), ok: true, body: {} },
    { why: "an error object is kept for the caller", status: 404, bytes: Buffer.from('{"errcode":"M_NOT_FOUND"}'), ok: true, body: { errcode: "M_NOT_FOUND" } },
    { why: "text that is not JSON is kept as text (ping shows it)", status: 500, bytes: Buffer.from("<html>oops</html>"), ok: true, body: "<html>oops</html>" },
    { why: "exactly the size cap is read", status: 200, bytes: Buffer.from(JSON.stringify({ s: "x".repeat(APPSERVICE_MAX_RESPONSE_BYTES - 8) })), ok: true },
    { why: "one byte over the cap fails the request", status: 200, bytes: Buffer.from(JSON.stringify({ s: "x".repeat(APPSERVICE_MAX_RESPONSE_BYTES - 7) })), ok: false },
    { why: "an endless answer is cut off at the cap, not read to the end", status: 200, bytes: Buffer.alloc(64 * 1_048_576, 0x20), ok: false },
    { why: "bytes that are not UTF-8 (an overlong '/') fail the request, never stored as U+FFFD", status: 200, bytes: Buffer.from([0x22, 0xc0, 0xaf, 0x22]), ok: false },
    { why: `${MAX_BODY_NESTING + 1} levels of nesting fail the request before JSON.parse`, status: 200, bytes: Buffer.from(deep(MAX_BODY_NESTING + 1)), ok: false },
    { why: `${MAX_BODY_NESTING} levels are fine`, status: 200, bytes: Buffer.from(deep(MAX_BODY_NESTING)), ok: true },
  ];
  for (const row of rows) {
    test(row.why, async () => {
      next = { status: row.status, bytes: row.bytes };
      const out = client.request(reg, "PUT", "/_matrix/app/v1/transactions/t1", "{}");
      if (row.ok) {
        const answer = await out;
        assert.equal(answer.status, row.status);
        if ("body" in row) assert.deepEqual(answer.body, row.body);
      } else {
        await assert.rejects(out, (e: unknown) => e instanceof AppserviceRequestError && e.status === row.status);
      }
    });
  }

  test("the endless answer was not written to the end (the client stopped reading)", async () => {
    next = { status: 200, bytes: Buffer.alloc(64 * 1_048_576, 0x20) };
    await assert.rejects(client.request(reg, "PUT", "/_matrix/app/v1/transactions/t2", "{}"));
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(bytesWritten < 32 * 1_048_576, `the service wrote ${bytesWritten} bytes`);
  });

  test("a user query to a service answering garbage is a no, not a crash", async () => {
    next = { status: 200, bytes: Buffer.from([0xff, 0xfe]) };
    assert.equal(await client.queryUser(reg, "@u:gatehouse.test"), false);
  });
});
