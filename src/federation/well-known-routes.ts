import { Router } from "express";

/**
 * GET /.well-known/matrix/server (server-server API, "Server discovery"): `{"m.server": …}` names
 * the host[:port] where remote servers reach this server's federation API. Served when
 * GATEHOUSE_WELL_KNOWN_SERVER is set, for deployments where TLS ends at an ingress on 443 that
 * forwards everything of the server name's host to Gatehouse; otherwise the route does not exist
 * (404, which the spec treats as "no delegation"). Remote servers cache the answer (24 h when
 * no Cache-Control says otherwise), so it carries a Cache-Control of one day.
 * No client well-known: Gatehouse serves no client-server API.
 */
export function wellKnownRouter(server: string | null): Router {
  const router = Router();
  if (server === null) return router;
  const body = JSON.stringify({ "m.server": server });
  router.get("/.well-known/matrix/server", (_req, res) => {
    res.setHeader("Content-Type", "application/json");
    res.setHeader("Cache-Control", "public, max-age=86400");
    res.end(body);
  });
  return router;
}
