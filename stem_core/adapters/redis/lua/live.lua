-- live.lua: does a queue hold any message (any state, dead letters included)?
--
-- KEYS: the queue's 20-key block (lib.lua). ARGV: none.
-- Reply: 1 or 0.

local K = block(0)
for band = 0, 9 do
  if redis.call('XLEN', K.s[band]) > 0 then return 1 end
end
if redis.call('XLEN', K.p) > 0 or redis.call('ZCARD', K.delayed) > 0 or redis.call('ZCARD', K.dead) > 0 then return 1 end
return 0
