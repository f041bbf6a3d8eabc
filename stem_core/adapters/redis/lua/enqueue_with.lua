-- enqueue_with.lua: Broker.enqueue in one step when the result backend shares this
-- server: the queued statuses first (results_lib.lua), then the messages (lib.lua
-- publish_records), all or nothing.
--
-- KEYS: [1] the namespace's queue registry, [2..11] the backend's status_keys, then one
--       20-key block per queue (lib.lua), then the keys the status records name.
-- ARGV: [1] number of queues, [2] status records, [3] updated ISO, [4] updated us,
--       [5] watch channel prefix, then per queue its name ('' when the caller knows it
--       is registered already) and its publish.lua records.
-- The two key sets carry different hash tags (queue and result namespace): standalone
-- and Sentinel servers only, like multi-queue claims (broker.py).
-- Reply: {1, messages stored}, or {0, old queue, old task} with nothing done when a
-- status moves to another queue/task index (the caller falls back to the two steps).

local nq = tonumber(ARGV[1])
local R = status_keys(1)
local blocked = status_write_all(R, status_records(ARGV[2]), { iso = ARGV[3], us = ARGV[4], prefix = ARGV[5] })
if blocked then return blocked end
local n = 0
for q = 0, nq - 1 do
  if ARGV[6 + 2 * q] ~= '' then redis.call('SADD', KEYS[1], ARGV[6 + 2 * q]) end
  n = n + publish_records(block(11 + q * BLOCK), ARGV[7 + 2 * q])
end
return { 1, n }
