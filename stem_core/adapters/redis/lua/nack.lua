-- nack.lua: give a delivery back (as a new entry, attempt + 1) or drop it.
--
-- KEYS: [1] band stream, [2] leases, [3] lease, [4] idx, [5] stats, [6] delayed, [7] dly
--       (lib.lua settle_keys).
-- ARGV: [1] band, [2] entry id, [3] token, [4] requeue 1/0, [5] new envelope JSON,
--       [6] ready time us, [7] due time us (0 = now), [8] lease ms or 0.
-- The delivery count travels with the message (field d of the new entry).
-- Reply: 1 settled, 0 stale.

local band = tonumber(ARGV[1])
local K = settle_keys(band)
local rec = holding(K, ARGV[1] .. ':' .. ARGV[2], ARGV[3])
if not rec then return 0 end
drop_entry(K, band, ARGV[2], rec.i)
if ARGV[4] == '1' then
  place(K, now_us(), tonumber(ARGV[7]), band, ARGV[5], ARGV[6], rec.i, int(rec.c), ARGV[8], false)
end
return 1
