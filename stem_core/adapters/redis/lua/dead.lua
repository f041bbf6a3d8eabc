-- dead.lua: move a delivery to the queue's dead letters.
--
-- KEYS: the nine settle keys of lib.lua (band stream ... deadbody).
-- ARGV: [1] band, [2] entry id, [3] token, [4] envelope id, [5] dead-letter JSON, [6] dead_at us.
-- One dead letter per envelope id: a second one replaces (and renews) the first.
-- Reply: 1 settled, 0 stale.

local band = tonumber(ARGV[1])
local K = settle_keys(band)
local rec = holding(K, ARGV[1] .. ':' .. ARGV[2], ARGV[3])
if not rec then return 0 end
drop_entry(K, band, ARGV[2], rec.i)
redis.call('ZADD', K.dead, ARGV[6], ARGV[4])
redis.call('HSET', K.deadbody, ARGV[4], ARGV[5])
return 1
