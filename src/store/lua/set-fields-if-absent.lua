-- HSETs fields on a hash only if a guard field is not set yet, atomically, so that two writers
-- racing to record something (a room upgrade's replacement room) agree on the first
-- (room-store.ts setRoomFieldsIfAbsent).
--
-- KEYS: 1 the hash (redis-keys.ts room)
-- ARGV: 1 the guard field, 2.. field, value, field, value, … (the guard among them)
-- Returns 1 when this call wrote, 0 when the guard was already set.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
