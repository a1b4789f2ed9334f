/**
 * The membership handshakes a remote server runs against a hosted room (make_/send_ knock, join,
 * leave) and the membership actions Gatehouse's own users take (invite to accept a knock, kick to
 * deny it, ban, unban). Routes only parse and map; every protocol decision is here or in the core.
 *
 * Status codes follow the spec (knock.md): malformed events 400 M_INVALID_PARAM, auth-rule and
 * ACL failures 403 M_FORBIDDEN, unknown rooms 404 M_NOT_FOUND.
 */
import { checkEventAuth, currentMembership, joinRuleOf, powerLevelOf, namedLevel } from "../protocol/auth/index.js";
import { forbidden, incompatibleRoomVersion, invalidParam, MatrixError, missingParam, notFound } from "../protocol/errors.js";
import { addEventSignature } from "../protocol/event-signing.js";
import { verifySignedJson } from "../protocol/json-signing.js";
import { redactEvent } from "../protocol/redaction.js";
import { computeEventId } from "../protocol/event-hashing.js";
import { checkPduLimits, isValidUserId, serverOfUserId } from "../protocol/ids.js";
import { isPlainObject, type Pdu } from "../protocol/pdu.js";
import { checkEventNesting, MAX_AUTH_EVENTS } from "../protocol/pdu-format.js";
import type { RoomVersion } from "../protocol/room-versions.js";
import { stateField } from "../store/room-store.js";
import { createEventIdOf, stateLookup, joinedServers, type RoomContext, type RoomService, type RoomSnapshot, type PersistedEvent } from "./room-service.js";
import type { RoomStore } from "../store/room-store.js";
import type { FederationClient } from "../net/federation-client.js";
import { FederationRequestError } from "../net/federation-client.js";
import type { RemoteKeys } from "../keys/remote-keys.js";
import type { StoredEvent } from "./redactions.js";
import { heroKind, HeroPicker, namesItself, partialJoinState } from "../protocol/partial-join.js";
import { jsonObjectChunks } from "./json-chunks.js";

/** State fields of m.room.member events start so (stateField: the JSON of [type, state_key]). */
const MEMBER_FIELD_PREFIX = stateField("m.room.member", "").slice(0, -3);
/** Timeline events read per page while looking for a nameless room's heroes. */
const HERO_PAGE = 500;

export type HandshakeMembership = "knock" | "join" | "leave";

export interface MakeMembershipInput {
  roomId: string;
  userId: string;
  origin: string;
  membership: HandshakeMembership;
  /** Room versions the requesting server supports (`ver`); undefined when it sent none. */
  supportedVersions: readonly string[] | undefined;
}

export interface MembershipEvents {
  /** Each accepted send_knock / send_join / send_leave, with the sender's membership before it. */
  onHandshake?: (membership: HandshakeMembership, roomId: string, previous: string | undefined) => void;
  /** A send_knock that was refused (any 4xx). */
  onKnockRejected?: () => void;
  /** An operator accepted (invited) or denied (kicked) a pending knock. */
  onKnockDecision?: (decision: "accepted" | "denied") => void;
}

function tombstoneOf(snap: RoomSnapshot): string | undefined {
  const t = snap.state.get(stateField("m.room.tombstone", ""));
  const replacement = t ? (t.content as { replacement_room?: unknown }).replacement_room : undefined;
  return typeof replacement === "string" ? replacement : undefined;
}

/** A membership event a remote server signed after make_*, persisted (or already stored: `duplicate`). */
export interface SentMembership {
  eventId: string;
  pdu: Pdu;
  /** The room's current state the event was written on, when it extended it (not for a duplicate, nor a fork). */
  stateBefore: RoomSnapshot | undefined;
  /** The snapshot the write was planned on. */
  plannedOn?: RoomSnapshot;
  duplicate: boolean;
}

export class MembershipService {
  private readonly rooms: RoomService;
  private readonly store: RoomStore;

  constructor(
    ctx: RoomContext,
    private readonly client: FederationClient | null,
    private readonly remoteKeys: RemoteKeys | null,
    private readonly events: MembershipEvents = {},
  ) {
    this.rooms = ctx.rooms;
    this.store = ctx.store;
  }

  // ------------------------------------------------------------------------------------------
  // make_knock / make_join / make_leave
  // ------------------------------------------------------------------------------------------

