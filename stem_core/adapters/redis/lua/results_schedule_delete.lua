-- Delete a schedule (only at the given version unless ARGV[2] is "").
-- KEYS[1] sched, KEYS[2] schedv; ARGV[1] id, ARGV[2] version or ""
-- Returns 1 when deleted, 0 otherwise.
local current = redis.call('HGET', KEYS[2], ARGV[1])
if not current or (ARGV[2] ~= '' and current ~= ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
