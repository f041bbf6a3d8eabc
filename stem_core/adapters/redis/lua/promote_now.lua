-- promote_now.lua: make listed delayed messages due now, with a new body.
--
-- KEYS: the queue's 20-key block (lib.lua).
-- ARGV: n x (mid, new envelope JSON, ready time us).
-- A mid that is no longer delayed (taken, removed) is skipped.
-- Reply: how many changed.

local K = block(0)
local moved = 0
for k = 1, #ARGV, 3 do
  local mid = ARGV[k]
  local body = redis.call('HGET', K.dly, mid)
  if body and redis.call('ZSCORE', K.delayed, mid) then
    local band, d, v, _, i, _ = cmsgpack.unpack(body)
    redis.call('HSET', K.dly, mid, cmsgpack.pack(band, d, v, ARGV[k + 2], i, ARGV[k + 1]))
    redis.call('ZADD', K.delayed, ARGV[k + 2], mid)
    moved = moved + 1
  end
end
if moved > 0 then wake(K) end
return moved
