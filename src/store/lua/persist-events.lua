-- Events of ONE room, in order, in one atomic write: each event with its timeline entry, state
-- groups, the groups before/after it, extremities, current state and members mirror, redaction
-- record, and its outbox entry naming its destinations (fields e = event ID, d = destinations;
-- moved to the destinations' queues by the fan-out stage, store/fanout.ts). A run of N events
-- is written as persisting them one by one would write them (room-store.ts persistEvents: the
-- caller planned each event's state against the state the previous ones leave).
-- Checks come first, so a refused run writes nothing: an event already stored is a duplicate
-- (skipped, nothing of it written); when any event is new, the room's stream must still be the
-- one the caller planned at (else 'conflict' and nothing is written; the caller re-plans).
-- Slot rule (redis-keys.ts): every key is in the room's slot. The global indexes (event → room,
-- the rooms set) are written by the caller after this script, idempotently.
--
-- Every event with a state_key is also recorded in the room's state-event record (KEYS[11 + n], a
-- sorted set: event ID by stream position; redis-keys.ts stateEvents), and the room's
-- `state_events_to` follows the stream: the positions from `state_events_from` to it are all
-- recorded, so another replica's state cache learns from the record which events after its
-- position can change state and reads only those (lua/room-snapshot.lua). When the record
-- does not reach the stream this run starts from (positions written by a version before the
-- record, or by persist-joined-room), `state_events_from` restarts at the run's first position.
-- Only the last W positions are kept (W = ARGV[8 + 15 * N]; a replica further behind than the
-- delta limit reads the state whole anyway): older entries are trimmed and `state_events_from`
-- moves up with them, so the record stays a few hundred entries in any room.
--
-- KEYS: (all in the room's slot) 1 room, 2 state, 3 members, 4 extremities, 5 timeline,
--       6 outbox, 7 event status, 8 state groups, 9 event state, 10 redactions,
--       11.. one event key per event, in order; then the room's state-event record (redis-keys.ts
--       stateEvents); then the room's write lease (redis-keys.ts
--       roomLock); then, on a single Redis only (not a cluster: it is another slot), the global
--       event → room index, written here for every event not refused (persisted or duplicate,
--       as the caller writes it after the script on a cluster)
-- ARGV: 1 roomId, 2 expected stream ("" = skip the check), 3 createRoom JSON ("" = none; the
--       create event only), 4 N (events), 5 expected state group counter ("" = skip: the groups'
--       IDs were taken with HINCRBY), 6 the counter after this run's groups (numbered from 5 by
--       the planner), then 15 per event from 7 + 15 * (i - 1):
--       +0 eventId, +1 PDU JSON, +2 state field ("" = none), +3 member user, +4 membership,
--       +5 prev events JSON, +6 depth, +7 status ("" = accepted), +8 destinations, space-separated
--       ("" = none), +9 new state groups JSON [[id, groupJson], ...] ("" = none),
--       +10 "before after" groups ("" = none), +11 current state JSON
--       {g, set: [[field, id]], del: [field], mem: [[user, membership]], reset} ("" = none),
--       +12 redacted event ID ("" = not a redaction), +13 "1" when the redaction's sender had the
--       redact level, +14 "1" when the event has a state_key (whatever its status or state plan:
--       it goes in the state-event record), else ""; after the events,
--       ARGV[7 + 15 * N]: the write lease's owner ("" = none),
--       which gets the lease back when it still holds it and the run is written (or was all
--       duplicates); a conflict leaves it held, for the owner's next plan (lua/room-snapshot.lua);
--       ARGV[8 + 15 * N]: W, how many of the last stream positions the state-event record keeps
-- The state group counter is checked with the stream: a run that numbered its groups from a
-- snapshot's counter is a conflict when any group ID was taken since.
-- Returns 'conflict', or one result per event: 'persisted' or 'duplicate'.
local n = tonumber(ARGV[4])
local STRIDE = 15
local results = {}
local fresh = 0
for i = 1, n do
  if redis.call('EXISTS', KEYS[10 + i]) == 1 then
    results[i] = 'duplicate'
  else
    results[i] = 'persisted'
    fresh = fresh + 1
  end
end
local stateEvents = KEYS[11 + n]
local leaseKey = KEYS[12 + n]
local leaseOwner = ARGV[7 + STRIDE * n]
local function releaseLease()
  if leaseOwner ~= '' and redis.call('GET', leaseKey) == leaseOwner then redis.call('DEL', leaseKey) end
end
local index = KEYS[13 + n]
if fresh == 0 then
  releaseLease()
  if index then for i = 1, n do redis.call('HSET', index, ARGV[7 + STRIDE * (i - 1)], ARGV[1]) end end
  return results
end
local head = redis.call('HMGET', KEYS[1], 'stream', 'state_events_to', 'state_events_from')
local stream = head[1] or '0'
if ARGV[2] ~= '' and stream ~= ARGV[2] then return 'conflict' end
if ARGV[5] ~= '' then
  local seq = redis.call('HGET', KEYS[1], 'state_group_seq') or '0'
  if seq ~= ARGV[5] then return 'conflict' end
  redis.call('HSET', KEYS[1], 'state_group_seq', ARGV[6])
end
if ARGV[3] ~= '' then
  local meta = cjson.decode(ARGV[3])
  redis.call('HSET', KEYS[1], 'room_id', ARGV[1], 'version', meta.version, 'creator', meta.creator,
    'created_ts', tostring(meta.createdTs), 'depth', '0', 'stream', '0', 'state_group_seq', '1')
  stream = '0'
  head[2] = false
