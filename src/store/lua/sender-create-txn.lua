-- Stores a new transaction covering exactly the given queue heads (see OutboundStore.createTxn).
-- KEYS: 1 txn, 2 pdus, 3 edus, 4 txn counter, 5 scratch (holds the body), 6 body
-- ARGV: 1 txn id prefix, 2 created_ts, 3 pdu count, 4 edu count, 5 canonical ("1"/"0"),
--       6 attempted ("1": the caller sends it right away, counted as its first attempt at
--       created_ts, saving a separate markAttempt round trip), 7.. pdu refs then EDU JSON
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[5])
  return {'exists', redis.call('HGET', KEYS[1], 'txn_id')}
end
local np = tonumber(ARGV[3])
local ne = tonumber(ARGV[4])
if np > 0 then
  local head = redis.call('LRANGE', KEYS[2], 0, np - 1)
  if #head ~= np then redis.call('DEL', KEYS[5]) return {'stale', ''} end
  for i = 1, np do if head[i] ~= ARGV[6 + i] then redis.call('DEL', KEYS[5]) return {'stale', ''} end end
end
if ne > 0 then
  local head = redis.call('LRANGE', KEYS[3], 0, ne - 1)
  if #head ~= ne then redis.call('DEL', KEYS[5]) return {'stale', ''} end
  for i = 1, ne do if head[i] ~= ARGV[6 + np + i] then redis.call('DEL', KEYS[5]) return {'stale', ''} end end
end
if redis.call('EXISTS', KEYS[5]) == 0 then return {'nobody', ''} end
redis.call('RENAME', KEYS[5], KEYS[6])
redis.call('PERSIST', KEYS[6])
local txnId = ARGV[1] .. '_' .. redis.call('INCR', KEYS[4])
local attempts = '0'
if ARGV[6] == '1' then attempts = '1' end
redis.call('HSET', KEYS[1], 'txn_id', txnId, 'pdu_count', ARGV[3], 'edu_count', ARGV[4],
  'created_ts', ARGV[2], 'attempts', attempts, 'rejections', '0', 'canonical', ARGV[5])
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'last_attempt_ts', ARGV[2]) end
return {'created', txnId}
