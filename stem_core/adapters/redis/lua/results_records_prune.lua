-- results_records_prune.lua: delete a record kind's expired entries.
--
-- KEYS: [1] R:rec:<kind>  HASH key -> record JSON
--       [2] R:recx:<kind> ZSET key -> expiry (us), only records stored with a ttl
-- ARGV: [1] now (us).
-- A record put again meanwhile has a new expiry (or none) and is kept.
-- Reply: how many were deleted.

local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, key in ipairs(gone) do
  redis.call('HDEL', KEYS[1], key)
  redis.call('ZREM', KEYS[2], key)
end
return #gone
