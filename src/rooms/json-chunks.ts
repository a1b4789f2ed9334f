/**
 * A JSON object written as chunks, for answers too big to build whole (send_join and /state of a
 * big room): the small fields first, serialised at once, then each list's elements as they come,
 * a batch of already-serialised JSON values at a time (RoomStore.servedEventJson). The route
 * sends the chunks as they are (http/json-stream.ts); parsed, the result is the object
 * `{ ...head, [name]: [values…] }`.
 */
const COMMA = Buffer.from(",");

export async function* jsonObjectChunks(
  head: Readonly<Record<string, unknown>>,
  lists: readonly (readonly [name: string, values: AsyncIterable<readonly Buffer[]>])[],
): AsyncGenerator<Buffer> {
  const h = JSON.stringify(head);
  let prefix = h.slice(0, -1); // "{…" without its closing brace
  let sep = h.length > 2 ? "," : "";
  for (const [name, values] of lists) {
    let open = `${prefix}${sep}${JSON.stringify(name)}:[`;
    prefix = "";
    sep = ",";
    let first = true;
    for await (const batch of values) {
      if (batch.length === 0) continue;
      const parts: Buffer[] = open ? [Buffer.from(open, "utf8")] : [];
      open = "";
      for (const v of batch) {
        if (!first) parts.push(COMMA);
        parts.push(v);
        first = false;
      }
      yield Buffer.concat(parts);
    }
    yield Buffer.from(`${open}]`, "utf8");
  }
  yield Buffer.from(`${prefix}}`, "utf8");
}
