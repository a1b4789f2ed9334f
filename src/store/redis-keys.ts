/**
 * Every Redis key Gatehouse uses, in one place (like BullMQ's queue-keys). Slot rule (Redis
 * Cluster): room- and event-scoped keys carry the room ID in a hash tag `{roomId}`, destination
 * keys the destination `{destination}`, and every script and multi-key command touches keys of
 * ONE tag only. Global keys (rooms, event-rooms, destinations, aliases...) are only ever touched
 * by single-key commands. An event reaches destination queues through the room's outbox (a
 * stream in the room's slot) and the fan-out stage (store/fanout.ts).
 */
export class RedisKeys {
  constructor(readonly prefix: string = "gh") {}

  // --- rooms -------------------------------------------------------------------------------
  /** SET of hosted room IDs. */
  rooms(): string { return `${this.prefix}:rooms`; }
  /**
   * SET of rooms hosted elsewhere joined with partial state whose resync may still be due
   * (rooms/partial-state.ts): added before the join is stored, removed after the resync's write;
   * a listed room without the `partial_state` flag is harmless (dropped at the next resume).
   */
  partialStateRooms(): string { return `${this.prefix}:partial-state-rooms`; }
  /**
   * HASH: version, creator, created_ts, depth, stream (last stream position), tombstone,
   * state_group (the group holding current state), state_group_seq (group ID counter),
   * state_reset (stream position of the last current-state change that was not just the
   * event's own state key: the state cache re-reads after it)...
   */
  room(roomId: string): string { return `${this.prefix}:{${roomId}}:room`; }
  /** HASH: JSON [type, state_key] → event ID (current state). */
  state(roomId: string): string { return `${this.prefix}:{${roomId}}:state`; }
  /** HASH: user ID → membership (mirror of current member state, for listing). */
  members(roomId: string): string { return `${this.prefix}:{${roomId}}:members`; }
  /** SET: forward extremities (prev_events for the next event). */
  extremities(roomId: string): string { return `${this.prefix}:{${roomId}}:extremities`; }
  /** ZSET: event ID by stream position (the order Gatehouse accepted them in). */
  timeline(roomId: string): string { return `${this.prefix}:{${roomId}}:timeline`; }
  /** STRING: the PDU JSON as sent on the wire. */
  event(roomId: string, eventId: string): string { return `${this.prefix}:{${roomId}}:event:${eventId}`; }
  /** HASH: event ID → room ID, to find an event's room from its ID alone. */
  eventRooms(): string { return `${this.prefix}:event-rooms`; }
  /**
   * HASH: state group ID → JSON {"p": parent group or null, "d": {field: event ID or null
   * (removed)}, "n": deltas since the last full group}. Immutable once written.
   */
  stateGroups(roomId: string): string { return `${this.prefix}:{${roomId}}:state-groups`; }
  /** HASH: event ID → "before after": the state groups before and after the event. */
  eventState(roomId: string): string { return `${this.prefix}:{${roomId}}:event-state`; }
  /** HASH: event ID → "rejected" | "soft_failed" reason for events kept but not in state. */
  eventStatus(roomId: string): string { return `${this.prefix}:{${roomId}}:event-status`; }
  /**
   * ZSET: event ID by stream position, for every event with a state_key (any status) that
   * persist-events.lua or persist-new-room.lua wrote, at the positions from the room's
   * `state_events_from` to its `state_events_to` (the last STATE_RECORD_WINDOW positions at most):
   * what another replica's state cache reads instead of the events themselves to learn which of
   * the events after its position can change state (state-cache.ts).
   */
  stateEvents(roomId: string): string { return `${this.prefix}:{${roomId}}:state-events`; }
  /** HASH: redacted event ID → accepted redactions of it, one `redactionEventId 0|1` line each (1: sender had the redact level). */
  redactions(roomId: string): string { return `${this.prefix}:{${roomId}}:redactions`; }
  /**
   * STREAM: the room's outbox: one entry per persisted event with destinations, fields
   * `e` (event ID) and `d` (destinations, space-separated); deleted once fanned out (fanout.ts).
   */
  outbox(roomId: string): string { return `${this.prefix}:{${roomId}}:outbox`; }
  /**
   * SET of rooms NOT hosted here that have (or had) an outbox: remote invites queued for
   * application services (appservice/push.ts). The sender's sweep drains them with the hosted rooms.
   */
  remoteOutboxRooms(): string { return `${this.prefix}:remote-outbox-rooms`; }
  /** HASH: alias → room ID (local aliases). */
  aliases(): string { return `${this.prefix}:aliases`; }
  /** STRING: the room's write lease, the owner's ID (lua/room-snapshot.lua): one replica plans the room's runs at a time. */
  roomLock(roomId: string): string { return `${this.prefix}:{${roomId}}:lock`; }

