-- Queues an event of a room Gatehouse does not host (an invite from another server) for
-- application services: keeps its JSON where the sender reads queued events, then appends the
-- reference to each destination's queue, all or nothing.
-- KEYS: 1 event JSON, 2 destinations set, 3.. each destination's PDU list
-- ARGV: 1 event JSON, 2 reference "roomId eventId", 3.. destination names (same order as KEYS 3..)
redis.call('SET', KEYS[1], ARGV[1])
for i = 3, #KEYS do
  redis.call('RPUSH', KEYS[i], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[i])
end
return #KEYS - 2
