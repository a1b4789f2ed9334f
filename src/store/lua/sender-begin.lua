-- What a sender run needs to start (see OutboundStore.begin).
-- KEYS: 1 status, 2 txn, 3 pdus, 4 edus, 5 body; ARGV: 1 max PDUs, 2 max EDUs
-- Returns backoff_until, the txn hash (flat), the queue heads (only without a txn), the body.
local backoff = redis.call('HGET', KEYS[1], 'backoff_until') or '0'
local txn = redis.call('HGETALL', KEYS[2])
if #txn > 0 then return {backoff, txn, {}, {}, redis.call('GET', KEYS[5]) or ''} end
return {backoff, txn, redis.call('LRANGE', KEYS[3], 0, tonumber(ARGV[1]) - 1), redis.call('LRANGE', KEYS[4], 0, tonumber(ARGV[2]) - 1), ''}
