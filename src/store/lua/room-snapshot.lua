-- A room's snapshot: what a plan needs, read in one round trip (state-cache.ts, room-store.ts
-- snapshot()). A request's auth events and the state events of the delta come back with their
-- redaction records, so they are served redacted without another round trip.
--
-- KEYS: 1 room, 2 extremities, 3 timeline, 4 event status, 5 state, 6 redaction records,
--       7 the room's write lease (redis-keys.ts roomLock), 8 the room's state-event record
--       (redis-keys.ts stateEvents), 9.. (optional) the keys of events to probe (whether stored)
-- ARGV: 1 cached stream ("" = no cache entry), 2 delta limit, 3 R: how many of the last ARGV are
--       event IDs whose redaction records to read, 4 lease owner ("" = take no lease), 5 lease
--       milliseconds, 6.. event IDs whose status to read (the probed events first, in the order
--       of KEYS[9..]), then the R event IDs whose redaction records to read
-- With a lease owner: when another owner holds the room's write lease, returns {'leased', its
-- PTTL} and reads nothing; else the owner takes (or extends) the lease, which the persist script
-- gives back (persist-events.lua). The lease only keeps replicas from planning the same room at
-- once (a plan that loses the race is thrown away); the write's stream check stays what keeps
-- writes correct, with or without it.
-- Returns {room hash (flat), extremities, event ID at the cached stream (or ""), delta IDs,
--   delta statuses, full state (flat; only when there is no usable cache entry — none, too old,
--   or older than the room's `state_reset`, a current-state change the delta cannot express —
--   else false),
--   probe: {exists (0/1 per key of KEYS[9..]), statuses of ARGV[6..], redaction records of the R IDs},
--   redaction records of the delta IDs,
--   the IDs of the delta's events with a state_key from the state-event record, or false when
--   the record does not cover every position of the delta (the room's `state_events_from` after
--   the cached position + 1, or its `state_events_to` behind its stream)}
if ARGV[4] ~= '' then
  local holder = redis.call('GET', KEYS[7])
  if holder and holder ~= ARGV[4] then return {'leased', redis.call('PTTL', KEYS[7])} end
  redis.call('SET', KEYS[7], ARGV[4], 'PX', ARGV[5])
end
local room = redis.call('HGETALL', KEYS[1])
local ext = redis.call('SMEMBERS', KEYS[2])
local probe = {{}, {}, {}}
for i = 9, #KEYS do probe[1][i - 8] = redis.call('EXISTS', KEYS[i]) end
local r = tonumber(ARGV[3])
if #ARGV - r >= 6 then probe[2] = redis.call('HMGET', KEYS[4], unpack(ARGV, 6, #ARGV - r)) end
if r > 0 then probe[3] = redis.call('HMGET', KEYS[6], unpack(ARGV, #ARGV - r + 1, #ARGV)) end
local reset = tonumber(redis.call('HGET', KEYS[1], 'state_reset') or '0')
if ARGV[1] ~= '' and reset <= tonumber(ARGV[1]) then
  local at = redis.call('ZRANGEBYSCORE', KEYS[3], ARGV[1], ARGV[1])
  local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[1], '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
  if #ids < tonumber(ARGV[2]) then
    local st = {}
    local red = {}
    local fields = false
    if #ids > 0 then
      st = redis.call('HMGET', KEYS[4], unpack(ids))
      red = redis.call('HMGET', KEYS[6], unpack(ids))
      local cover = redis.call('HMGET', KEYS[1], 'state_events_from', 'state_events_to', 'stream')
      if cover[1] and cover[2] == cover[3] and tonumber(cover[1]) <= tonumber(ARGV[1]) + 1 then
        fields = redis.call('ZRANGEBYSCORE', KEYS[8], '(' .. ARGV[1], '+inf')
      end
    end
    return {room, ext, at[1] or '', ids, st, false, probe, red, fields}
  end
end
local last = redis.call('ZRANGE', KEYS[3], -1, -1)
return {room, ext, last[1] or '', {}, {}, redis.call('HGETALL', KEYS[5]), probe, {}, false}
