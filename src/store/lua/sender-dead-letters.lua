-- An operator's decision on a destination's dead letters (see sender-reject-txn.lua).
-- KEYS: 1 dead letters, 2 pdus, 3 status (the caller adds a replayed destination to the destinations set)
-- ARGV: 1 action ("replay": append each PDU to the tail of the queue again, where the next
--       transactions send it; "drop": forget them, counted as dropped_pdus)
-- Returns how many dead letters there were.
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
if #entries == 0 then return 0 end
if ARGV[1] == 'replay' then
  for _, e in ipairs(entries) do redis.call('RPUSH', KEYS[2], cjson.decode(e).ref) end
  redis.call('HINCRBY', KEYS[3], 'dead_letters_replayed', #entries)
else
  redis.call('HINCRBY', KEYS[3], 'dropped_pdus', #entries)
end
redis.call('DEL', KEYS[1])
return #entries
