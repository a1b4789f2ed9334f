/**
 * Sends a 200 JSON answer a use case gives as chunks (rooms/json-chunks.ts), for answers too big
 * to build whole. The first chunk is produced before anything is sent: an error until then
 * (auth, 403, 404, a failed Redis read) goes the route's ordinary way, the spec's errcode and
 * status. The chunks go through stream.pipeline, which waits for 'drain' when the socket's buffer
 * is full (one chunk in hand at a time) and, when the client goes away, stops pulling chunks
 * (the use case's generator is closed: no more Redis reads). An error after the first byte
 * destroys the connection, so the client sees a broken answer rather than a 200 with half a JSON
 * body; the error is then rethrown for the error handler to log.
 */
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Response } from "express";

export async function sendJsonChunks(res: Response, chunks: AsyncIterable<Uint8Array | string>): Promise<void> {
  const it = chunks[Symbol.asyncIterator]();
  const first = await it.next();
  let failure: { err: unknown } | undefined;
  async function* all(): AsyncGenerator<Uint8Array | string> {
    try {
      if (first.done) return;
      yield first.value;
      for (;;) {
        const next = await it.next();
        if (next.done) return;
        yield next.value;
      }
    } catch (err) {
      failure = { err };
      // Before the connection is destroyed: the request's log line and metric (http/observe.ts)
      // tell a server failure from a client that left.
      res.locals.failedAfterFirstByte = true;
      throw err;
    } finally {
      await it.return?.();
    }
  }
  res.status(200).type("application/json");
  try {
    await pipeline(Readable.from(all(), { objectMode: true, highWaterMark: 1 }), res);
  } catch (err) {
    // The answer failed after its first byte: pipeline has destroyed the connection already.
    if (failure) throw failure.err;
    // Otherwise the client went away mid-answer: nothing to report to it.
  }
}
