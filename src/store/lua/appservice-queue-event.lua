-- Queues an event of a room Gatehouse does not host (an invite from another server) for
-- application services: keeps its JSON where the sender reads queued events and records the
-- fan-out in the room's outbox (fields e = event ID, d = destinations), all or nothing, in the
-- room's slot only; the fan-out stage (store/fanout.ts) then moves it to each destination's queue.
-- KEYS: (all in the room's slot) 1 event JSON, 2 the room's outbox (STREAM)
-- ARGV: 1 event JSON, 2 event ID, 3 destinations, space-separated
redis.call('SET', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], '*', 'e', ARGV[2], 'd', ARGV[3])
return 1
