-- A room hosted elsewhere, as a local user's send_join left it (rooms/participation.ts): the
-- events of the room's state and auth chain as outliers (kept for the auth rules, not in the
-- timeline), the join on top with its state groups (the state before it, whole; the join as a
-- delta on it), the current state (replaced whole: on a rejoin the old one is stale), the members
-- mirror, the join as the only forward extremity, and the room flagged `elsewhere` (Gatehouse
-- never relays other servers' events there). Checks first, so a refusal writes nothing.
-- Slot rule (redis-keys.ts): every key is in the room's slot; the global indexes (event → room,
-- the rooms set) are written by the caller after this script, idempotently.
--
-- KEYS: (all in the room's slot) 1 room, 2 state, 3 members, 4 extremities, 5 timeline,
--       6 state groups, 7 event state, 8 event status, 9 outbox,
--       10.. one event key per outlier, then the join's event key
-- ARGV: 1 roomId, 2 version, 3 creator, 4 createdTs, 5 join depth, 6 join event ID,
--       7 join's state field, 8 group before (ID), 9 group before JSON, 10 group after (ID),
--       11 group after JSON, 12 state JSON {field: eventId} (before the join),
--       13 members JSON {userId: membership} (after the join), 14 outlier count n,
--       15 destinations of the join (application services; "" = none),
--       16 partial-state record JSON ("" = the answer held the full state; rooms/partial-state.ts),
--       17.. per outlier: eventId, pduJson (pairs), then the join's pduJson
-- Returns 'persisted', 'hosted' (the room is hosted here) or 'duplicate' (the join is stored).
if redis.call('HGET', KEYS[1], 'version') and redis.call('HGET', KEYS[1], 'elsewhere') ~= '1' then return 'hosted' end
local n = tonumber(ARGV[14])
if redis.call('EXISTS', KEYS[10 + n]) == 1 then return 'duplicate' end
if not redis.call('HGET', KEYS[1], 'version') then
  redis.call('HSET', KEYS[1], 'room_id', ARGV[1], 'version', ARGV[2], 'creator', ARGV[3],
    'created_ts', ARGV[4], 'depth', '0', 'stream', '0', 'elsewhere', '1')
end
for i = 1, n do
  if redis.call('EXISTS', KEYS[9 + i]) == 0 then
    redis.call('SET', KEYS[9 + i], ARGV[16 + 2 * i])
    redis.call('HSET', KEYS[8], ARGV[15 + 2 * i], 'outlier')
  end
end
redis.call('SET', KEYS[10 + n], ARGV[17 + 2 * n])
if ARGV[16] ~= '' then redis.call('HSET', KEYS[1], 'partial_state', ARGV[16]) else redis.call('HDEL', KEYS[1], 'partial_state') end
redis.call('HDEL', KEYS[8], ARGV[6])
redis.call('HSET', KEYS[6], ARGV[8], ARGV[9], ARGV[10], ARGV[11])
redis.call('HSET', KEYS[7], ARGV[6], ARGV[8] .. ' ' .. ARGV[10])
local pos = redis.call('HINCRBY', KEYS[1], 'stream', 1)
redis.call('ZADD', KEYS[5], pos, ARGV[6])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
for field, eventId in pairs(cjson.decode(ARGV[12])) do redis.call('HSET', KEYS[2], field, eventId) end
redis.call('HSET', KEYS[2], ARGV[7], ARGV[6])
for user, membership in pairs(cjson.decode(ARGV[13])) do redis.call('HSET', KEYS[3], user, membership) end
redis.call('SADD', KEYS[4], ARGV[6])
local depth = tonumber(ARGV[5])
if depth > tonumber(redis.call('HGET', KEYS[1], 'depth') or '0') then redis.call('HSET', KEYS[1], 'depth', ARGV[5]) end
-- The whole current state changed: every process's state cache reads it again.
redis.call('HSET', KEYS[1], 'state_group', ARGV[10], 'state_reset', tostring(pos))
if ARGV[15] ~= '' then redis.call('XADD', KEYS[9], '*', 'e', ARGV[6], 'd', ARGV[15]) end
return 'persisted'
