-- ack_with.lua: Broker.ack_with_status in one step when the result backend shares this
-- server: the final status first (results_lib.lua), then the ack (lib.lua ack_entry).
--
-- KEYS: [1..5] the settle keys of the lid (lib.lua settle_keys; what ack.lua takes),
--       [6..15] the backend's status_keys, then the keys the status record names.
-- ARGV: [1] lid, [2] token, [3] one status record, [4] updated ISO, [5] updated us,
--       [6] watch channel prefix.
-- Fencing as set_status then ack: a stale token still stores the status, acks nothing.
-- The two key sets carry different hash tags: standalone and Sentinel servers only.
-- Reply: {1, 1 acked or 0 stale}, or {0, old queue, old task} with nothing done when the
-- status moves to another queue/task index (the caller falls back to the two steps).

local R = status_keys(5)
local blocked = status_write_all(R, status_records(ARGV[3]), { iso = ARGV[4], us = ARGV[5], prefix = ARGV[6] })
if blocked then return blocked end
return { 1, ack_entry(settle_keys(ARGV[1]), ARGV[1], ARGV[2]) }