  async makeMembership(input: MakeMembershipInput): Promise<{ room_version: string; event: Record<string, unknown> }> {
    const { roomId, userId, origin, membership } = input;
    const snap = await this.rooms.snapshot(roomId);
    requireHostedHere(snap);
    this.rooms.requireAclAllows(snap, origin);
    const version = snap.version;
    if (membership === "knock" && input.supportedVersions === undefined) throw missingParam("Missing required query parameter: ver");
    // make_join without `ver` means the sender only knows version 1 (spec, for old servers).
    const supported = input.supportedVersions ?? (membership === "join" ? ["1"] : undefined);
    if (supported && !supported.includes(version.id)) throw incompatibleRoomVersion(version.id);
    if (membership === "knock" && !version.knock) throw forbidden(`Room version ${version.id} does not support knocking`);
    if (!isValidUserId(userId)) throw invalidParam(`Invalid user ID ${userId}`);
    if (serverOfUserId(userId) !== origin) throw forbidden(`User ${userId} does not belong to the requesting server ${origin}`);
    const replacement = tombstoneOf(snap);
    if (replacement && membership !== "leave") {
      throw forbidden(`This room has been replaced by ${replacement}`, { replacement_room: replacement });
    }
    const content: Record<string, unknown> = { membership };
    if (membership === "join") {
      const via = this.authorisingUserForJoin(snap, userId);
      if (via) content.join_authorised_via_users_server = via;
    }
    const template = this.rooms.buildTemplate(snap, { type: "m.room.member", sender: userId, stateKey: userId, content });
    const verdict = checkEventAuth(template as unknown as Pdu, version, stateLookup(snap.state), {
      createEventId: createEventIdOf(snap),
      // The authorising server's signature is ours and is added at send_join.
      verifyJoinAuthorisedVia: () => true,
    });
    if (!verdict.allowed) throw forbidden(this.explainRefusal(snap, userId, membership, verdict.reason));
    return { room_version: version.id, event: template };
  }

  /** Human-readable refusals for the common cases, so the knocking user's client shows why. */
  private explainRefusal(snap: RoomSnapshot, userId: string, membership: HandshakeMembership, reason: string): string {
    const current = currentMembership(stateLookup(snap.state), userId);
    if (current === "ban") return `${userId} is banned from this room`;
    if (membership === "knock") {
      if (current === "join") return `${userId} is already joined to this room`;
      if (current === "invite") return `${userId} is already invited to this room`;
      const rule = joinRuleOf(stateLookup(snap.state));
      if (rule !== "knock" && rule !== "knock_restricted") return `You are not allowed to knock on this room (join rule is ${rule})`;
    }
    if (membership === "join" && current !== "invite") return `${userId} is not invited to this room`;
    return reason;
  }

  /**
   * For restricted / knock_restricted rooms: a local joined user with invite power who can vouch
   * for the joiner because the joiner is in one of the `allow` rooms hosted here. Undefined when
   * no vouching is needed or possible (auth rules then decide).
   */
  private authorisingUserForJoin(snap: RoomSnapshot, userId: string): string | undefined {
    const lookup = stateLookup(snap.state);
    const rule = joinRuleOf(lookup);
    if (rule !== "restricted" && rule !== "knock_restricted") return undefined;
    const current = currentMembership(lookup, userId);
    if (current === "invite" || current === "join") return undefined;
    // Allow-room membership is checked asynchronously in send_join; pick the vouching user here.
    const create = lookup("m.room.create", "");
    const pl = lookup("m.room.power_levels", "")?.content;
    const inviteLevel = namedLevel("invite", pl, snap.version);
    for (const ev of snap.state.values()) {
      if (ev.type !== "m.room.member" || (ev.content as { membership?: unknown }).membership !== "join") continue;
      const member = ev.state_key!;
      if (serverOfUserId(member) !== this.rooms.serverName) continue;
      if (powerLevelOf(member, pl, create, snap.version) >= inviteLevel) return member;
    }
    return undefined;
  }

  // ------------------------------------------------------------------------------------------
  // send_knock / send_join / send_leave
  // ------------------------------------------------------------------------------------------

