-- extend.lua: move a lease deadline to now + ms, in place.
--
-- KEYS: the queue's 18-key block (lib.lua).
-- ARGV: [1] band, [2] entry id, [3] token, [4] lease ms.
-- XCLAIM ... JUSTID resets the entry's idle time without counting a delivery; nothing
-- is re-published. A lease that expired but was not yet taken back is still held.
-- Reply: the new deadline (us), or -1 when the token no longer holds the message.

local band = tonumber(ARGV[1])
local lid = ARGV[1] .. ':' .. ARGV[2]
local rec = holding(0, lid, ARGV[3])
if not rec then return -1 end
local ok, got = pcall(redis.call, 'XCLAIM', stream(0, band), GROUP, READER, 0, ARGV[2], 'JUSTID')
if not ok or #got == 0 then return -1 end
local deadline = now_us() + tonumber(ARGV[4]) * 1000
redis.call('ZADD', KEYS[LEASES], deadline, lid)
return deadline
