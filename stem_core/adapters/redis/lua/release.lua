-- release.lua: hand back deliveries a cancelled consumer never received.
--
-- KEYS: [1] unused (a band stream), [2] leases, [3] lease (lib.lua settle_keys).
-- ARGV: n x (band, entry id, token).
-- Each still-held lease ends now (the next claim takes the entry back) and the
-- delivery that never reached anyone is not counted.
-- Reply: how many were released.

local K = settle_keys(0)
local released = 0
for k = 1, #ARGV, 3 do
  local lid = ARGV[k] .. ':' .. ARGV[k + 1]
  local rec = holding(K, lid, ARGV[k + 2])
  if rec then
    rec.c = math.max(0, rec.c - 1)
    lease_set(K, lid, rec)
    redis.call('ZADD', K.leases, 0, lid)
    released = released + 1
  end
end
return released