  /**
   * Checks and persists a membership event a remote server signed after make_*. Returns the
   * persisted event and the room snapshot the event was authorised against.
   */
  async sendMembership(
    roomId: string,
    pathEventId: string,
    body: unknown,
    origin: string,
    membership: HandshakeMembership,
  ): Promise<SentMembership> {
    try {
      return await this.checkAndPersistMembership(roomId, pathEventId, body, origin, membership);
    } catch (e) {
      if (membership === "knock" && e instanceof MatrixError && e.status < 500) this.events.onKnockRejected?.();
      throw e;
    }
  }

  private async checkAndPersistMembership(
    roomId: string,
    pathEventId: string,
    body: unknown,
    origin: string,
    membership: HandshakeMembership,
  ): Promise<SentMembership> {
    // One read of the room for the whole request: the snapshot for the checks below, probed for
    // the event (path ID) and its auth events, on which persistEvent plans the write (optimistic:
    // a write in between is a conflict, and the room is read again).
    // The body is not checked yet: a list longer than any valid event's is not probed (the event
    // will be refused; were it not, persistEvent would read the room again).
    const listed = isPlainObject(body) && Array.isArray(body.auth_events) && body.auth_events.length <= MAX_AUTH_EVENTS ? body.auth_events : [];
    const authIds = listed.filter((x): x is string => typeof x === "string");
    const planOn = await this.rooms.snapshotWithProbe(roomId, { eventIds: [pathEventId], statusOf: authIds });
    const snap = planOn.snap;
    requireHostedHere(snap);
    this.rooms.requireAclAllows(snap, origin);
    const version = snap.version;
    if (membership === "knock" && !version.knock) throw forbidden(`Room version ${version.id} does not support knocking`);
    if (!isPlainObject(body)) throw invalidParam("Request body must be a PDU");
    // The spec's validation list for send_knock / send_leave / send_join (400 M_INVALID_PARAM).
    if (body.type !== "m.room.member") throw invalidParam("Event is not an m.room.member event");
    if (typeof body.state_key !== "string") throw invalidParam("Event has no state_key");
    const content = isPlainObject(body.content) ? body.content : undefined;
    if (!content || content.membership !== membership) throw invalidParam(`Event membership is not ${membership}`);
    if (body.sender !== body.state_key) throw invalidParam("state_key does not match sender");
    if (typeof body.sender !== "string" || serverOfUserId(body.sender) !== origin)
      throw invalidParam(`Sender ${String(body.sender)} does not belong to the requesting server ${origin}`);
    if (body.room_id !== roomId) throw invalidParam("room_id in the event does not match the path");
    // An event we are asked to accept, and then relay to every server in the room: it must parse
    // there too (json-nesting.ts). Checked before any signature key is fetched.
    const nesting = checkEventNesting(body);
    if (nesting) throw nesting;
    const replacement = tombstoneOf(snap);
    if (replacement && membership !== "leave") throw forbidden(`This room has been replaced by ${replacement}`, { replacement_room: replacement });

    // A restricted join authorised by one of our users is not signed by us yet: we co-sign it
    // below (coSignRestrictedJoin), so our signature must not be required before that.
    const via = membership === "join" && version.restrictedJoins ? content.join_authorised_via_users_server : undefined;
    const pendingSignatureOf = typeof via === "string" && serverOfUserId(via) === this.rooms.serverName ? this.rooms.serverName : undefined;
    let verified;
    try {
      verified = await this.rooms.verifyRemoteEvent(body, version, pendingSignatureOf ? { pendingSignatureOf } : undefined);
    } catch (e) {
      if (e instanceof MatrixError && e.status === 403) throw invalidParam(e.message);
      throw e;
    }
    if (pathEventId !== verified.eventId)
      throw invalidParam(`Event ID in the path (${pathEventId}) does not match the event (${verified.eventId})`);

    let pdu = verified.pdu;
    if (membership === "join" && typeof (pdu.content as Record<string, unknown>).join_authorised_via_users_server === "string") {
      pdu = await this.coSignRestrictedJoin(snap, pdu);
    }
    const result = await this.rooms.persistEvent(roomId, verified.eventId, pdu, { origin, rejectIfSoftFailed: true, planOn });
    if (result.outcome !== "duplicate") {
      const before = result.stateBefore ? currentMembership(stateLookup(result.stateBefore.state), pdu.sender) : undefined;
      this.events.onHandshake?.(membership, roomId, before);
    }
    return { eventId: verified.eventId, pdu: result.pdu, stateBefore: result.stateBefore, ...(result.plannedOn ? { plannedOn: result.plannedOn } : {}), duplicate: result.outcome === "duplicate" };
  }

