-- Deletes a room alias only while it still names that room: createRoom (room-store.ts) claims
-- the alias first and gives it back when the room turns out to exist already.
--
-- KEYS: 1 the aliases hash (redis-keys.ts aliases)
-- ARGV: 1 alias, 2 room ID
-- Returns 1 when it was deleted, 0 when the alias names another room or none.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
