-- Removes the transaction's entries from the head of the lists and clears it.
-- KEYS: 1 txn, 2 pdus, 3 edus, 4 status, 5 body
-- ARGV: 1 txn_id, 2 now, 3 mode ("sent" | "dropped"), 4 per-PDU errors in the response,
--       5 / 6 max PDUs / EDUs of the next transaction: the new queue heads are returned too
--       (what begin would read next, saving that round trip; "0" = not wanted)
if redis.call('HGET', KEYS[1], 'txn_id') ~= ARGV[1] then return {-1, -1, -1, {}, {}} end
local np = tonumber(redis.call('HGET', KEYS[1], 'pdu_count') or '0')
local ne = tonumber(redis.call('HGET', KEYS[1], 'edu_count') or '0')
if np > 0 then redis.call('LTRIM', KEYS[2], np, -1) end
if ne > 0 then redis.call('LTRIM', KEYS[3], ne, -1) end
redis.call('DEL', KEYS[1], KEYS[5])
if ARGV[3] == 'sent' then
  redis.call('HSET', KEYS[4], 'last_success_ts', ARGV[2], 'failures', '0', 'backoff_until', '0', 'last_txn_id', ARGV[1])
  redis.call('HDEL', KEYS[4], 'failing_since')
  redis.call('HINCRBY', KEYS[4], 'txns_sent', 1)
  redis.call('HINCRBY', KEYS[4], 'pdus_sent', np)
  redis.call('HINCRBY', KEYS[4], 'edus_sent', ne)
  redis.call('HINCRBY', KEYS[4], 'pdu_errors', tonumber(ARGV[4]))
else
  redis.call('HINCRBY', KEYS[4], 'dropped_batches', 1)
  redis.call('HINCRBY', KEYS[4], 'dropped_pdus', np)
  redis.call('HINCRBY', KEYS[4], 'dropped_edus', ne)
end
local maxP = tonumber(ARGV[5] or '0')
local maxE = tonumber(ARGV[6] or '0')
return {redis.call('LLEN', KEYS[2]), redis.call('LLEN', KEYS[3]), np,
  maxP > 0 and redis.call('LRANGE', KEYS[2], 0, maxP - 1) or {},
  maxE > 0 and redis.call('LRANGE', KEYS[3], 0, maxE - 1) or {}}
