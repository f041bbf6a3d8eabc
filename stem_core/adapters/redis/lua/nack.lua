-- nack.lua: give a delivery back (attempt + 1, in its place or after a delay) or drop it.
--
-- KEYS: the ten settle keys of lib.lua (the lid's stream ... w).
-- ARGV: [1] lid, [2] token, [3] requeue 1/0, [4] new envelope JSON, [5] ready time us,
--       [6] due time us (0 = now), [7] lease ms or 0.
-- Requeued now: the entry stays in the PEL with a lease that has already ended and the
-- new envelope in its lease record, so it keeps its rank (priority, then its original
-- ready time) and the next claim takes it back like an expired lease. Requeued later:
-- the entry goes and P:delayed carries the message (and its delivery count) on. Either
-- way the old receipt is fenced.
-- Reply: 1 settled, 0 stale.

local lid = ARGV[1]
local K = settle_keys(lid)
local rec = holding(K, lid, ARGV[2])
if not rec then return 0 end
local now = now_us()
local band = lid_parts(lid)
if ARGV[3] == '1' and tonumber(ARGV[6]) <= now then
  rec.t = redis.call('HINCRBY', K.stats, 'tok', 1)
  rec.h = ''
  rec.o = ARGV[4]
  lease_set(K, lid, rec)
  redis.call('ZADD', K.leases, 0, lid)
  wake(K)
  return 1
end
drop_entry(K, lid, rec.i)
if ARGV[3] == '1' then
  add_delayed(K, tonumber(ARGV[6]), band, ARGV[4], ARGV[5], rec.i, int(rec.c), ARGV[7])
end
return 1
