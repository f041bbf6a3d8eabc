-- remove.lua: delete messages by envelope id, in any live state (operator action).
--
-- KEYS: the queue's 18-key block (lib.lua).
-- ARGV: envelope ids.
-- A leased copy's holder is fenced: its lease record goes, so its ack is a no-op.
-- Reply: how many messages were removed.

local removed = 0
for _, id in ipairs(ARGV) do
  local cur = redis.call('HGET', KEYS[LOC], id)
  if cur then
    for loc in string.gmatch(cur, '%S+') do
      if string.sub(loc, 1, 1) == 's' then
        local band, eid = string.match(loc, '^s(%d):(.+)$')
        local s = stream(0, tonumber(band))
        pcall(redis.call, 'XACK', s, GROUP, eid)
        removed = removed + redis.call('XDEL', s, eid)
        redis.call('ZREM', KEYS[LEASES], band .. ':' .. eid)
        redis.call('HDEL', KEYS[LEASE], band .. ':' .. eid)
      else
        local mid = string.sub(loc, 3)
        removed = removed + redis.call('ZREM', KEYS[DELAYED], mid)
        redis.call('HDEL', KEYS[DLY], mid)
      end
    end
    redis.call('HDEL', KEYS[LOC], id)
  end
end
return removed
