/**
 * JSON nesting depth: how many objects/arrays are open at the deepest point (`{}` is 1,
 * `{"a":[1]}` is 2). Two limits, for two different questions:
 *
 * - MAX_BODY_NESTING bounds every request body before it is parsed. It protects Gatehouse's own
 *   stack: JSON.parse copes with any depth, but every recursive step after it (canonical JSON,
 *   redaction, JSON.stringify in res.json) overflows somewhere between 2,000 and 5,000 levels,
 *   which used to be a 500. It is set above what a Synapse on Python < 3.12 can produce at all
 *   (its C scanner counts against the ~1,000 recursion limit), so no transaction from such a
 *   peer is refused for nesting.
 * - MAX_EVENT_NESTING bounds events Gatehouse decides on itself (knocks, joins, leaves it is asked
 *   to accept, events it creates). Every such event is relayed to the room's other servers inside
 *   a transaction (two more levels: the transaction object and its `pdus` list), and must parse
 *   there: serde_json (ruma, conduit and its forks) stops at 128 levels by default, Python's json
 *   before 3.12 near 1,000. 100 leaves room for both; real event content (m.relates_to, formatted
 *   bodies, polls) stays under 10.
 *
 * PDUs from other servers in /send are not held to MAX_EVENT_NESTING: the spec has no nesting
 * rule, and refusing an event the rest of the room accepted would split the room.
 */

export const MAX_BODY_NESTING = 1024;
export const MAX_EVENT_NESTING = 100;

/**
 * Deepest nesting of raw JSON bytes, scanning brackets outside strings; stops and returns
 * `limit + 1` as soon as the limit is passed. It does not validate the JSON (JSON.parse does):
 * it only has to be exact for valid JSON, which it is, since brackets inside strings are skipped
 * and a string ends at the first quote preceded by an even number of backslashes.
 */
export function jsonTextDepth(bytes: Uint8Array, limit: number): number {
  const n = bytes.length;
  let depth = 0;
  let max = 0;
  for (let i = 0; i < n; i++) {
    const c = bytes[i]!;
    if (c === 0x22 /* " */) {
      // indexOf runs natively (memchr); most of a body is inside strings.
      let j = i;
      for (;;) {
        j = bytes.indexOf(0x22, j + 1);
        if (j < 0) return max; // unterminated: JSON.parse will refuse it
        let backslashes = 0;
        while (bytes[j - 1 - backslashes] === 0x5c) backslashes++;
        if ((backslashes & 1) === 0) break;
      }
      i = j;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (++depth > max) {
        max = depth;
        if (max > limit) return max;
      }
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
    }
  }
  return max;
}

/**
 * Whether a parsed value nests deeper than `limit`. Recursive but bounded: it never goes more
 * than `limit + 1` frames deep (it answers true there), so any depth is safe for limits in the
 * hundreds; no arrays are allocated (3× faster than an explicit stack on a knock PDU).
 */
export function exceedsNesting(value: unknown, limit: number): boolean {
  if (typeof value !== "object" || value === null) return false;
  return limit < 1 || deeper(value, limit - 1);
}

/** `value` (an object or array) has a container more than `left` levels below it. */
function deeper(value: object, left: number): boolean {
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const child: unknown = value[i];
      if (typeof child === "object" && child !== null && (left === 0 || deeper(child, left - 1))) return true;
    }
    return false;
  }
  for (const key in value) {
    const child: unknown = (value as Record<string, unknown>)[key];
    if (typeof child === "object" && child !== null && (left === 0 || deeper(child, left - 1))) return true;
  }
  return false;
}
