-- results_records_prune.lua: delete a record kind's expired entries, a bounded batch.
--
-- KEYS: [1] R:rec:<kind>  HASH key -> record JSON
--       [2] R:recx:<kind> ZSET key -> expiry (us), only records stored with a ttl
--       [3] R:recw:<kind> ZSET key -> when it was last put (us)
-- ARGV: [1] now (us), [2] at most this many.
-- A record put again meanwhile has a new expiry (or none) and is kept.
-- Reply: how many were deleted.

local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, key in ipairs(gone) do
  redis.call('HDEL', KEYS[1], key)
  redis.call('ZREM', KEYS[2], key)
  redis.call('ZREM', KEYS[3], key)
end
return #gone
