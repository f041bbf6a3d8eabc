-- publish1.lua: the hot path: one ready message appended to its band's stream.
--
-- KEYS: [1] P:s<band> (the message's band stream), [2] P:stats (lib.lua).
-- ARGV: [1] envelope JSON, [2] ready time us, [3] lease ms ('' or '0' = broker default).
-- The group is created by the first claim. Counts enq.
-- Reply: the entry id.

local args = { KEYS[1], '*', 'e', ARGV[1], 'r', ARGV[2] }
if ARGV[3] ~= '' and ARGV[3] ~= '0' then args[7] = 'v'; args[8] = ARGV[3] end
local eid = redis.call('XADD', unpack(args))
redis.call('HINCRBY', KEYS[2], 'enq', 1)
return eid
