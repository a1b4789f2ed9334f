/**
 * Sends a 200 JSON answer a use case gives as chunks (rooms/json-chunks.ts), for answers too big
 * to build whole. The first chunk is produced before anything is sent: an error until then
 * (auth, 403, 404, a failed Redis read) goes the route's ordinary way, the spec's errcode and
 * status. Then one chunk is in hand at a time: the next is pulled once the socket's buffer has
 * room ('drain'); when the client goes away no more chunks are pulled (the use case's generator
 * is closed: no more Redis reads). An error after the first byte destroys the connection, so the
 * client sees a broken answer rather than a 200 with half a JSON body; the error is then rethrown
 * for the error handler to log.
 *
 * A chunk given as several Buffers (a batch of events as read from Redis, with the commas between
 * them) is copied into one of two buffers kept for the answer and written as one HTTP chunk; a
 * buffer is filled again once the socket has written it (the write's callback). Concatenating
 * each batch into a new Buffer put a second copy of the answer through external memory, garbage
 * until V8 collected it: a big answer's peak heap + external was about twice its size
 * (bench/README.md, "Big-room reads").
 */
import type { Response } from "express";

/** One piece of the answer: bytes, text, or several Buffers sent as one. */
export type JsonChunk = Uint8Array | string | readonly Uint8Array[];

/** Two reusable buffers the parts of a chunk are copied into (see above). */
class PackBuffers {
  private readonly slots: { buf: Buffer; busy: boolean }[] = [
    { buf: Buffer.alloc(0), busy: false },
    { buf: Buffer.alloc(0), busy: false },
  ];

  get hasFree(): boolean {
    return this.slots.some((s) => !s.busy);
  }

  /** `parts` copied into a free buffer (grown when too small), and the call that frees it again. */
  pack(parts: readonly Uint8Array[]): { data: Buffer; release: () => void } {
    const slot = this.slots.find((s) => !s.busy)!;
    let total = 0;
    for (const p of parts) total += p.length;
    if (slot.buf.length < total) slot.buf = Buffer.allocUnsafeSlow(Math.max(total, 64 * 1024));
    let at = 0;
    for (const p of parts) {
      slot.buf.set(p, at);
      at += p.length;
    }
    slot.busy = true;
    return { data: slot.buf.subarray(0, total), release: () => (slot.busy = false) };
  }
}

export async function sendJsonChunks(res: Response, chunks: AsyncIterable<JsonChunk>): Promise<void> {
  const it = chunks[Symbol.asyncIterator]();
  const first = await it.next();
  res.status(200).type("application/json");
  const buffers = new PackBuffers();
  let gone = false;
  let wake: (() => void) | undefined;
  const poke = () => wake?.();
  const onClose = () => {
    gone = true;
    poke();
  };
  res.on("close", onClose);
  res.on("drain", poke);
  /** Resolves once `ready()` holds or the client went away. */
  const until = (ready: () => boolean) =>
    new Promise<void>((resolve) => {
      if (gone || ready()) return resolve();
      wake = () => {
        if (!gone && !ready()) return;
        wake = undefined;
        resolve();
      };
    });
  try {
    for (let next = first; !next.done && !gone; ) {
      const chunk = next.value;
      if (typeof chunk === "string" || chunk instanceof Uint8Array) {
        if (!res.write(chunk)) await until(() => !res.writableNeedDrain);
      } else {
        await until(() => buffers.hasFree);
        if (gone) break;
        const { data, release } = buffers.pack(chunk);
        const ok = res.write(data, () => {
          release();
          poke();
        });
        if (!ok) await until(() => !res.writableNeedDrain);
      }
      if (gone) break;
      try {
        next = await it.next();
      } catch (err) {
        // Before the connection is destroyed: the request's log line and metric (http/observe.ts)
        // tell a server failure from a client that left.
        res.locals.failedAfterFirstByte = true;
        res.destroy();
        throw err;
      }
    }
    if (!gone) res.end();
  } finally {
    res.off("close", onClose);
    res.off("drain", poke);
    await it.return?.();
  }
}
