-- requeue.lua: make leased messages ready now and list delayed ones (operator action).
--
-- KEYS: the queue's 20-key block (lib.lua).
-- ARGV: envelope ids.
-- A leased copy gets a new token (its holder's receipt goes stale: a later ack or
-- nack is a no-op) and a lease that ends now, so the next claim takes it back.
-- Delayed copies are only listed: the caller rewrites their notBefore and makes them
-- due with promote_now.lua (a script cannot safely re-encode arbitrary JSON).
-- Reply: {requeued, mid, envelope JSON, mid, envelope JSON, ...}.

local K = block(0)
local reply = { 0 }
for _, id in ipairs(ARGV) do
  local cur = redis.call('HGET', K.idx, id)
  if cur then
    for ref in string.gmatch(cur, '%S+') do
      local kind, key = string.sub(ref, 1, 1), string.sub(ref, 3)
      if kind == 'l' then
        local rec = lease_get(K, key)
        if rec then
          rec.t = redis.call('HINCRBY', K.stats, 'tok', 1)
          rec.h = ''
          lease_set(K, key, rec)
          redis.call('ZADD', K.leases, 0, key)
          reply[1] = reply[1] + 1
        end
      else
        local body = redis.call('HGET', K.dly, key)
        if body then
          local _, _, _, _, _, e = cmsgpack.unpack(body)
          reply[#reply + 1] = key
          reply[#reply + 1] = e
        end
      end
    end
  end
end
if reply[1] > 0 then wake(K) end
return reply
