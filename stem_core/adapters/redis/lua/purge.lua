-- purge.lua: delete up to `batch` pending and delayed messages (never leased ones).
--
-- KEYS: the queue's 20-key block (lib.lua).
-- ARGV: [1] batch.
-- Pending = undelivered entries of every band, leases already ended (expired, nacked,
-- requeued) and P:delayed; the caller repeats while a full batch was deleted, so Redis
-- is never blocked for long.
-- Reply: how many were deleted.

local K = block(0)
local batch = tonumber(ARGV[1])
local now = now_us()
local removed = 0
for band = 0, 9 do
  local s = K.s[band]
  if removed < batch and redis.call('EXISTS', s) == 1 then
    local last = last_delivered(s) or '0-0'
    for _, entry in ipairs(redis.call('XRANGE', s, '(' .. last, '+', 'COUNT', batch - removed)) do
      redis.call('XDEL', s, entry[1])
      removed = removed + 1
    end
  end
end
if removed < batch then
  for _, lid in ipairs(redis.call('ZRANGEBYSCORE', K.leases, '-inf', now, 'LIMIT', 0, batch - removed)) do
    local rec = lease_get(K, lid)
    drop_entry(K, lid, rec and rec.i or '')
    removed = removed + 1
  end
end
if removed < batch then
  for _, mid in ipairs(redis.call('ZRANGE', K.delayed, 0, batch - removed - 1)) do
    local body = redis.call('HGET', K.dly, mid)
    if body then
      local _, _, _, _, i, _ = cmsgpack.unpack(body)
      idx_del(K, i, 'd:' .. mid)
      redis.call('HDEL', K.dly, mid)
    end
    redis.call('ZREM', K.delayed, mid)
    removed = removed + 1
  end
end
return removed
