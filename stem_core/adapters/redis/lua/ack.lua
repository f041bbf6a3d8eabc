-- ack.lua: settle a delivery for good (lib.lua ack_entry).
--
-- KEYS: [1] the lid's stream, [2] leases, [3] lease, [4] idx, [5] stats (lib.lua settle_keys).
-- ARGV: [1] lid, [2] token.
-- A stale token (the message was redelivered, requeued or removed) changes nothing.
-- The entry is acknowledged and deleted from its stream, so streams hold only live
-- messages and memory stays flat. Counts done.
-- Reply: 1 settled, 0 stale.

return ack_entry(settle_keys(ARGV[1]), ARGV[1], ARGV[2])
