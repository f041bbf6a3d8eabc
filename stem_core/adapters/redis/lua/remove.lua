-- remove.lua: delete the delayed and leased copies of messages (operator action).
--
-- KEYS: the queue's 20-key block (lib.lua).
-- ARGV: envelope ids.
-- A leased copy's holder is fenced: its lease record goes, so its ack is a no-op.
-- Undelivered copies are not indexed; remove_scan.lua deletes those.
-- Reply: how many copies were removed.

local K = block(0)
local removed = 0
for _, id in ipairs(ARGV) do
  local cur = redis.call('HGET', K.idx, id)
  if cur then
    for ref in string.gmatch(cur, '%S+') do
      local kind, key = string.sub(ref, 1, 1), string.sub(ref, 3)
      if kind == 'l' then
        local band, lane, eid = lid_parts(key)
        local s = lane_stream(K, band, lane)
        pcall(redis.call, 'XACK', s, GROUP, eid)
        removed = removed + redis.call('XDEL', s, eid)
        redis.call('ZREM', K.leases, key)
        redis.call('HDEL', K.lease, key)
      else
        removed = removed + redis.call('ZREM', K.delayed, key)
        redis.call('HDEL', K.dly, key)
      end
    end
    redis.call('HDEL', K.idx, id)
  end
end
return removed
