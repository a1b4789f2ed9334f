-- Counts an attempt of the stored transaction; -1 when txn_id is no longer the stored one.
-- KEYS: 1 txn; ARGV: 1 txn_id, 2 now
if redis.call('HGET', KEYS[1], 'txn_id') ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], 'last_attempt_ts', ARGV[2])
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
