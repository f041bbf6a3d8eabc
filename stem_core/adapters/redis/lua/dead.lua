-- dead.lua: move a delivery to the queue's dead letters.
--
-- KEYS: the queue's 18-key block (lib.lua).
-- ARGV: [1] band, [2] entry id, [3] token, [4] envelope id, [5] dead-letter JSON, [6] dead_at us.
-- One dead letter per envelope id: a second one replaces (and renews) the first.
-- Reply: 1 settled, 0 stale.

local lid = ARGV[1] .. ':' .. ARGV[2]
local rec = holding(0, lid, ARGV[3])
if not rec then return 0 end
drop_entry(0, tonumber(ARGV[1]), ARGV[2], rec.i)
redis.call('ZADD', KEYS[DEAD], ARGV[6], ARGV[4])
redis.call('HSET', KEYS[DEADBODY], ARGV[4], ARGV[5])
return 1
