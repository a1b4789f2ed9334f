/**
 * The set-up every interop suite shares, registered as the calling describe's node:test hooks:
 * the Synapse packages, the topology (DNS, CA, .well-known when named), the suite's Synapse peers
 * started, and one Gatehouse; stopped in reverse order after. A suite's own `before` hooks,
 * registered after this call, run after it (node:test runs them in order), so they can use
 * `suite.lb` and `suite.peer(role)`.
 */
import { before, after } from "node:test";
import type { LoopbackGatehouse } from "../../src/dev/loopback.js";
import { jsonRequest } from "../../src/dev/http-json.js";
import { installPeers, SynapsePeer } from "./synapse.js";
import { startGatehouseWithClientAppservice, type InteropTopology, type PeerRole } from "./topology.js";

type Env = Record<string, string | undefined>;

export interface InteropSuiteOptions {
  /** The topology's Synapse peers this suite starts. */
  peers: PeerRole[];
  /**
   * Peers of the suite's own in the IP-literal lab, by role (folder name and ports no other suite
   * uses), instead of the topology's: for suites that leave rooms behind a shared peer should not see.
   */
  ownIpLiteralPeers?: Partial<Record<PeerRole, { name: string; clientPort: number; federationPort: number }>>;
  /**
   * The Gatehouse: `label` starts it plainly; `appservice` starts it beside an application service
   * with no URL whose users are `@_{ns}_.*` (startGatehouseWithClientAppservice). `env` is added to
   * its environment either way.
   */
  gatehouse: { label: string; env?: Env } | { appservice: string; env?: Env };
}

export interface InteropSuite {
  /** The Gatehouse under test (from the suite's `before` on). */
  readonly lb: LoopbackGatehouse;
  /** A started Synapse peer of the suite. */
  peer(role: PeerRole): SynapsePeer;
  /** The application service's as_token (with `gatehouse.appservice`). */
  readonly asToken: string;
  /** Gatehouse's Client-Server API as the application service, acting for `userId`. */
  client(method: string, path: string, userId: string, body?: unknown): ReturnType<typeof jsonRequest>;
}

export function useInteropSuite(topology: InteropTopology, opts: InteropSuiteOptions): InteropSuite {
  let lb: LoopbackGatehouse | undefined;
  let asToken: string | undefined;
  let removeFiles: (() => void) | undefined;
  const peers = new Map<PeerRole, SynapsePeer>();

  before(async () => {
    installPeers();
    await topology.setup();
    for (const role of opts.peers) {
      const own = topology.name === "ip-literal" ? opts.ownIpLiteralPeers?.[role] : undefined;
      const peer = own ? new SynapsePeer(own.name, own.clientPort, own.federationPort) : topology.peer(role);
      peers.set(role, peer);
      peer.start();
    }
    const g = opts.gatehouse;
    if ("appservice" in g) ({ lb, asToken, removeFiles } = await startGatehouseWithClientAppservice(topology, g.appservice, g.env));
    else lb = await topology.startGatehouse(g.label, g.env);
  });

  after(async () => {
    await lb?.stop();
    for (const peer of peers.values()) peer.stop();
    removeFiles?.();
    await topology.teardown();
  });

  const started = <T>(what: string, v: T | undefined): T => {
    if (v === undefined) throw new Error(`interop suite: ${what} is not started (used before the suite's before hook?)`);
    return v;
  };
  return {
    get lb() {
      return started("the Gatehouse", lb);
    },
    peer: (role) => started(`Synapse peer ${role}`, peers.get(role)),
    get asToken() {
      return started("the application service", asToken);
    },
    client(method, path, userId, body) {
      const url = `http://127.0.0.1:${this.lb.gh.clientPort}/_matrix/client/v3${path}${path.includes("?") ? "&" : "?"}user_id=${encodeURIComponent(userId)}`;
      return jsonRequest(url, method, this.asToken, body);
    },
  };
}
