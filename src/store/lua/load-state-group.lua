-- A state group and its ancestors up to the nearest whole group, in one round trip
-- (room-store.ts loadStateGroup). A group's JSON names its parent as `p` (null on a whole group).
--
-- KEYS: 1 the room's state groups (redis-keys.ts stateGroups)
-- ARGV: 1 group ID, 2 the most groups to read (STATE_GROUP_DEPTH_CAP + 2)
-- Returns the groups' JSON, leaf first; stops early (the last entry missing) if a group is not
-- stored.
local out = {}
local id = ARGV[1]
for i = 1, tonumber(ARGV[2]) do
  local j = redis.call('HGET', KEYS[1], id)
  if not j then return out end
  out[#out + 1] = j
  local g = cjson.decode(j)
  if type(g.p) ~= 'string' then return out end
  id = g.p
end
return out
