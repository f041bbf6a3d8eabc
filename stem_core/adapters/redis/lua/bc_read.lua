-- bc_read.lua: the broadcasts a subscription has not seen yet (no acknowledgement needed).
--
-- KEYS: [1] channel STREAM, [2] channel subs ZSET (see bc_open.lua).
-- ARGV: [1] group, [2] count, [3] touch 1/0 (record that the subscriber is alive).
-- Reply: {status, id, envelope JSON, id, envelope JSON, ...}; status 0 = the group is
-- gone (reaped or the server lost it): the caller subscribes again.

if ARGV[3] == '1' then redis.call('ZADD', KEYS[2], 'XX', math.floor(now_us() / 1000), ARGV[1]) end
local ok, res = pcall(redis.call, 'XREADGROUP', 'GROUP', ARGV[1], READER, 'COUNT', tonumber(ARGV[2]), 'NOACK',
  'STREAMS', KEYS[1], '>')
if not ok then
  if string.find(err_text(res), 'NOGROUP') then return { 0 } end
  error(res)
end
local out = { 1 }
if res then
  for _, entry in ipairs(res[1][2]) do
    out[#out + 1] = entry[1]
    out[#out + 1] = field(entry[2], 'e') or ''
  end
end
return out
