-- bc_publish.lua: give every current subscriber of a channel its copy.
--
-- KEYS: [1] channel STREAM, [2] channel subs ZSET (see bc_open.lua).
-- ARGV: [1] envelope JSON, [2] stale ms (a subscriber silent this long is gone),
--       [3] backlog cap (entries kept for a subscriber that stopped reading).
-- Groups of vanished subscribers are destroyed; entries every remaining group has
-- read are trimmed (XTRIM MINID), so the stream holds only unread broadcasts.
-- Reply: how many subscribers get the copy (0: nobody listens, nothing is stored).

local now_ms = math.floor(now_us() / 1000)
for _, g in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms - tonumber(ARGV[2]))) do
  pcall(redis.call, 'XGROUP', 'DESTROY', KEYS[1], g)
  redis.call('ZREM', KEYS[2], g)
end
local n = bc_trim(KEYS[1], KEYS[2])
if n == 0 then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', tonumber(ARGV[3]), '*', 'e', ARGV[1])
return n