  /** send_knock's answer: the create event and the recommended stripped state, as full PDUs. */
  async knockRoomState(roomId: string, stateBefore?: RoomSnapshot): Promise<Pdu[]> {
    // The state the knock was accepted on serves: a knock changes none of the stripped-state
    // types (create, name, avatar, topic, join rules, canonical alias, encryption).
    return this.strippedState(stateBefore ?? (await this.rooms.snapshot(roomId)));
  }

  /**
   * The stripped-state events as served: redacted when a redaction applies (a redacted name is
   * gone). A snapshot's state is already as the auth rules read it, with redactions applied (the
   * state cache reads state through RoomStore.getStateEvents / withRedactions, and a redaction of
   * a current state event makes every cache read it again), so nothing is read again here.
   */
  private async strippedState(snap: RoomSnapshot): Promise<Pdu[]> {
    return this.rooms.strippedStateEvents(snap);
  }

  /**
   * Restricted join (v8+): the authorising user must be ours, joined, with invite power, and the
   * joiner must be in one of the `allow` rooms we host; then we co-sign.
   */
  private async coSignRestrictedJoin(snap: RoomSnapshot, pdu: Pdu): Promise<Pdu> {
    const via = (pdu.content as Record<string, unknown>).join_authorised_via_users_server as string;
    if (serverOfUserId(via) !== this.rooms.serverName) return pdu; // another resident vouched; its signature was checked
    const lookup = stateLookup(snap.state);
    const rule = joinRuleOf(lookup);
    const current = currentMembership(lookup, pdu.sender);
    if ((rule === "restricted" || rule === "knock_restricted") && current !== "invite" && current !== "join") {
      const allow = (lookup("m.room.join_rules", "")?.content as { allow?: unknown } | undefined)?.allow;
      const allowRooms = Array.isArray(allow)
        ? allow.filter((a) => isPlainObject(a) && a.type === "m.room_membership" && typeof a.room_id === "string").map((a) => (a as { room_id: string }).room_id)
        : [];
      let member = false;
      for (const r of allowRooms) {
        if ((await this.store.getMembership(r, pdu.sender)) === "join") {
          member = true;
          break;
        }
      }
      if (!member) throw new MatrixError(400, "M_UNABLE_TO_GRANT_JOIN", `${pdu.sender} is not in any room that allows joining`);
    }
    return addEventSignature(pdu, this.rooms.serverName, this.rooms.signingKey, snap.version);
  }

  /**
   * send_join's answer (v2): state before the join, its auth chain, and our co-signed event;
   * redactions applied. With `omitMembers` (the caller sent `omit_members=true`), a partial-state
   * answer (protocol/partial-join.ts): membership events are left out of `state` except the
   * joiner's own and, in a room without a name or canonical alias, the heroes'; `auth_chain`
   * covers the join and the state kept, less the events already in `state`.
   */
  /**
   * send_join's answer (spec: PUT /_matrix/federation/v2/send_join, 200) as JSON chunks
   * (rooms/json-chunks.ts): everything that can refuse or fail on the room's state is decided
   * here, before the first chunk; the events of `state` and `auth_chain` are then read from Redis
   * 500 at a time and sent as stored (RoomStore.servedEventJson: redactions applied), so a
   * 100,000-member room's ~58 MB answer is never built whole.
   */
  async sendJoinAnswer(
    roomId: string,
    eventId: string,
    pdu: Pdu,
    stateBefore: RoomSnapshot | undefined,
    opts: { omitMembers?: boolean } = {},
  ): Promise<AsyncGenerator<Buffer>> {
    const joiner = pdu.state_key ?? pdu.sender;
    // The state before the join: field → event ID, and each event as served (redactions applied).
    let ids: ReadonlyMap<string, string>;
    let pduOf: (field: string) => Pdu | undefined;
    let version: RoomVersion;
    if (stateBefore) {
      // A snapshot's state is already as served: redactions applied (see strippedState).
      ids = stateBefore.stateIds;
      pduOf = (field) => stateBefore.state.get(field);
      version = stateBefore.version;
    } else {
      // A retried send_join (the event was already persisted): answer the state before the join
      // again, not the current state, which already holds the join itself. Most of it is the
      // current state's events (in memory); the others are read.
      const before = (await this.store.stateAt(roomId, eventId, "before")) ?? new Map<string, string>();
      const now = await this.rooms.snapshot(roomId);
      version = now.version;
      const others = await this.store.getStateEvents(roomId, version, [...before].filter(([field, id]) => now.stateIds.get(field) !== id).map(([, id]) => id));
      const served = (field: string): Pdu | undefined => {
        const id = before.get(field);
        if (id === undefined) return undefined;
        return now.stateIds.get(field) === id ? now.state.get(field) : others.get(id);
      };
      ids = new Map([...before].filter(([field]) => served(field) !== undefined));
      pduOf = served;
    }
    const state = opts.omitMembers ? await this.partialJoinState(roomId, ids, pduOf, joiner) : undefined;
    // Servers with joined members before the join (spec: servers_in_room), and us, the resident.
    const servers = new Set(stateBefore ? stateBefore.joinedServers : joinedServers(new Map([...ids].map(([field, id]) => [id, pduOf(field)!]))));
    servers.add(this.rooms.serverName);
    // The auth chain walk starts from the state's events, which are in memory, and the join.
    const stateIds = state ? state.map((e) => e.eventId) : [...ids.values()];
    function* starts(): Generator<Pdu> {
      if (state) for (const e of state) yield e.pdu;
      else for (const field of ids.keys()) yield pduOf(field)!;
      yield pdu;
    }
    let chainIds = await this.store.authChainIds(roomId, starts());
    if (state) {
      const kept = new Set(stateIds);
      chainIds = chainIds.filter((id) => !kept.has(id));
    }
    return jsonObjectChunks({ origin: this.rooms.serverName, event: pdu, members_omitted: opts.omitMembers === true, servers_in_room: [...servers].sort() }, [
      ["state", this.store.servedEventJson(roomId, version, stateIds)],
      ["auth_chain", this.store.servedEventJson(roomId, version, chainIds)],
    ]);
  }

