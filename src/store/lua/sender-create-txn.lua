-- Stores a new transaction covering exactly the given queue heads (see OutboundStore.createTxn).
-- Its body is not stored: it is rebuilt from these entries and created_ts when the transaction
-- is re-sent, and checked against the stored digest (per-destination.ts).
-- KEYS: 1 txn, 2 pdus, 3 edus, 4 txn counter, 5 body (an older version's stored body: deleted
--       when a transaction is replaced)
-- ARGV: 1 txn id prefix, 2 created_ts, 3 pdu count, 4 edu count, 5 digest of the body,
--       6 attempted ("1": the caller sends it right away, counted as its first attempt at
--       created_ts, saving a separate markAttempt round trip), 7 replaces ("": a new
--       transaction; else the txn_id of the stored transaction this one replaces, covering the
--       same entries, because that one's body could not be rebuilt byte for byte),
--       8.. pdu refs then EDU JSON
if redis.call('EXISTS', KEYS[1]) == 1 then
  local current = redis.call('HGET', KEYS[1], 'txn_id')
  if ARGV[7] == '' or current ~= ARGV[7] then return {'exists', current or ''} end
  if tonumber(redis.call('HGET', KEYS[1], 'pdu_count') or '0') ~= tonumber(ARGV[3])
    or tonumber(redis.call('HGET', KEYS[1], 'edu_count') or '0') ~= tonumber(ARGV[4]) then return {'stale', ''} end
elseif ARGV[7] ~= '' then
  return {'stale', ''}
end
local np = tonumber(ARGV[3])
local ne = tonumber(ARGV[4])
if np > 0 then
  local head = redis.call('LRANGE', KEYS[2], 0, np - 1)
  if #head ~= np then return {'stale', ''} end
  for i = 1, np do if head[i] ~= ARGV[7 + i] then return {'stale', ''} end end
end
if ne > 0 then
  local head = redis.call('LRANGE', KEYS[3], 0, ne - 1)
  if #head ~= ne then return {'stale', ''} end
  for i = 1, ne do if head[i] ~= ARGV[7 + np + i] then return {'stale', ''} end end
end
if ARGV[7] ~= '' then redis.call('DEL', KEYS[1], KEYS[5]) end
local txnId = ARGV[1] .. '_' .. redis.call('INCR', KEYS[4])
local attempts = '0'
if ARGV[6] == '1' then attempts = '1' end
redis.call('HSET', KEYS[1], 'txn_id', txnId, 'pdu_count', ARGV[3], 'edu_count', ARGV[4],
  'created_ts', ARGV[2], 'attempts', attempts, 'rejections', '0', 'canonical', '1', 'digest', ARGV[5])
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'last_attempt_ts', ARGV[2]) end
return {'created', txnId}
