-- Events of a room hosted elsewhere fetched with /backfill (rooms/participation.ts): older than
-- everything in the timeline, so they go BEFORE it (scores below its first one: negative stream
-- positions, as Synapse's backfilled events have), with their state groups. They change neither
-- the current state, the forward extremities nor the stream counter, so the state cache and the
-- persist script never see them. State events fetched to build the state at them (/state_ids,
-- /event) are kept as outliers. Idempotent: an event already in the timeline is left alone.
-- Slot rule (redis-keys.ts): every key is in the room's slot; the caller writes the global
-- event → room index after this script.
--
-- KEYS: (all in the room's slot) 1 timeline, 2 state groups, 3 event state, 4 event status,
--       5.. one event key per outlier, then one per backfilled event
-- ARGV: 1 outlier count n, 2 backfilled count m, 3 new state groups JSON [[id, groupJson], ...],
--       4.. per outlier: eventId, pduJson; then per backfilled event: eventId, pduJson,
--       "before after" (its state groups), timeline score
-- Returns the number of backfilled events written.
local n = tonumber(ARGV[1])
local m = tonumber(ARGV[2])
for _, g in ipairs(cjson.decode(ARGV[3])) do redis.call('HSET', KEYS[2], g[1], g[2]) end
for i = 1, n do
  local id = ARGV[2 + 2 * i]
  if redis.call('EXISTS', KEYS[4 + i]) == 0 then
    redis.call('SET', KEYS[4 + i], ARGV[3 + 2 * i])
    redis.call('HSET', KEYS[4], id, 'outlier')
  end
end
local written = 0
for j = 1, m do
  local a = 3 + 2 * n + 4 * (j - 1)
  local id = ARGV[a + 1]
  if not redis.call('ZSCORE', KEYS[1], id) then
    redis.call('SET', KEYS[4 + n + j], ARGV[a + 2])
    redis.call('HDEL', KEYS[4], id)
    redis.call('HSET', KEYS[3], id, ARGV[a + 3])
    redis.call('ZADD', KEYS[1], ARGV[a + 4], id)
    written = written + 1
  end
end
return written
