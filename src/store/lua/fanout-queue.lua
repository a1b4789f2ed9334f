-- The fan-out stage's write to ONE destination (store/fanout.ts): appends a room's outbox entries
-- to the destination's PDU queue, each event at most once.
-- KEYS: 1 pdus (the destination's queue), 2 fan-out cursors (HASH room → last outbox entry ID
--       queued), 3 seen (ZSET `roomId eventId` → ms when queued: the dedupe by event ID)
-- ARGV: 1 room ID, 2 now (ms), 3 how many seen entries to keep, 4.. pairs: outbox entry ID, event ID
--       (in outbox order)
-- An event in `seen` was queued already: by an earlier run (a retry after a crash between this
-- script and the outbox delete), a concurrent fan-out of the same room, or under another outbox
-- entry (the room's primary failed over, lost the entry, and the event was persisted again).
-- An entry at or before the cursor and no longer in a full `seen` is an old entry queued long ago
-- (its outbox ID, in ms, is older than the oldest seen): skipped. One at or before the cursor that
-- is newer than that is a new event after the room's slot rolled back in a failover: queued.
-- Returns how many PDUs were queued.
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function newer(a, b)
  if not b then return true end
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  if ams ~= bms then return ams > bms end
  return aseq > bseq
end
local keep = tonumber(ARGV[3])
local cursor = redis.call('HGET', KEYS[2], ARGV[1])
local oldest = nil
if redis.call('ZCARD', KEYS[3]) >= keep then
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  oldest = tonumber(first[2])
end
-- One ZMSCORE for the dedupe, one RPUSH and one ZADD for what is queued: three commands per
-- call, not three per entry (a run of 50 PDUs is one call per destination).
local refs = {}
for i = 4, #ARGV, 2 do refs[#refs + 1] = ARGV[1] .. ' ' .. ARGV[i + 1] end
local scores = {}
if #refs > 0 then scores = redis.call('ZMSCORE', KEYS[3], unpack(refs)) end
local push, seen, taken = {}, {}, {}
local last = cursor
for j = 1, #refs do
  local id, ref = ARGV[2 + 2 * j], refs[j]
  -- `taken`: an event listed twice in one call is queued once, as when each was a ZSCORE after
  -- the ZADD of the one before.
  if not scores[j] and not taken[ref] then
    local ms = parse(id)
    if newer(id, cursor) or oldest == nil or ms >= oldest then
      push[#push + 1] = ref
      seen[#seen + 1] = ARGV[2]
      seen[#seen + 1] = ref
      taken[ref] = true
    end
  end
  if newer(id, last) then last = id end
end
local queued = #push
if queued > 0 then
  redis.call('RPUSH', KEYS[1], unpack(push))
  redis.call('ZADD', KEYS[3], unpack(seen))
end
if last ~= cursor then redis.call('HSET', KEYS[2], ARGV[1], last) end
if queued > 0 then redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(keep + 1)) end
return queued
