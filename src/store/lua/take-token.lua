-- A token bucket (http/rate-limit.ts): refill by the time elapsed since the last take, then take
-- one token or report how long until one is available. The hash expires once it would be full.
--
-- KEYS: 1 the bucket (redis-keys.ts rateLimit): a hash of tokens and ts
-- ARGV: 1 tokens added per millisecond, 2 burst (the bucket's size), 3 now (ms)
-- Returns 0 when a token was taken, else the milliseconds until one is available.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + (now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
return wait
