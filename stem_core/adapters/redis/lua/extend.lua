-- extend.lua: move a lease deadline to now + ms, in place.
--
-- KEYS: [1] the lid's stream, [2] leases, [3] lease (lib.lua settle_keys).
-- ARGV: [1] lid, [2] token, [3] lease ms.
-- XCLAIM ... JUSTID resets the entry's idle time without counting a delivery; nothing
-- is re-published. A lease that expired but was not yet taken back is still held.
-- Reply: the new deadline (us), or -1 when the token no longer holds the message.

local lid = ARGV[1]
local K = settle_keys(lid)
if not holding(K, lid, ARGV[2]) then return -1 end
local band, lane, eid = lid_parts(lid)
local ok, got = pcall(redis.call, 'XCLAIM', lane_stream(K, band, lane), GROUP, READER, 0, eid, 'JUSTID')
if not ok or #got == 0 then return -1 end
local deadline = now_us() + tonumber(ARGV[3]) * 1000
redis.call('ZADD', K.leases, deadline, lid)
return deadline
