-- live.lua: does a queue hold any message (any state, dead letters included)?
--
-- KEYS: the queue's 18-key block (lib.lua). ARGV: none.
-- Reply: 1 or 0.

for band = 0, 9 do
  if redis.call('XLEN', stream(0, band)) > 0 then return 1 end
end
if redis.call('ZCARD', KEYS[DELAYED]) > 0 or redis.call('ZCARD', KEYS[DEAD]) > 0 then return 1 end
return 0
