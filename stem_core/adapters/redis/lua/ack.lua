-- ack.lua: settle a delivery for good.
--
-- KEYS: the queue's 18-key block (lib.lua).
-- ARGV: [1] band, [2] entry id, [3] token.
-- A stale token (the message was redelivered, requeued or removed) changes nothing.
-- The entry is acknowledged and deleted from its stream, so streams hold only live
-- messages and memory stays flat. Counts done.
-- Reply: 1 settled, 0 stale.

local lid = ARGV[1] .. ':' .. ARGV[2]
local rec = holding(0, lid, ARGV[3])
if not rec then return 0 end
drop_entry(0, tonumber(ARGV[1]), ARGV[2], rec.i)
redis.call('HINCRBY', KEYS[STATS], 'done', 1)
return 1
