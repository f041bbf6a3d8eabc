-- results_audit_append.lua: append one audit record, keep the newest ARGV[2], and drop
-- at most ARGV[4] of the oldest whose "at" is before the cutoff (retention).
--
-- KEYS: [1] R:audit  LIST of record JSON, newest first
-- ARGV: [1] record JSON, [2] max entries, [3] cutoff (UTC ISO text, compared as text:
--       the records' "at" has the same form), [4] batch.
-- A record without a text "at" ends the pruning (it is kept, and so is everything newer).
-- Reply: how many were pruned by age.

redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
local tail = redis.call('LRANGE', KEYS[1], -tonumber(ARGV[4]), -1)
local n = 0
for i = #tail, 1, -1 do
  local ok, rec = pcall(cjson.decode, tail[i])
  local at = ok and type(rec) == 'table' and rec['at'] or nil
  if type(at) ~= 'string' or at >= ARGV[3] then break end
  n = n + 1
end
if n > 0 then redis.call('LTRIM', KEYS[1], 0, -(n + 1)) end
return n
