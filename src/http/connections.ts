/**
 * Limits on the federation listener's connections (issue #12: TLS connections that never sent a
 * request stayed open forever, and nothing capped how many there were).
 *
 * - headersTimeoutMs: from accepting a connection (or finishing a request) until the next request's
 *   headers are complete. Node's own headersTimeout only starts at the first byte of a request, so
 *   a connection that sends nothing (or only a TLS handshake) is closed here, and the TLS handshake
 *   itself gets the same bound (handshakeTimeout).
 * - idleTimeoutMs: how long a keep-alive connection may wait between requests.
 * - requestTimeoutMs: the whole request (headers and body) must arrive within it (408).
 * - maxConnections / maxConnectionsPerIp: further connections are closed on accept (0: no cap).
 *   The per-IP count is by TCP peer address: behind a TLS-terminating proxy every connection
 *   comes from the proxy, so set it to 0 there.
 */
import type http from "node:http";
import type https from "node:https";
import type { Socket } from "node:net";
import tls from "node:tls";

export interface ConnectionLimits {
  headersTimeoutMs: number;
  idleTimeoutMs: number;
  requestTimeoutMs: number;
  maxConnections: number;
  maxConnectionsPerIp: number;
}

/** Options for http.createServer / https.createServer (some limits can only be set there). */
export function connectionServerOptions(limits: ConnectionLimits): { headersTimeout: number; requestTimeout: number; keepAliveTimeout: number; connectionsCheckingInterval: number; handshakeTimeout: number } {
  return {
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.idleTimeoutMs,
    // How often Node looks for connections past headersTimeout / requestTimeout (default 30 s).
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(limits.headersTimeoutMs / 4))),
    handshakeTimeout: limits.headersTimeoutMs,
  };
}

/** Caps and the wait for a first request, on a server built with connectionServerOptions. */
export function applyConnectionLimits(server: http.Server | https.Server, limits: ConnectionLimits): void {
  if (limits.maxConnections > 0) server.maxConnections = limits.maxConnections;
  const perIp = new Map<string, number>();
  server.on("connection", (socket: Socket) => {
    if (limits.maxConnectionsPerIp > 0) {
      const ip = socket.remoteAddress ?? "";
      const count = (perIp.get(ip) ?? 0) + 1;
      if (count > limits.maxConnectionsPerIp) {
        socket.destroy();
        return;
      }
      perIp.set(ip, count);
      socket.once("close", () => {
        const left = (perIp.get(ip) ?? 1) - 1;
        if (left <= 0) perIp.delete(ip);
        else perIp.set(ip, left);
      });
    }
  });
  // The HTTP layer's socket: the TCP socket, or the TLS socket once its handshake is done.
  const httpSocketEvent = server instanceof tls.Server ? "secureConnection" : "connection";
  server.on(httpSocketEvent, (socket: Socket) => {
    const timer = setTimeout(() => {
      socket.destroy();
    }, limits.headersTimeoutMs);
    timer.unref();
    waiting.set(socket, timer);
    socket.once("close", () => clearTimeout(timer));
  });
  const waiting = new WeakMap<Socket, NodeJS.Timeout>();
  server.on("request", (req: http.IncomingMessage) => {
    const timer = waiting.get(req.socket);
    if (timer) {
      clearTimeout(timer);
      waiting.delete(req.socket);
    }
  });
}
