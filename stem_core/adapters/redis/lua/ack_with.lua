-- ack_with.lua: Broker.ack_with_status in one step when the result backend shares this
-- server, for every settle of one event-loop turn: the final statuses first
-- (results_lib.lua), in call order, then each fenced ack (lib.lua ack_entry), in order.
--
-- KEYS: [1..10] the backend's status_keys, then the five settle keys (lib.lua
--       settle_keys; what ack.lua takes) of each distinct (queue, lid prefix) the acks
--       touch, then the keys the status records name.
-- ARGV: [1] status records (one per ack), [2] updated ISO, [3] updated us, [4] watch
--       channel prefix, then per ack: the KEYS position before its settle keys, lid,
--       token.
-- Fencing as set_status then ack: a stale token still stores the status, acks nothing.
-- One atomic script: writing every status before the acks leaves what set_status then
-- ack per call would (an ack never reads a status, nor a status write a lease). The key
-- sets carry different hash tags: standalone and Sentinel servers only.
-- Reply: {1, then 1 acked or 0 stale per ack}, or {0, old queue, old task} with nothing
-- done when a status moves to another queue/task index (the callers fall back to the
-- two steps).

local R = status_keys(0)
local blocked = status_write_all(R, status_records(ARGV[1]), { iso = ARGV[2], us = ARGV[3], prefix = ARGV[4] })
if blocked then return blocked end
local out = { 1 }
for a = 5, #ARGV, 3 do
  local lid = ARGV[a + 1]
  out[#out + 1] = ack_entry(settle_keys(lid, tonumber(ARGV[a])), lid, ARGV[a + 2])
end
return out
