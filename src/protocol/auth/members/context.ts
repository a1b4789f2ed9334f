/** What every per-membership rule (5.3–5.7, v12 numbering) reads, computed once by members/index.ts. */
import type { RoomVersion } from "../../room-versions.js";
import type { AuthCheckOptions, EventLike, StateLookup } from "../types.js";

export interface MemberContext {
  readonly event: EventLike;
  readonly rv: RoomVersion;
  readonly state: StateLookup;
  readonly create: EventLike;
  readonly createId: string | undefined;
  readonly plContent: Record<string, unknown> | undefined;
  readonly options: AuthCheckOptions;
  readonly content: Record<string, unknown>;
  readonly sender: string;
  /** The state_key: whose membership changes. */
  readonly target: string;
  /** `content.join_authorised_via_users_server`, unchecked. */
  readonly via: unknown;
  /** Current memberships; no member event counts as `leave`. */
  readonly senderMembership: string;
  readonly targetMembership: string;
  readonly senderPower: number;
  readonly targetPower: number;
  readonly joinRule: string;
}
