-- results_prune.lua: drop expired statuses from every index (bounded batch).
--
-- KEYS: [1] R:ix, [2] R:exp, [3] R:all, [4..9] R:x:<state> (see results_set.lua), then per
--       id three keys: R:s:<id>, R:q:<queue>, R:t:<task> (R:all when none), taken from
--       the R:ix entry the caller read.
-- ARGV: [1] now (us), then the ids.
-- An id whose expiry moved (set again meanwhile) is skipped; one whose key still lives
-- (clocks disagree) gets its expiry from the key's PTTL.
-- Reply: how many were pruned.

local now = tonumber(ARGV[1])
local pruned = 0
for k = 0, #ARGV - 2 do
  local id = ARGV[2 + k]
  local score = redis.call('ZSCORE', KEYS[2], id)
  if score and tonumber(score) <= now then
    local ttl = redis.call('PTTL', KEYS[10 + 3 * k])
    if ttl > 0 then
      redis.call('ZADD', KEYS[2], now + ttl * 1000, id)
    else
      local old = redis.call('HGET', KEYS[1], id)
      if old then
        local m = cjson.decode(old)
        redis.call('ZREM', KEYS[3 + m[1]], id)
        if m[2] ~= '' then redis.call('ZREM', KEYS[11 + 3 * k], id) end
        if m[3] ~= '' then redis.call('ZREM', KEYS[12 + 3 * k], id) end
      end
      redis.call('ZREM', KEYS[3], id)
      redis.call('HDEL', KEYS[1], id)
      redis.call('ZREM', KEYS[2], id)
      pruned = pruned + 1
    end
  end
end
return pruned
