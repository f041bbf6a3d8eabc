-- bc_close.lua: unsubscribe a group and trim what the others have read.
--
-- KEYS: [1] channel STREAM, [2] channel subs ZSET (see bc_open.lua).
-- ARGV: [1] group.
-- Reply: how many subscribers remain.

pcall(redis.call, 'XGROUP', 'DESTROY', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return bc_trim(KEYS[1], KEYS[2])
