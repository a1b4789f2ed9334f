-- A new room, all at once: every event of createRoom (create, creator's join, power levels,
-- alias, preset and initial state, name, topic, local invites) with the room's final state, or
-- nothing. Checks come first, so a refused room writes nothing; after them only writes follow.
-- A new room has no other server in it; events are queued only for application services
-- (`as:{id}` destinations) interested in them, as persist-event does: one outbox entry per such
-- event (fields e = event ID, d = destinations) in this same write, moved to the destinations'
-- queues by the fan-out stage (store/fanout.ts).
-- Slot rule (redis-keys.ts): every key is in the room's slot. The global indexes (event → room,
-- the rooms set) are written by the caller after this script, idempotently; the alias (global)
-- is claimed by the caller before it (room-store.ts persistNewRoom).
-- The state groups, the groups before/after each event, the current state group and the
-- redaction records are those persist-event would have written for the events one by one
-- (planned in memory by rooms/new-room-state.ts), and so is the room's state-event record
-- (redis-keys.ts stateEvents: every event with a state_key by its position; it covers 1..n).
--
-- KEYS: (all in the room's slot) 1 room, 2 state, 3 members, 4 extremities, 5 timeline,
--       6 state groups, 7 event state, 8 redactions, 9 outbox,
--       10.. one event key per event, in room order; then the room's state-event record
-- ARGV: 1 roomId, 2 version, 3 creator, 4 createdTs, 5 depth, 6 alias ("" = none),
--       7 extremity (the last event's ID), 8 state JSON {field: eventId},
--       9 members JSON {userId: membership},
--       10 state groups JSON [[id, groupJson], ...], 11 event state JSON [[eventId, "before after"], ...],
--       12 current state group, 13 state group counter (the last group ID allocated),
--       14 stream position of the last state reset ("" = none),
--       15 redactions JSON [[redacted event ID, "redactionId level"], ...] (level "1": the
--       redaction's sender had the redact level),
--       16 event count n,
--       17 outbox JSON [[event index (1-based), "destination destination ..."], ...] in room order,
--       18.. per event: eventId, pduJson (pairs, in room order); then ARGV[18 + 2n]: the
--       positions (1-based, room order) of the events with a state_key, JSON [i, ...]
-- Returns 'persisted' or 'exists' (the room ID is taken).
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
local n = tonumber(ARGV[16])
redis.call('HSET', KEYS[1], 'room_id', ARGV[1], 'version', ARGV[2], 'creator', ARGV[3],
  'created_ts', ARGV[4], 'depth', ARGV[5], 'stream', tostring(n),
  'state_group', ARGV[12], 'state_group_seq', ARGV[13], 'state_events_from', '1', 'state_events_to', tostring(n))
if ARGV[14] ~= '' then redis.call('HSET', KEYS[1], 'state_reset', ARGV[14]) end
for i = 1, n do
  local eventId = ARGV[16 + 2 * i]
  redis.call('SET', KEYS[9 + i], ARGV[17 + 2 * i])
  redis.call('ZADD', KEYS[5], i, eventId)
end
redis.call('SADD', KEYS[4], ARGV[7])
for field, eventId in pairs(cjson.decode(ARGV[8])) do redis.call('HSET', KEYS[2], field, eventId) end
for user, membership in pairs(cjson.decode(ARGV[9])) do redis.call('HSET', KEYS[3], user, membership) end
for _, g in ipairs(cjson.decode(ARGV[10])) do redis.call('HSET', KEYS[6], g[1], g[2]) end
for _, e in ipairs(cjson.decode(ARGV[11])) do redis.call('HSET', KEYS[7], e[1], e[2]) end
for _, i in ipairs(cjson.decode(ARGV[18 + 2 * n])) do redis.call('ZADD', KEYS[10 + n], i, ARGV[16 + 2 * i]) end
for _, r in ipairs(cjson.decode(ARGV[15])) do
  local prior = redis.call('HGET', KEYS[8], r[1])
  local entry = r[2]
  if prior then entry = prior .. '\n' .. entry end
  redis.call('HSET', KEYS[8], r[1], entry)
end
for _, o in ipairs(cjson.decode(ARGV[17])) do
  redis.call('XADD', KEYS[9], '*', 'e', ARGV[16 + 2 * o[1]], 'd', o[2])
end
return 'persisted'
