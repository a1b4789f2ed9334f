/**
 * Which application services are interested in an event (Application Service API, "Pushing
 * events"): one whose user namespaces hold the sender, the state_key (the target of a membership),
 * or a joined member of the room; whose room namespaces hold the room ID; or whose alias
 * namespaces hold one of the room's aliases. A service's own sender counts as its user.
 * Pure: state and aliases are passed in.
 */
import type { Pdu } from "../protocol/pdu.js";
import type { AppserviceRegistration } from "./registration.js";
import type { AppserviceRegistry } from "./registry.js";

/** The queue destination of a service (not a server name: registration ids of digits only are refused). */
export const appserviceDestination = (id: string): string => `as:${id}`;

export interface RoomFacts {
  roomId: string;
  /** Local users joined to the room (before the event); Synapse also checks local members only. */
  joinedMembers: Iterable<string>;
  aliases: readonly string[];
}

export function interestedServices(registry: AppserviceRegistry, pdu: Pdu, room: RoomFacts): AppserviceRegistration[] {
  const out: AppserviceRegistration[] = [];
  const isUser = (reg: AppserviceRegistration, u: unknown) => typeof u === "string" && (u === registry.senderOf(reg) || registry.interested(reg, "users", u));
  for (const reg of registry.all) {
    if (!reg.url) continue;
    if (isUser(reg, pdu.sender) || (pdu.type === "m.room.member" && isUser(reg, pdu.state_key)) || registry.interested(reg, "rooms", room.roomId) || room.aliases.some((a) => registry.interested(reg, "aliases", a))) {
      out.push(reg);
      continue;
    }
    for (const member of room.joinedMembers) {
      if (isUser(reg, member)) {
        out.push(reg);
        break;
      }
    }
  }
  return out;
}
