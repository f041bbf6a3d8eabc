-- purge.lua: delete up to `batch` pending and delayed messages (never leased ones).
--
-- KEYS: the queue's 18-key block (lib.lua).
-- ARGV: [1] batch.
-- Pending = undelivered entries of every band plus leases already expired; the caller
-- repeats while a full batch was deleted, so Redis is never blocked for long.
-- Reply: how many were deleted.

local batch = tonumber(ARGV[1])
local now = now_us()
local removed = 0
for band = 0, 9 do
  local s = stream(0, band)
  if removed < batch and redis.call('EXISTS', s) == 1 then
    local last = last_delivered(s) or '0-0'
    for _, entry in ipairs(redis.call('XRANGE', s, '(' .. last, '+', 'COUNT', batch - removed)) do
      redis.call('XDEL', s, entry[1])
      loc_del(0, field(entry[2], 'i') or entry[1], 's' .. band .. ':' .. entry[1])
      removed = removed + 1
    end
  end
end
if removed < batch then
  for _, lid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[LEASES], '-inf', now, 'LIMIT', 0, batch - removed)) do
    local band, eid = string.match(lid, '^(%d):(.+)$')
    local rec = lease_get(0, lid)
    drop_entry(0, tonumber(band), eid, rec and rec.i or eid)
    removed = removed + 1
  end
end
if removed < batch then
  for _, mid in ipairs(redis.call('ZRANGE', KEYS[DELAYED], 0, batch - removed - 1)) do
    local body = redis.call('HGET', KEYS[DLY], mid)
    if body then
      local _, _, _, _, i, _ = cmsgpack.unpack(body)
      loc_del(0, i, 'd:' .. mid)
      redis.call('HDEL', KEYS[DLY], mid)
    end
    redis.call('ZREM', KEYS[DELAYED], mid)
    removed = removed + 1
  end
end
return removed