  // --- remote rooms (knocks by local users) ------------------------------------------------
  /** HASH: remote room ID → JSON record of a local user's knock/invite/join state there. */
  remoteMemberships(userId: string): string { return `${this.prefix}:remote-memberships:${userId}`; }
  /** SET of local users with remote memberships. */
  remoteMembers(): string { return `${this.prefix}:remote-members`; }

  /**
   * SET of local users known through the admin API (it created a room for them, joined them,
   * knocked out for them, or an operator added them: rooms/local-users.ts). Invites from other
   * servers are taken only for local users who exist (this set, a registration, or an AS user query).
   */
  localUsers(): string { return `${this.prefix}:local-users`; }
  /** STRING: set once the local-users set was filled from records made before it existed (the version of that migration). */
  localUsersMigrated(): string { return `${this.prefix}:local-users:migrated`; }

  // --- application services (client API) ---------------------------------------------------
  /** HASH: user ID → ID of the application service that registered it. */
  appserviceUsers(): string { return `${this.prefix}:as-users`; }
  /** HASH: displayname, avatar_url of a local user. */
  profile(userId: string): string { return `${this.prefix}:profile:${userId}`; }
  /** STRING: event ID sent for a client transaction (application service, user, txnId). */
  clientTxn(appserviceId: string, userId: string, txnId: string): string { return `${this.prefix}:client-txn:${appserviceId}:${userId}:${txnId}`; }
  /** HASH: alias → user who created it through the client API. */
  aliasCreators(): string { return `${this.prefix}:alias-creators`; }

  // --- federation --------------------------------------------------------------------------
  /** HASH: key ID → JSON {key, validUntilTs, expiredTs?, fetchedTs} of a remote server. */
  serverKeys(serverName: string): string { return `${this.prefix}:server-keys:${serverName}`; }
  /** STRING: cached /send response for (origin, txnId). */
  inboundTxn(origin: string, txnId: string): string { return `${this.prefix}:txn:${origin}:${txnId}`; }

  // --- outbound queue (per destination) ----------------------------------------------------
  /** LIST of queued PDU references `roomId eventId` for a destination. */
  outboundPdus(destination: string): string { return `${this.prefix}:out:{${destination}}:pdus`; }
  /** LIST of queued EDU JSON for a destination. */
  outboundEdus(destination: string): string { return `${this.prefix}:out:{${destination}}:edus`; }
  /** HASH: the transaction in flight: txn_id, pdu_count, edu_count, created_ts... (its body: outboundTxnBody). */
  outboundTxn(destination: string): string { return `${this.prefix}:out:{${destination}}:txn`; }
  /** STRING: the exact body of a transaction stored by an older version (newer ones store a digest and rebuild it; older still kept it in the txn hash). */
  outboundTxnBody(destination: string): string { return `${this.prefix}:out:{${destination}}:txn-body`; }
  /** HASH: destination status: last_success_ts, last_error, last_error_ts, failures, backoff_until. */
  destinationStatus(destination: string): string { return `${this.prefix}:out:{${destination}}:status`; }
  /** LIST: dead letters, PDUs the destination rejected when sent alone (JSON {ref, reason, ...}). */
  outboundDead(destination: string): string { return `${this.prefix}:out:{${destination}}:dead`; }
  /** HASH: room ID → the last outbox entry ID of that room queued here (fanout.ts). */
  fanoutCursors(destination: string): string { return `${this.prefix}:out:{${destination}}:fanout-cursors`; }
  /** ZSET: `roomId eventId` queued here recently (score: ms), the dedupe by event ID (fanout.ts). */
  fanoutSeen(destination: string): string { return `${this.prefix}:out:{${destination}}:fanout-seen`; }
  /** SET of destinations that have ever had traffic. */
  destinations(): string { return `${this.prefix}:out:destinations`; }
  /** STRING (JSON): the sender worker of an instance ID, its host and pid (see Sender.claimInstance). */
  senderInstance(instanceId: string): string { return `${this.prefix}:sender:instance:${instanceId}`; }
  /** STRING: the sender's shard count in use (src/sender/shards.ts). */
  senderLayout(): string { return `${this.prefix}:sender:shards`; }
  /** STRING: held by the process changing the sender's shard count. */
  senderLayoutLock(): string { return `${this.prefix}:sender:shards:lock`; }
  /**
   * STRING counter for a destination's transaction IDs (`{ms}_{n}`: the millisecond prefix keeps
   * them unique even where this counter restarted, as it did when it moved from one global key).
   */
  txnCounter(destination: string): string { return `${this.prefix}:out:{${destination}}:txn-counter`; }

  // --- limits ------------------------------------------------------------------------------
  rateLimit(bucket: string, subject: string): string { return `${this.prefix}:ratelimit:${bucket}:${subject}`; }
}