  /**
   * The state a partial-state send_join keeps (protocol/partial-join.ts): the non-member events,
   * the joiner's membership, and in a room without name or canonical alias the heroes'. Heroes
   * are found by reading the room's timeline from its start, a page at a time, until 5 present
   * members were seen (usually the first page: the creator and the first members to join).
   */
  private async partialJoinState(roomId: string, ids: ReadonlyMap<string, string>, pduOf: (field: string) => Pdu | undefined, joiner: string): Promise<StoredEvent[]> {
    const others: StoredEvent[] = [];
    // Member events by ID: their fields only (a PDU is looked at only for the events the hero
    // search meets in the timeline).
    const memberField = new Map<string, string>();
    for (const [field, id] of ids) {
      if (field.startsWith(MEMBER_FIELD_PREFIX)) memberField.set(id, field);
      else others.push({ eventId: id, pdu: pduOf(field)! });
    }
    const keep = new Set<string>();
    const own = ids.get(stateField("m.room.member", joiner));
    if (own) keep.add(own);
    if (!namesItself(others)) {
      const picker = new HeroPicker((id) => {
        const field = memberField.get(id);
        return field === undefined ? undefined : heroKind({ eventId: id, pdu: pduOf(field)! }, joiner);
      });
      for (let from = 0; ; ) {
        const page = await this.store.timeline(roomId, from, HERO_PAGE);
        if (picker.take(page.map((e) => e.eventId)) || page.length < HERO_PAGE) break;
        from = page[page.length - 1]!.stream + 1;
      }
      for (const id of picker.heroes()) keep.add(id);
    }
    const kept = [...keep].map((id) => ({ eventId: id, pdu: pduOf(memberField.get(id)!)! }));
    return partialJoinState([...others, ...kept], joiner, keep);
  }

  // ------------------------------------------------------------------------------------------
  // Local users act: invite (accept a knock), kick (deny), ban, unban
  // ------------------------------------------------------------------------------------------

