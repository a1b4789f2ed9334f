-- Gives back a room's write lease (state-cache.ts SNAPSHOT_LUA) when its owner still holds it:
-- a planned run that ended without a write (every event refused or a duplicate, an error, or
-- the owner gave up). The persist script gives it back itself after a write.
--
-- KEYS: 1 the room's write lease (redis-keys.ts roomLock)
-- ARGV: 1 the owner
-- Returns 1 when it was released, 0 when another owner (or nobody) held it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
