-- What a sender run needs to start (see OutboundStore.begin).
-- KEYS: 1 status, 2 txn, 3 pdus, 4 edus, 5 body; ARGV: 1 max PDUs, 2 max EDUs
-- Returns backoff_until, the txn hash (flat), the queue heads, the body.
-- With a stored transaction the "heads" are the entries it covers (its first pdu_count PDUs and
-- edu_count EDUs), from which its body is rebuilt, unless it was stored by an older version with
-- its body (the body key, or the hash's `body` field): then they are empty.
-- While the destination isolates the entries of a rejected transaction (status isolate_edus /
-- isolate_pdus, see sender-reject-txn.lua) the heads are its EDUs alone, then one PDU at a time.
local backoff = redis.call('HGET', KEYS[1], 'backoff_until') or '0'
local txn = redis.call('HGETALL', KEYS[2])
if #txn > 0 then
  local body = redis.call('GET', KEYS[5]) or ''
  if body ~= '' or redis.call('HEXISTS', KEYS[2], 'body') == 1 then return {backoff, txn, {}, {}, body} end
  local np = tonumber(redis.call('HGET', KEYS[2], 'pdu_count') or '0')
  local ne = tonumber(redis.call('HGET', KEYS[2], 'edu_count') or '0')
  local pdus, edus = {}, {}
  if np > 0 then pdus = redis.call('LRANGE', KEYS[3], 0, np - 1) end
  if ne > 0 then edus = redis.call('LRANGE', KEYS[4], 0, ne - 1) end
  return {backoff, txn, pdus, edus, ''}
end
local maxP, maxE = tonumber(ARGV[1]), tonumber(ARGV[2])
local isoE = tonumber(redis.call('HGET', KEYS[1], 'isolate_edus') or '0')
local isoP = tonumber(redis.call('HGET', KEYS[1], 'isolate_pdus') or '0')
if isoE > 0 and redis.call('LLEN', KEYS[4]) == 0 then redis.call('HDEL', KEYS[1], 'isolate_edus') isoE = 0 end
if isoP > 0 and redis.call('LLEN', KEYS[3]) == 0 then redis.call('HDEL', KEYS[1], 'isolate_pdus') isoP = 0 end
if isoE > 0 then maxP, maxE = 0, math.min(maxE, isoE) elseif isoP > 0 then maxP, maxE = 1, 0 end
local pdus, edus = {}, {}
if maxP > 0 then pdus = redis.call('LRANGE', KEYS[3], 0, maxP - 1) end
if maxE > 0 then edus = redis.call('LRANGE', KEYS[4], 0, maxE - 1) end
return {backoff, txn, pdus, edus, ''}
