-- publish.lua: append messages to one queue (ready -> band stream, future -> delayed).
--
-- KEYS: the queue's 18-key block (lib.lua).
-- ARGV: [1] n, then n x (due us or 0, band, envelope JSON, ready time us, envelope id, lease ms or 0).
-- A message is delayed when its due time is after the server's clock. Counts enq.
-- Reply: n.

local now = now_us()
local n = tonumber(ARGV[1])
for k = 0, n - 1 do
  local a = 2 + k * 6
  place(0, now, tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], '0', ARGV[a + 5])
end
redis.call('HINCRBY', KEYS[STATS], 'enq', n)
return n
