-- results_set_many.lua: overwrite many task statuses at once (set_statuses, and the
-- set_status calls of one event-loop turn), or none.
--
-- KEYS: [1..10] status_keys (results_lib.lua), then the keys the records name.
-- ARGV: [1] status records, [2] updated ISO, [3] updated us, [4] watch channel prefix.
-- Reply: {1, created_at of each record in order}, or {0, old queue, old task} with
-- nothing written when a status moves to another queue/task index (the caller then
-- writes them one by one).

local R = status_keys(0)
local blocked, created = status_write_all(R, status_records(ARGV[1]), { iso = ARGV[2], us = ARGV[3], prefix = ARGV[4] })
if blocked then return blocked end
local out = { 1 }
for k = 1, #created do out[k + 1] = created[k] end
return out
