-- dead.lua: move a delivery to the queue's dead letters.
--
-- KEYS: the settle keys of lib.lua, [1] .. [9] (the lid's stream ... deadbody).
-- ARGV: [1] lid, [2] token, [3] envelope id, [4] dead-letter JSON, [5] dead_at us,
--       [6] retention cutoff us, [7] batch.
-- One dead letter per envelope id: a second one replaces (and renews) the first. Then at
-- most ARGV[7] of the queue's oldest dead letters dead before ARGV[6] are deleted.
-- Reply: 1 settled, 0 stale.

local K = settle_keys(ARGV[1])
local rec = holding(K, ARGV[1], ARGV[2])
if not rec then return 0 end
drop_entry(K, ARGV[1], rec.i)
redis.call('ZADD', K.dead, ARGV[5], ARGV[3])
redis.call('HSET', K.deadbody, ARGV[3], ARGV[4])
local old = redis.call('ZRANGEBYSCORE', K.dead, '-inf', '(' .. ARGV[6], 'LIMIT', 0, tonumber(ARGV[7]))
for _, id in ipairs(old) do
  redis.call('ZREM', K.dead, id)
  redis.call('HDEL', K.deadbody, id)
end
return 1
