-- promote_now.lua: move listed delayed messages to their streams now, with a new body.
--
-- KEYS: the queue's 18-key block (lib.lua).
-- ARGV: n x (mid, new envelope JSON, ready time us).
-- A mid that is no longer delayed (promoted, removed) is skipped.
-- Reply: how many moved.

local K = block(0)
local moved = 0
for k = 1, #ARGV, 3 do
  local mid = ARGV[k]
  local body = redis.call('HGET', K.dly, mid)
  if body and redis.call('ZREM', K.delayed, mid) == 1 then
    redis.call('HDEL', K.dly, mid)
    local band, d, v, _, i, _ = cmsgpack.unpack(body)
    idx_del(K, i, 'd:' .. mid)
    add_ready(K, band, ARGV[k + 1], ARGV[k + 2], d, v)
    redis.call('HINCRBY', K.stats, 'readd', 1)
    moved = moved + 1
  end
end
return moved
