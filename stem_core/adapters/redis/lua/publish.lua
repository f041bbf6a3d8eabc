-- publish.lua: append many messages to one queue (ready -> band stream, future -> delayed).
--
-- KEYS: the queue's 20-key block (lib.lua).
-- ARGV: [1] records, concatenated; each is "<due us>,<band>,<ready us>,<lease ms>,
--       <id bytes>,<json bytes>:" followed by the envelope id and the envelope JSON
--       (one argument instead of six per message keeps a batch cheap to send).
-- A message is delayed when its due time is after the server's clock (counted in enq;
-- ready ones are counted by the band streams' entries-added).
-- Reply: how many were stored.

local K = block(0)
local now = now_us()
local blob = ARGV[1]
local pos, n = 1, 0
while pos <= #blob do
  local colon = string.find(blob, ':', pos, true)
  local due, band, r, v, il, el = string.match(string.sub(blob, pos, colon - 1), '^(%d+),(%d),(%d+),(%d+),(%d+),(%d+)$')
  il, el = tonumber(il), tonumber(el)
  local i = string.sub(blob, colon + 1, colon + il)
  local e = string.sub(blob, colon + il + 1, colon + il + el)
  pos = colon + il + el + 1
  band = tonumber(band)
  if tonumber(due) > now then
    add_delayed(K, tonumber(due), band, e, r, i, '0', v)
    redis.call('HINCRBY', K.stats, 'enq', 1)
  else
    add_ready(K, band, e, r, v)
  end
  n = n + 1
end
return n
