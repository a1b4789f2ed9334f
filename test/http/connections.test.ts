// The federation listener's connection limits (#12 deliverable 4), on a real `serve` process
// object (startGatehouse: HTTPS with a generated certificate, real Redis): connections that never
// send a request are closed, idle keep-alive connections are closed, and the caps hold.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../../src/config.js";
import { createLogger } from "../../src/logger.js";
import { startGatehouse, type RunningGatehouse } from "../../src/server.js";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { requireRedisUrl } from "../support/gatehouse.js";
import { applyConnectionLimits, connectionServerOptions } from "../../src/http/connections.js";

let running: RunningGatehouse;
let dataDir: string;

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "gatehouse-connections-"));
  const config = loadConfig(
    {
      REDIS_URL: requireRedisUrl(),
      GATEHOUSE_DATA_DIR: dataDir,
      GATEHOUSE_SERVER_NAME: "gatehouse.test",
      GATEHOUSE_FEDERATION_LISTEN: "127.0.0.1:0",
      GATEHOUSE_ADMIN_LISTEN: "127.0.0.1:0",
      GATEHOUSE_METRICS_LISTEN: "off",
      GATEHOUSE_RUN_WORKERS: "false",
      GATEHOUSE_LOG_LEVEL: "silent",
      GATEHOUSE_HEADERS_TIMEOUT_MS: "1000",
      GATEHOUSE_REQUEST_TIMEOUT_MS: "2000",
      GATEHOUSE_IDLE_TIMEOUT_MS: "1000",
      GATEHOUSE_MAX_CONNECTIONS_PER_IP: "4",
      GATEHOUSE_MAX_CONNECTIONS: "6",
    },
    dataDir,
  );
  running = await startGatehouse(config, createLogger("silent"));
});
after(async () => {
  // Only unauthenticated key and version requests are made: nothing is written to Redis.
  await running.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

/** Resolves with how long the socket stayed open (ms), or rejects when still open after `maxMs`. */
function closedWithin(socket: net.Socket, maxMs: number): Promise<number> {
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connection still open after ${maxMs} ms`));
    }, maxMs);
    socket.once("close", () => {
      clearTimeout(timer);
      resolve(Date.now() - start);
    });
    socket.on("error", () => undefined);
  });
}

const tcp = () => new Promise<net.Socket>((resolve, reject) => {
  const s = net.connect(running.federationPort, "127.0.0.1", () => resolve(s));
  s.once("error", reject);
});
const tlsConnect = () => new Promise<tls.TLSSocket>((resolve, reject) => {
  const s = tls.connect({ port: running.federationPort, host: "127.0.0.1", rejectUnauthorized: false, servername: "gatehouse.test" }, () => resolve(s));
  s.once("error", reject);
});

/** One HTTPS request on an open TLS socket; resolves with the status line. */
function requestOn(socket: tls.TLSSocket, path: string): Promise<string> {
  return new Promise((resolve) => {
    socket.once("data", (d: Buffer) => resolve(d.toString("latin1").split("\r\n")[0]!));
    socket.write(`GET ${path} HTTP/1.1\r\nHost: gatehouse.test\r\n\r\n`);
  });
}

describe("federation listener: connections", () => {
  const cases: { why: string; open: () => Promise<net.Socket> }[] = [
    { why: "a TCP connection that never starts TLS", open: tcp },
    { why: "a TLS connection that never sends a request (issue: stayed open forever)", open: tlsConnect },
  ];
  for (const c of cases) {
    test(`${c.why} is closed after GATEHOUSE_HEADERS_TIMEOUT_MS`, async () => {
      const socket = await c.open();
      const openFor = await closedWithin(socket, 8000);
      assert.ok(openFor >= 500, `closed too early (${openFor} ms): the timeout is 1000 ms`);
    });
  }

  test("a keep-alive connection is served, then closed after GATEHOUSE_IDLE_TIMEOUT_MS of idleness", async () => {
    const socket = await tlsConnect();
    assert.equal(await requestOn(socket, "/_matrix/federation/v1/version"), "HTTP/1.1 200 OK");
    assert.equal(await requestOn(socket, "/_matrix/key/v2/server"), "HTTP/1.1 200 OK");
    // Node's own default would be 5 s.
    await closedWithin(socket, 3000);
  });

  test("GATEHOUSE_MAX_CONNECTIONS_PER_IP: the fifth connection from one address is closed at once; a slot frees on close", async () => {
    const four = await Promise.all([tlsConnect(), tlsConnect(), tlsConnect(), tlsConnect()]);
    try {
      const fifth = await tcp();
      await closedWithin(fifth, 500);
      four[0]!.destroy();
      await new Promise((r) => setTimeout(r, 100));
      const again = await tlsConnect();
      assert.equal(await requestOn(again, "/_matrix/federation/v1/version"), "HTTP/1.1 200 OK");
      again.destroy();
    } finally {
      for (const s of four) s.destroy();
    }
  });

  test("GATEHOUSE_MAX_CONNECTIONS: beyond the total cap (other addresses of 127/8) connections are closed at once", async () => {
    const connectFrom = (localAddress: string) =>
      new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect({ port: running.federationPort, host: "127.0.0.1", localAddress }, () => resolve(s));
        s.once("error", reject);
      });
    const six = await Promise.all(["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3", "127.0.0.4", "127.0.0.4"].map(connectFrom));
    try {
      const seventh = await connectFrom("127.0.0.5");
      await closedWithin(seventh, 500);
    } finally {
      for (const s of six) s.destroy();
    }
  });
});

test("the wait for a first request ends with the request: a handler slower than the headers timeout still answers", async () => {
  const limits = { headersTimeoutMs: 300, idleTimeoutMs: 1000, requestTimeoutMs: 600, maxConnections: 0, maxConnectionsPerIp: 0 };
  const server = http.createServer(connectionServerOptions(limits), (_req, res) => setTimeout(() => res.end("late"), 1200));
  applyConnectionLimits(server, limits);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  try {
    const body = await new Promise<string>((resolve, reject) => {
      http.get({ port: (server.address() as AddressInfo).port, host: "127.0.0.1", path: "/" }, (res) => {
        let text = "";
        res.on("data", (c: Buffer) => (text += c.toString()));
        res.on("end", () => resolve(text));
      }).on("error", reject);
    });
    assert.equal(body, "late");
  } finally {
    server.closeAllConnections();
    server.close();
  }
});
