-- A new room, all at once: every event of createRoom (create, creator's join, power levels,
-- alias, preset and initial state, name, topic, local invites) with the room's final state, or
-- nothing. Checks come first, so a refused room writes nothing; after them only writes follow.
-- A new room has no other server in it, so nothing is queued for the sender.
--
-- KEYS: 1 room, 2 state, 3 members, 4 extremities, 5 timeline, 6 eventRooms, 7 rooms,
--       8 aliases, 9.. one event key per event, in room order
-- ARGV: 1 roomId, 2 version, 3 creator, 4 createdTs, 5 depth, 6 alias ("" = none),
--       7 extremity (the last event's ID), 8 state JSON {field: eventId},
--       9 members JSON {userId: membership}, 10.. per event: eventId, pduJson (pairs, in room order)
-- Returns 'persisted', 'exists' (the room ID is taken) or 'alias_taken'.
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
if ARGV[6] ~= '' and redis.call('HEXISTS', KEYS[8], ARGV[6]) == 1 then return 'alias_taken' end
local n = (#ARGV - 9) / 2
redis.call('HSET', KEYS[1], 'room_id', ARGV[1], 'version', ARGV[2], 'creator', ARGV[3],
  'created_ts', ARGV[4], 'depth', ARGV[5], 'stream', tostring(n))
redis.call('SADD', KEYS[7], ARGV[1])
for i = 1, n do
  local eventId = ARGV[8 + 2 * i]
  redis.call('SET', KEYS[8 + i], ARGV[9 + 2 * i])
  redis.call('HSET', KEYS[6], eventId, ARGV[1])
  redis.call('ZADD', KEYS[5], i, eventId)
end
redis.call('SADD', KEYS[4], ARGV[7])
for field, eventId in pairs(cjson.decode(ARGV[8])) do redis.call('HSET', KEYS[2], field, eventId) end
for user, membership in pairs(cjson.decode(ARGV[9])) do redis.call('HSET', KEYS[3], user, membership) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[8], ARGV[6], ARGV[1]) end
return 'persisted'
