-- release.lua: hand back deliveries a cancelled consumer never received.
--
-- KEYS: the queue's 18-key block (lib.lua).
-- ARGV: n x (band, entry id, token).
-- Each still-held lease ends now (the next claim takes the entry back) and the
-- delivery that never reached anyone is not counted.
-- Reply: how many were released.

local released = 0
for k = 1, #ARGV, 3 do
  local lid = ARGV[k] .. ':' .. ARGV[k + 1]
  local rec = holding(0, lid, ARGV[k + 2])
  if rec then
    rec.c = math.max(0, rec.c - 1)
    lease_set(0, lid, rec)
    redis.call('ZADD', KEYS[LEASES], 0, lid)
    released = released + 1
  end
end
return released