end
local roomDepth = tonumber(redis.call('HGET', KEYS[1], 'depth') or '0')
local depthBefore = roomDepth
-- What the run writes to the same key is gathered and written once at the end (one MSET, ZADD,
-- HSET per hash...), the commands persisting the events one by one would leave the same data
-- with: a run of N events costs a few commands plus one XADD each, not ~10 per event.
local pos = tonumber(stream)
local events, groups, eventState, statuses, timeline, stateRecord = {}, {}, {}, {}, {}, {}
local extremAdded, extremRemoved = {}, {}
local roomFields = {}
local written = {}
for i = 1, n do
  -- Within a run an event may repeat (the second copy is a duplicate of the first).
  if results[i] == 'persisted' and written[KEYS[10 + i]] then results[i] = 'duplicate' end
  if results[i] == 'persisted' then
    written[KEYS[10 + i]] = true
    local a = 7 + STRIDE * (i - 1)
    local eventId = ARGV[a]
    events[#events + 1] = KEYS[10 + i]
    events[#events + 1] = ARGV[a + 1]
    if ARGV[a + 9] ~= '' then
      for _, g in ipairs(cjson.decode(ARGV[a + 9])) do
        groups[#groups + 1] = g[1]
        groups[#groups + 1] = g[2]
      end
    end
    if ARGV[a + 10] ~= '' then
      eventState[#eventState + 1] = eventId
      eventState[#eventState + 1] = ARGV[a + 10]
    end
    pos = pos + 1
    timeline[#timeline + 1] = pos
    timeline[#timeline + 1] = eventId
    if ARGV[a + 14] ~= '' then
      stateRecord[#stateRecord + 1] = pos
      stateRecord[#stateRecord + 1] = eventId
    end
    if ARGV[a + 7] ~= '' then
      statuses[#statuses + 1] = eventId
      statuses[#statuses + 1] = ARGV[a + 7]
    else
      -- As SREM of the prevs then SADD of the event, event after event: the last of them wins.
      for _, p in ipairs(cjson.decode(ARGV[a + 5])) do
        extremAdded[p] = nil
        extremRemoved[p] = true
      end
      extremAdded[eventId] = true
      local depth = tonumber(ARGV[a + 6])
      if depth > roomDepth then roomDepth = depth end
      if ARGV[a + 2] ~= '' then
        redis.call('HSET', KEYS[2], ARGV[a + 2], eventId)
        if ARGV[a + 3] ~= '' then redis.call('HSET', KEYS[3], ARGV[a + 3], ARGV[a + 4]) end
      end
      if ARGV[a + 11] ~= '' then
        local cur = cjson.decode(ARGV[a + 11])
        for _, kv in ipairs(cur.set) do redis.call('HSET', KEYS[2], kv[1], kv[2]) end
        for _, f in ipairs(cur.del) do redis.call('HDEL', KEYS[2], f) end
        for _, m in ipairs(cur.mem) do
          if m[2] == '' then redis.call('HDEL', KEYS[3], m[1]) else redis.call('HSET', KEYS[3], m[1], m[2]) end
        end
        roomFields.state_group = cur.g
        if cur.reset then roomFields.state_reset = tostring(pos) end
      end
      if ARGV[a + 12] ~= '' then
        local prior = redis.call('HGET', KEYS[10], ARGV[a + 12])
        local entry = eventId .. ' ' .. ARGV[a + 13]
        if prior then entry = prior .. '\n' .. entry end
        redis.call('HSET', KEYS[10], ARGV[a + 12], entry)
      end
      if ARGV[a + 8] ~= '' then redis.call('XADD', KEYS[6], '*', 'e', eventId, 'd', ARGV[a + 8]) end
    end
  end
end
if #events > 0 then redis.call('MSET', unpack(events)) end
if #groups > 0 then redis.call('HSET', KEYS[8], unpack(groups)) end
if #eventState > 0 then redis.call('HSET', KEYS[9], unpack(eventState)) end
if #timeline > 0 then redis.call('ZADD', KEYS[5], unpack(timeline)) end
if #statuses > 0 then redis.call('HSET', KEYS[7], unpack(statuses)) end
if #stateRecord > 0 then redis.call('ZADD', stateEvents, unpack(stateRecord)) end
-- The record's first position: where it restarts (it did not reach this run's start) or where it
-- was, and never below the window (entries below it are trimmed).
local recordFrom = tonumber(head[3] or '0')
if head[2] ~= stream then recordFrom = tonumber(stream) + 1 end
local low = pos - tonumber(ARGV[8 + STRIDE * n])
if low >= recordFrom then
  redis.call('ZREMRANGEBYSCORE', stateEvents, '-inf', low)
  recordFrom = low + 1
end
local srem, sadd = {}, {}
for p in pairs(extremRemoved) do srem[#srem + 1] = p end
for e in pairs(extremAdded) do sadd[#sadd + 1] = e end
if #srem > 0 then redis.call('SREM', KEYS[4], unpack(srem)) end
if #sadd > 0 then redis.call('SADD', KEYS[4], unpack(sadd)) end
local room = { 'stream', tostring(pos), 'state_events_to', tostring(pos), 'state_events_from', tostring(recordFrom) }
if roomDepth > depthBefore then
  room[#room + 1] = 'depth'
  room[#room + 1] = tostring(roomDepth)
end
for f, v in pairs(roomFields) do
  room[#room + 1] = f
  room[#room + 1] = v
end
redis.call('HSET', KEYS[1], unpack(room))
if index then for i = 1, n do redis.call('HSET', index, ARGV[7 + STRIDE * (i - 1)], ARGV[1]) end end
releaseLease()
return results
