/**
 * One JSON request with a bearer token, for development tools (demo, interop tests, benchmarks)
 * talking to Gatehouse's admin API or a homeserver's client API. Never throws on HTTP errors:
 * callers look at `status`; a body that is not JSON comes back as text.
 */
export async function jsonRequest(url: string, method: string, token: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(url, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON: keep the text */
  }
  return { status: res.status, body: parsed };
}
