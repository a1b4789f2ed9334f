-- The end of a partial-state resync (rooms/partial-state.ts): the state at our join, fetched and
-- checked, completes the room in one write. The fetched events are stored as outliers; the fields
-- the send_join answer omitted (member events) are added to every whole state group of the room
-- where the group does not hold the field (delta groups inherit them from their whole group, and a
-- field a later event set keeps that event); the current state and the members mirror get them
-- where no later event set them; the partial flag is cleared and `state_epoch` bumped, so every
-- process reads the room's state again (room-store.ts currentSnapshot).
-- Slot rule (redis-keys.ts): every key is in the room's slot; the event → room index and the
-- partial-state rooms set are written by the caller after this script.
--
-- KEYS: (all in the room's slot) 1 room, 2 state, 3 members, 4 state groups, 5 event status,
--       6.. one event key per outlier
-- ARGV: 1 our join's event ID (the resync's), 2 added fields JSON {field: eventId},
--       3 members JSON {userId: membership} (of the added member events), 4 outlier count n,
--       5.. per outlier: eventId, pduJson (pairs)
-- Returns 'completed', 'not_partial' (done already, or no such room) or 'stale' (the room's
-- partial record names another join: a later join started its own resync).
local rec = redis.call('HGET', KEYS[1], 'partial_state')
if not rec then return 'not_partial' end
if cjson.decode(rec).joinEventId ~= ARGV[1] then return 'stale' end
local n = tonumber(ARGV[4])
for i = 1, n do
  if redis.call('EXISTS', KEYS[5 + i]) == 0 then
    redis.call('SET', KEYS[5 + i], ARGV[6 + 2 * (i - 1)])
    redis.call('HSET', KEYS[5], ARGV[5 + 2 * (i - 1)], 'outlier')
  end
end
local added = cjson.decode(ARGV[2])
local groups = redis.call('HGETALL', KEYS[4])
for i = 1, #groups, 2 do
  local g = cjson.decode(groups[i + 1])
  if g.p == nil or g.p == cjson.null then
    local changed = false
    for field, eventId in pairs(added) do
      if g.d[field] == nil then
        g.d[field] = eventId
        changed = true
      end
    end
    if changed then redis.call('HSET', KEYS[4], groups[i], cjson.encode(g)) end
  end
end
for field, eventId in pairs(added) do redis.call('HSETNX', KEYS[2], field, eventId) end
for user, membership in pairs(cjson.decode(ARGV[3])) do redis.call('HSETNX', KEYS[3], user, membership) end
redis.call('HDEL', KEYS[1], 'partial_state')
redis.call('HINCRBY', KEYS[1], 'state_epoch', 1)
return 'completed'
