-- bc_open.lua: subscribe a consumer group to a broadcast channel from now on.
--
-- KEYS: [1] <ns>:{<channel>}:bc  STREAM of broadcast envelopes (field e),
--       [2] <ns>:{<channel>}:subs ZSET group -> last time its subscriber read (ms).
-- ARGV: [1] group name (one per subscription).
-- The group starts at the stream's end: only later broadcasts reach it.
-- Reply: the stream's last generated id (the subscriber's first XREAD cursor).

local ok, res = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], ARGV[1], '$', 'MKSTREAM')
if not ok and not string.find(err_text(res), 'BUSYGROUP') then error(res) end
redis.call('ZADD', KEYS[2], math.floor(now_us() / 1000), ARGV[1])
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for k = 1, #info, 2 do
  if info[k] == 'last-generated-id' then return info[k + 1] end
end
return '0-0'
