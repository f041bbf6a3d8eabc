-- release.lua: hand back deliveries a cancelled consumer never received.
--
-- KEYS: the ten settle keys of lib.lua ([1] unused: the leases span streams).
-- ARGV: n x (lid, token).
-- Each still-held lease ends now (the next claim takes the entry back) and the
-- delivery that never reached anyone is not counted.
-- Reply: how many were released.

local K = settle_keys('0s:0-0')
local released = 0
for k = 1, #ARGV, 2 do
  local lid = ARGV[k]
  local rec = holding(K, lid, ARGV[k + 1])
  if rec then
    rec.c = math.max(0, rec.c - 1)
    lease_set(K, lid, rec)
    redis.call('ZADD', K.leases, 0, lid)
    released = released + 1
  end
end
if released > 0 then wake(K) end
return released
