-- extend.lua: move a lease deadline to now + ms, in place.
--
-- KEYS: [1] band stream, [2] leases, [3] lease (lib.lua settle_keys).
-- ARGV: [1] band, [2] entry id, [3] token, [4] lease ms.
-- XCLAIM ... JUSTID resets the entry's idle time without counting a delivery; nothing
-- is re-published. A lease that expired but was not yet taken back is still held.
-- Reply: the new deadline (us), or -1 when the token no longer holds the message.

local band = tonumber(ARGV[1])
local K = settle_keys(band)
local lid = ARGV[1] .. ':' .. ARGV[2]
if not holding(K, lid, ARGV[3]) then return -1 end
local ok, got = pcall(redis.call, 'XCLAIM', K.s[band], GROUP, READER, 0, ARGV[2], 'JUSTID')
if not ok or #got == 0 then return -1 end
local deadline = now_us() + tonumber(ARGV[4]) * 1000
redis.call('ZADD', K.leases, deadline, lid)
return deadline
