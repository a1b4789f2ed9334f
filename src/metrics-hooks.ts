/**
 * Metrics bookkeeping as hooks: each function turns one part's events (a request answered, an
 * event persisted, a transaction sent…) into samples of the metrics defined in metrics.ts. The
 * composition root only plugs them in.
 */
import type { Metrics } from "./metrics.js";
import type { RequestSample } from "./http/observe.js";
import type { SenderDeps } from "./sender/sender.js";
import type { FederationClientOptions } from "./net/federation-client.js";
import type { Logger } from "./logger.js";
import type { RoomServiceDeps } from "./rooms/room-service.js";
import type { MembershipEvents } from "./rooms/membership.js";

export function federationRequestHook(metrics: Metrics) {
  return (r: RequestSample): void => {
    metrics.federationRequests.inc({ route: r.endpoint, method: r.method, status: String(r.status), errcode: r.errcode });
    metrics.federationRequestDuration.observe({ route: r.endpoint, method: r.method }, r.seconds);
  };
}

export function adminRequestHook(metrics: Metrics) {
  return (r: RequestSample): void => {
    metrics.adminRequests.inc({ route: r.endpoint, method: r.method, status: String(r.status) });
  };
}

export function clientRequestHook(metrics: Metrics) {
  return (r: RequestSample): void => {
    metrics.clientRequests.inc({ route: r.endpoint, method: r.method, status: String(r.status), errcode: r.errcode });
  };
}

/** Outbound federation refused before connecting (a private address, an unverifiable certificate…). */
export function outboundHooks(metrics: Metrics, logger: Logger): Pick<FederationClientOptions, "onRefused"> {
  return {
    onRefused: (reason, destination, message) => {
      metrics.outboundRefused.inc({ reason });
      logger.warn({ destination, reason }, `outbound federation refused: ${message}`);
    },
  };
}

export function senderHooks(metrics: Metrics): Pick<SenderDeps, "onTransaction" | "onJobHandedBack"> {
  return {
    onJobHandedBack: () => metrics.senderJobsHandedBack.inc(),
    onTransaction: (outcome, info) => {
      metrics.outboundTransactions.inc({ outcome });
      metrics.outboundTransactionDuration.observe(info.seconds);
      if (outcome === "sent") {
        metrics.outboundPdusPerTransaction.observe(info.pdus);
        if (info.pduErrors > 0) metrics.outboundPduErrors.inc(info.pduErrors);
      }
    },
  };
}

/** The room service's hooks; `wake` tells the sender which destinations have new entries. */
export function roomServiceHooks(metrics: Metrics, wake: (destinations: readonly string[]) => void): Pick<RoomServiceDeps, "onQueued" | "wakeSender" | "onPersisted" | "onAclDenied"> {
  return {
    onQueued: (destinations, { wake: now }) => {
      metrics.outboundPdusQueued.inc(destinations.length);
      if (now) wake(destinations);
    },
    // A batch (an inbound transaction) wakes the sender once, after its last event.
    wakeSender: (destinations) => wake(destinations),
    onPersisted: (event, origin) => {
      const kind = event.pdu.type === "m.room.member" ? "member" : typeof event.pdu.state_key === "string" ? "state" : "message";
      metrics.eventsPersisted.inc({ origin: origin ? "remote" : "local", kind });
    },
    onAclDenied: (roomId) => metrics.aclDenials.inc({ room: roomId, reason: "server_acl" }),
  };
}

export function membershipHooks(metrics: Metrics): MembershipEvents {
  return {
    onHandshake: (kind, _roomId, previous) => {
      if (kind === "knock") metrics.knocks.inc({ outcome: "received" });
      if (kind === "leave" && previous === "knock") metrics.knocks.inc({ outcome: "rescinded" });
    },
    onKnockRejected: () => metrics.knocks.inc({ outcome: "rejected" }),
    onKnockDecision: (decision) => metrics.knocks.inc({ outcome: decision }),
  };
}
