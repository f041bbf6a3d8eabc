-- remove_scan.lua: delete undelivered entries of given envelope ids, one chunk of one band.
--
-- KEYS: the queue's 20-key block (lib.lua).
-- ARGV: [1] band, [2] cursor (entry id to continue after, '' = from the first
--       undelivered entry), [3] chunk size, [4..] envelope ids.
-- Undelivered entries are not indexed (publishing stays one XADD), so removing them
-- walks the band; the caller repeats with the returned cursor, a bounded chunk at a
-- time, so Redis is never blocked for long.
-- Reply: {removed, next cursor ('' = this band is done)}.

local K = block(0)
local s = K.s[tonumber(ARGV[1])]
if redis.call('EXISTS', s) == 0 then return { 0, '' } end
local after = ARGV[2]
if after == '' then after = last_delivered(s) or '0-0' end
local wanted = {}
for k = 4, #ARGV do wanted[ARGV[k]] = true end
local entries = redis.call('XRANGE', s, '(' .. after, '+', 'COUNT', tonumber(ARGV[3]))
local removed = 0
for _, entry in ipairs(entries) do
  if wanted[envelope_id(field(entry[2], 'e'), '')] then
    removed = removed + redis.call('XDEL', s, entry[1])
  end
end
if #entries < tonumber(ARGV[3]) then return { removed, '' } end
return { removed, entries[#entries][1] }
