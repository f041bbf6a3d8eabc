-- The schedule store's compare-and-set (docs/schedules.md).
-- KEYS[1] sched (id -> document JSON), KEYS[2] schedv (id -> version)
-- ARGV[1] id, ARGV[2] the version read ("" = only when absent), ARGV[3] document JSON
-- Returns the new version, or nil when another writer came first.
local current = redis.call('HGET', KEYS[2], ARGV[1])
if ARGV[2] == '' then
  if current then return nil end
elseif current ~= ARGV[2] then
  return nil
end
local version = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return version