  /**
   * Invites `target` (accepting a pending knock when there is one). For a remote target the
   * event first goes to the target's server through /v2/invite, which must countersign it.
   */
  async invite(roomId: string, sender: string, target: string, reason?: string): Promise<PersistedEvent> {
    if (!isValidUserId(target)) throw invalidParam(`Invalid user ID ${target}`);
    const content: Record<string, unknown> = { membership: "invite", ...(reason ? { reason } : {}) };
    const targetServer = serverOfUserId(target)!;
    if (targetServer === this.rooms.serverName) {
      return this.rooms.sendLocalEvent(roomId, { type: "m.room.member", sender, stateKey: target, content });
    }
    if (!this.client) throw new MatrixError(500, "M_UNKNOWN", "no federation client configured");
    const snap = await this.rooms.snapshot(roomId);
    if (serverOfUserId(sender) !== this.rooms.serverName) throw forbidden(`${sender} is not a user on ${this.rooms.serverName}`);
    const built = this.rooms.buildLocalEvent(snap, { type: "m.room.member", sender, stateKey: target, content });
    const inviteRoomState: Pdu[] = await this.strippedState(snap);
    const inviterMember = snap.state.get(stateField("m.room.member", sender));
    if (inviterMember) inviteRoomState.push(inviterMember);
    let answer: { event?: unknown };
    try {
      answer = await this.client.call<{ event?: unknown }>(
        "PUT",
        targetServer,
        `/_matrix/federation/v2/invite/${encodeURIComponent(roomId)}/${encodeURIComponent(built.eventId)}`,
        { room_version: snap.version.id, event: built.pdu, invite_room_state: inviteRoomState },
      );
    } catch (e) {
      throw remoteRefusal(e, `inviting ${target}`);
    }
    const signed = await this.mergeCountersignature(built.pdu, answer?.event, targetServer, snap.version);
    const result = await this.rooms.persistEvent(roomId, built.eventId, signed, { origin: null, rejectIfSoftFailed: true });
    return { eventId: result.eventId, pdu: result.pdu, roomId };
  }

  /** Takes the invitee server's signature from its answer, after checking it signed our event. */
  private async mergeCountersignature(ours: Pdu, returned: unknown, targetServer: string, version: RoomVersion): Promise<Pdu> {
    if (!isPlainObject(returned)) throw new MatrixError(502, "M_UNKNOWN", `${targetServer} answered the invite without an event`);
    const theirSigs = isPlainObject(returned.signatures) ? returned.signatures[targetServer] : undefined;
    if (!isPlainObject(theirSigs)) throw new MatrixError(502, "M_UNKNOWN", `${targetServer} did not sign the invite`);
    const merged: Pdu = {
      ...ours,
      signatures: { ...(ours.signatures ?? {}), [targetServer]: theirSigs as Record<string, string> },
    };
    // Their signatures become part of an event we relay: it must still pass the limits (a huge or
    // deeply nested signature object would make peers refuse it).
    const limits = checkPduLimits(merged) ?? checkEventNesting(merged);
    if (limits) throw new MatrixError(502, "M_UNKNOWN", `${targetServer}'s countersigned invite is not a valid event: ${limits.message}`);
    if (computeEventId(merged, version) !== computeEventId(ours, version))
      throw new MatrixError(502, "M_UNKNOWN", `${targetServer} changed the invite event`);
    if (this.remoteKeys) {
      const verifiers = new Map<string, import("../protocol/ed25519.js").Ed25519Verifier>();
      for (const keyId of Object.keys(theirSigs)) {
        const found = await this.remoteKeys.getVerifier(targetServer, keyId, ours.origin_server_ts, true);
        if (found) verifiers.set(keyId, found.verifier);
      }
      // Only the invitee server's signature is new; check it alone, over the redacted event as for any event signature.
      const check = verifySignedJson(redactEvent(merged, version), targetServer, (entity, keyId) =>
        entity === targetServer ? verifiers.get(keyId) : undefined,
      );
      if (!check.ok) throw new MatrixError(502, "M_UNKNOWN", `${targetServer}'s signature on the invite does not verify: ${check.reason}`);
    }
    return merged;
  }

  /** Accepts a pending knock: an invite of the knocker (404 when there is no pending knock). */
  async acceptKnock(roomId: string, sender: string, target: string, reason?: string): Promise<PersistedEvent> {
    await this.requirePendingKnock(roomId, target);
    const ev = await this.invite(roomId, sender, target, reason);
    this.events.onKnockDecision?.("accepted");
    return ev;
  }

  /** Denies a pending knock: a kick of the knocker by a user with kick power. */
  async denyKnock(roomId: string, sender: string, target: string, reason?: string): Promise<PersistedEvent> {
    await this.requirePendingKnock(roomId, target);
    const ev = await this.kick(roomId, sender, target, reason);
    this.events.onKnockDecision?.("denied");
    return ev;
  }

