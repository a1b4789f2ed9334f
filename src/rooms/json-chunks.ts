/**
 * A JSON object written as chunks, for answers too big to build whole (send_join, /state,
 * /state_ids and /event_auth of a big room): the small fields first, serialised at once, then
 * each list's elements as they come, a batch of already-serialised JSON values at a time
 * (RoomStore.servedEventJson, jsonStringBatches). An element of a batch is one JSON value or
 * several joined by commas. The route sends the chunks as they are (http/json-stream.ts);
 * parsed, the result is the object `{ ...head, [name]: [values…] }`.
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

/** Strings serialised per batch by jsonStringBatches: ~45 kB of event IDs. */
export const STRING_BATCH = 1_000;

/**
 * `values` as JSON strings for jsonObjectChunks, `batch` per element (one Buffer of comma-joined
 * JSON strings): /state_ids of a 100,000-member room names ~100,000 event IDs (4.5 MB), which
 * are serialised a batch at a time as the socket takes them, not as one string.
 */
export async function* jsonStringBatches(values: readonly string[], batch = STRING_BATCH): AsyncGenerator<Buffer[]> {
  for (let i = 0; i < values.length; i += batch) yield [Buffer.from(jsonStringList(values.slice(i, i + batch)), "utf8")];
}

/**
 * Characters JSON.stringify escapes in a string: `"`, `\`, controls, and UTF-16 surrogates (a
 * lone one is escaped; a pair is not, but sends the batch the careful way).
 */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/**
 * `values` as comma-separated JSON strings, exactly `values.map((v) => JSON.stringify(v)).join(",")`:
 * event IDs (`$` and base64) need no escaping, so a batch without a character that does is
 * quoted and joined at once (~4× faster than a JSON.stringify per ID).
 */
export function jsonStringList(values: readonly string[]): string {
  if (values.length === 0) return "";
  if (!NEEDS_ESCAPE.test(values.join(""))) return `"${values.join('","')}"`;
  return values.map((v) => JSON.stringify(v)).join(",");
}
