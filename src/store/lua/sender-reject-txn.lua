-- A destination keeps rejecting the stored transaction (4xx other than 408/429): find the
-- offender. A transaction of several entries is split: it is abandoned (the destination did not
-- process it) and its entries are sent again, its EDUs alone first, then its PDUs one per
-- transaction (status isolate_edus / isolate_pdus, see sender-begin.lua). A transaction of one PDU
-- alone moves that PDU to the destination's dead-letter list, with the reason; one of EDUs alone
-- drops them (counted). The destination answered, so its failure count and backoff are cleared.
-- KEYS: 1 txn, 2 pdus, 3 edus, 4 status, 5 body, 6 dead letters
-- ARGV: 1 txn_id, 2 now, 3 reason, 4 HTTP status
-- Returns {result ("gone" | "split" | "dead" | "dropped"), pending PDUs, pending EDUs}.
if redis.call('HGET', KEYS[1], 'txn_id') ~= ARGV[1] then return {'gone', -1, -1} end
local np = tonumber(redis.call('HGET', KEYS[1], 'pdu_count') or '0')
local ne = tonumber(redis.call('HGET', KEYS[1], 'edu_count') or '0')
local result
if np == 1 and ne == 0 then
  local ref = redis.call('LPOP', KEYS[2])
  redis.call('RPUSH', KEYS[6], cjson.encode({ref = ref, reason = ARGV[3], status = tonumber(ARGV[4]), ts = tonumber(ARGV[2]), txn_id = ARGV[1]}))
  redis.call('HINCRBY', KEYS[4], 'dead_lettered', 1)
  local isoP = tonumber(redis.call('HGET', KEYS[4], 'isolate_pdus') or '0')
  if isoP > 1 then redis.call('HSET', KEYS[4], 'isolate_pdus', isoP - 1) else redis.call('HDEL', KEYS[4], 'isolate_pdus') end
  result = 'dead'
elseif np == 0 then
  if ne > 0 then redis.call('LTRIM', KEYS[3], ne, -1) end
  redis.call('HINCRBY', KEYS[4], 'dropped_batches', 1)
  redis.call('HINCRBY', KEYS[4], 'dropped_edus', ne)
  redis.call('HDEL', KEYS[4], 'isolate_edus')
  result = 'dropped'
else
  redis.call('HSET', KEYS[4], 'isolate_pdus', np)
  if ne > 0 then redis.call('HSET', KEYS[4], 'isolate_edus', ne) else redis.call('HDEL', KEYS[4], 'isolate_edus') end
  result = 'split'
end
redis.call('DEL', KEYS[1], KEYS[5])
redis.call('HSET', KEYS[4], 'failures', '0', 'backoff_until', '0', 'last_error', ARGV[3], 'last_error_ts', ARGV[2])
redis.call('HDEL', KEYS[4], 'failing_since')
return {result, redis.call('LLEN', KEYS[2]), redis.call('LLEN', KEYS[3])}
