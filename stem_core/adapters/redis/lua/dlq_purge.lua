-- dlq_purge.lua: delete the oldest dead letters with dead_at >= a bound.
--
-- KEYS: the queue's 20-key block (lib.lua).
-- ARGV: [1] lower bound us ('-inf' for all), [2] how many at most.
-- Reply: how many were deleted.

local K = block(0)
local ids = redis.call('ZRANGEBYSCORE', K.dead, ARGV[1], '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZREM', K.dead, id)
  redis.call('HDEL', K.deadbody, id)
end
return #ids
