-- nack.lua: give a delivery back (as a new entry, attempt + 1) or drop it.
--
-- KEYS: the queue's 18-key block (lib.lua).
-- ARGV: [1] band, [2] entry id, [3] token, [4] requeue 1/0, [5] new envelope JSON,
--       [6] ready time us, [7] due time us (0 = now), [8] lease ms or 0.
-- The delivery count travels with the message (field d of the new entry).
-- Reply: 1 settled, 0 stale.

local band = tonumber(ARGV[1])
local lid = ARGV[1] .. ':' .. ARGV[2]
local rec = holding(0, lid, ARGV[3])
if not rec then return 0 end
drop_entry(0, band, ARGV[2], rec.i)
if ARGV[4] == '1' then
  place(0, now_us(), tonumber(ARGV[7]), band, ARGV[5], ARGV[6], rec.i, int(rec.c), ARGV[8])
end
return 1
