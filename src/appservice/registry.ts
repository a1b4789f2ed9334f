/**
 * The registered application services, looked up by token and asked about namespaces: which
 * service a request's `as_token` belongs to, whether a user ID, alias or room ID is inside a
 * service's namespaces (interest) and whether another service holds it exclusively.
 */
import type { AppserviceRegistration, NamespaceKind } from "./registration.js";

export class AppserviceRegistry {
  private readonly byToken = new Map<string, AppserviceRegistration>();
  private readonly byId = new Map<string, AppserviceRegistration>();

  constructor(
    readonly all: readonly AppserviceRegistration[],
    readonly serverName: string,
  ) {
    for (const r of all) {
      this.byToken.set(r.asToken, r);
      this.byId.set(r.id, r);
    }
  }

  byAsToken(token: string): AppserviceRegistration | undefined {
    return this.byToken.get(token);
  }

  get(id: string): AppserviceRegistration | undefined {
    return this.byId.get(id);
  }

  /** The service's own user, `@sender_localpart:server`. */
  senderOf(reg: AppserviceRegistration): string {
    return `@${reg.senderLocalpart}:${this.serverName}`;
  }

  /** Whether `id` is in one of the service's namespaces of `kind` (exclusive or not). */
  interested(reg: AppserviceRegistration, kind: NamespaceKind, id: string): boolean {
    return reg.namespaces[kind].some((ns) => ns.regex.test(id));
  }

  /** A user the service may act as: its sender, or a local user inside its user namespaces. */
  mayMasquerade(reg: AppserviceRegistration, userId: string): boolean {
    return userId === this.senderOf(reg) || this.interested(reg, "users", userId);
  }

  /** Another service that claims `id` exclusively, if any. */
  exclusiveOwner(kind: NamespaceKind, id: string, except?: AppserviceRegistration): AppserviceRegistration | undefined {
    return this.all.find((r) => r !== except && r.namespaces[kind].some((ns) => ns.exclusive && ns.regex.test(id)));
  }

  /** Services whose namespaces of `kind` contain `id`. */
  interestedIn(kind: NamespaceKind, id: string): AppserviceRegistration[] {
    return this.all.filter((r) => this.interested(r, kind, id));
  }
}
