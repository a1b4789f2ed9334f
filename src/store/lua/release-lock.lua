-- Gives back a lock its owner still holds: compare-and-delete. Used for a room's write lease
-- (lua/room-snapshot.lua takes it), when a planned run ended without a write (every event
-- refused or a duplicate, an error, or the owner gave up; the persist script gives it back
-- itself after a write), and for the sender's queue-layout lock (sender/shards.ts).
--
-- KEYS: 1 the lock (redis-keys.ts roomLock, or the layout lock)
-- ARGV: 1 the owner's token
-- Returns 1 when it was released, 0 when another owner (or nobody) held it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