  private async requirePendingKnock(roomId: string, target: string): Promise<void> {
    await this.rooms.requireRoom(roomId);
    if ((await this.store.getMembership(roomId, target)) !== "knock") throw notFound(`${target} has no pending knock in ${roomId}`);
  }

  /** Kick: used to deny a knock, or remove a member. */
  kick(roomId: string, sender: string, target: string, reason?: string): Promise<PersistedEvent> {
    return this.setMembershipOf(roomId, sender, target, "leave", reason);
  }

  ban(roomId: string, sender: string, target: string, reason?: string): Promise<PersistedEvent> {
    return this.setMembershipOf(roomId, sender, target, "ban", reason);
  }

  /** A local user changes another user's membership (kick, ban); the auth rules decide. */
  private async setMembershipOf(roomId: string, sender: string, target: string, membership: "leave" | "ban", reason?: string): Promise<PersistedEvent> {
    if (!isValidUserId(target)) throw invalidParam(`Invalid user ID ${target}`);
    return this.rooms.sendLocalEvent(roomId, {
      type: "m.room.member",
      sender,
      stateKey: target,
      content: { membership, ...(reason ? { reason } : {}) },
    });
  }

  async unban(roomId: string, sender: string, target: string): Promise<PersistedEvent> {
    const snap = await this.rooms.snapshot(roomId);
    if (currentMembership(stateLookup(snap.state), target) !== "ban") throw forbidden(`${target} is not banned`);
    return this.kick(roomId, sender, target);
  }

  /** A local user joins (e.g. an admin account added after creation) or leaves a hosted room. */
  async localMembership(roomId: string, userId: string, membership: "join" | "leave"): Promise<PersistedEvent> {
    if (membership === "join") {
      // In a room hosted elsewhere that no local user is in any more, our copy of the room is
      // stale: the join must go through the room's servers (make_join/send_join).
      const snap = await this.rooms.snapshot(roomId);
      if (snap.room.hostedElsewhere && !snap.joinedServers.has(this.rooms.serverName))
        throw new MatrixError(400, "M_UNKNOWN", `${roomId} is hosted elsewhere and no local user is in it: join through POST /remote/join`);
    }
    return this.rooms.sendLocalEvent(roomId, { type: "m.room.member", sender: userId, stateKey: userId, content: { membership } });
  }
}

/**
 * The membership handshakes (make_X and send_X) are served for rooms hosted here only: in a room
 * hosted elsewhere Gatehouse is a participant, and other servers join through the room's host
 * (404 M_NOT_FOUND, as for a room we do not know, so they try their next server).
 */
function requireHostedHere(snap: RoomSnapshot): void {
  if (snap.room.hostedElsewhere) throw notFound(`${snap.room.roomId} is not hosted here: join it through a server that hosts it`);
}

/** Maps a failed outbound federation call to an error for the admin caller. */
export function remoteRefusal(e: unknown, what: string): MatrixError {
  if (e instanceof FederationRequestError) {
    // The peer answered with a body Gatehouse does not take (too large, not UTF-8, too deep, not an object).
    if (e.malformed) return new MatrixError(502, "M_UNKNOWN", `${what}: ${e.message}`);
    if (e.status !== undefined) {
      const status = e.status >= 400 && e.status < 500 ? e.status : 502;
      // Keep the remote's structured hints (which room replaced a tombstoned one, which version
      // it runs, when to retry): callers act on them, e.g. to follow a tombstone.
      const b = (e.body ?? {}) as Record<string, unknown>;
      const hints: Record<string, unknown> = {};
      if (typeof b.replacement_room === "string") hints.replacement_room = b.replacement_room;
      if (typeof b.room_version === "string") hints.room_version = b.room_version;
      if (typeof b.retry_after_ms === "number") hints.retry_after_ms = b.retry_after_ms;
      return new MatrixError(status, (e.errcode as never) ?? "M_UNKNOWN", `${what}: ${e.destination} answered ${e.status}${e.remoteMessage ? `: ${e.remoteMessage}` : ""}`, {
        remote_status: e.status,
        ...(e.errcode ? { remote_errcode: e.errcode } : {}),
        ...hints,
      });
    }
    return new MatrixError(502, "M_UNKNOWN", `${what}: ${e.destination} is unreachable: ${e.message}`);
  }
  if (e instanceof MatrixError) return e;
  return new MatrixError(502, "M_UNKNOWN", `${what}: ${(e as Error).message}`);
}
