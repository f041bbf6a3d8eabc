-- requeue.lua: make leased messages ready now and list delayed ones (operator action).
--
-- KEYS: the queue's 18-key block (lib.lua).
-- ARGV: envelope ids.
-- A leased copy gets a new token (its holder's receipt goes stale: a later ack or
-- nack is a no-op) and a lease that ends now, so the next claim takes it back.
-- Delayed copies are only listed: the caller rewrites their notBefore and moves them
-- with promote_now.lua (a script cannot safely re-encode arbitrary JSON).
-- Reply: {requeued, mid, envelope JSON, mid, envelope JSON, ...}.

local requeued = 0
local reply = { 0 }
for _, id in ipairs(ARGV) do
  local cur = redis.call('HGET', KEYS[LOC], id)
  if cur then
    for loc in string.gmatch(cur, '%S+') do
      if string.sub(loc, 1, 1) == 's' then
        local lid = string.sub(loc, 2)
        local rec = lease_get(0, lid)
        if rec then
          rec.t = redis.call('HINCRBY', KEYS[STATS], 'tok', 1)
          rec.h = ''
          lease_set(0, lid, rec)
          redis.call('ZADD', KEYS[LEASES], 0, lid)
          requeued = requeued + 1
        end
      else
        local mid = string.sub(loc, 3)
        local body = redis.call('HGET', KEYS[DLY], mid)
        if body then
          local _, _, _, _, _, e = cmsgpack.unpack(body)
          reply[#reply + 1] = mid
          reply[#reply + 1] = e
        end
      end
    end
  end
end
reply[1] = requeued
return reply
