-- replay.lua: move dead letters back onto the queue (compare-and-move).
--
-- KEYS: the queue's 20-key block (lib.lua).
-- ARGV: [1] n, then n x (envelope id, dead-letter JSON as read, new envelope JSON,
--       ready time us, due us or 0, band, lease ms or 0).
-- A dead letter that changed since the caller read it (replayed or replaced by
-- someone else) is skipped. A replayed message joins P:delayed, due at its ready time
-- (or later, with a delay), so it ranks by its original age. A replay counts as an
-- enqueue.
-- Reply: the envelope ids that moved.

local K = block(0)
local moved = {}
local n = tonumber(ARGV[1])
for k = 0, n - 1 do
  local a = 2 + k * 7
  local id = ARGV[a]
  if redis.call('HGET', K.deadbody, id) == ARGV[a + 1] then
    redis.call('ZREM', K.dead, id)
    redis.call('HDEL', K.deadbody, id)
    local due = tonumber(ARGV[a + 4])
    if due == 0 then due = tonumber(ARGV[a + 3]) end
    add_delayed(K, due, tonumber(ARGV[a + 5]), ARGV[a + 2], ARGV[a + 3], id, '0', ARGV[a + 6])
    redis.call('HINCRBY', K.stats, 'enq', 1)
    moved[#moved + 1] = id
  end
end
if #moved > 0 then wake(K) end
return moved
