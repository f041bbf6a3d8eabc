-- results_set.lua: overwrite one task status (results_lib.lua), keep its indexes, tell
-- watchers.
--
-- KEYS: [1..10] status_keys, then the keys the record names (R:s:<id>, R:q:<queue>,
--       R:t:<task>); after them R:q:<old queue> and R:t:<old task> when the caller was
--       told them (R:all for a label that does not move).
-- ARGV: [1] one status record, [2] updated ISO, [3] updated us, [4] watch channel
--       prefix, [5] old queue and [6] old task the caller passed the keys of (absent on
--       a first attempt).
-- Reply: {1, created_at, version}, or {0, old queue, old task} when the status moves to
-- another queue/task index whose key the caller must pass (it then calls again).

local R = status_keys(0)
local W = status_records(ARGV[1])[1]
local ox, oq, ot = status_old(R, W.id)
if status_blocked(oq, ot, W.q, W.t, ARGV[5], ARGV[6]) then return { 0, oq, ot } end
local created, version = status_write(R, W, { iso = ARGV[2], us = ARGV[3], prefix = ARGV[4] }, ox, oq, ot,
  KEYS[#KEYS - 1], KEYS[#KEYS])
return { 1, created, version }
