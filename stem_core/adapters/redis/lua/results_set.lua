-- results_set.lua: overwrite one task status, keep its indexes, tell watchers.
--
-- R = <namespace>:r{<namespace>}: (one hash tag: every key below is in one slot)
-- KEYS: [1] R:s:<id>  HASH  j status JSON (created_at null), c created_at ISO, v version
--       [2] R:ix      HASH  id -> JSON [state index, queue, task] (what indexes hold it)
--       [3] R:exp     ZSET  id -> expiry (us): what results_prune.lua visits
--       [4] R:all     ZSET  id -> updated_at (us)            (list_statuses, newest first)
--       [5..10] R:x:<state> ZSET per state, in the order queued running succeeded failed
--               retried cancelled
--       [11] R:q:<queue>, [12] R:t:<task> (R:all when the status has none)
--       [13] R:ver    STRING namespace-wide version counter (orders watch messages)
--       [14] R:q:<old queue>, [15] R:t:<old task>: only when the caller was told them
-- ARGV: [1] id, [2] status JSON, [3] updated ISO, [4] updated us, [5] ttl ms,
--       [6] state index 1..6, [7] queue or '', [8] task or '', [9] watch channel prefix
--       (the channel is prefix .. id), [10] old queue and [11] old task the caller passed
--       as KEYS[14], KEYS[15] (absent on a first attempt).
-- created_at survives overwrites (until the status expires).
-- Reply: {1, created_at, version}, or {0, old queue, old task} when the status moves to
-- another queue/task index whose key the caller must pass (it then calls again).

local id = ARGV[1]
local x, q, t = tonumber(ARGV[6]), ARGV[7], ARGV[8]
local ox, oq, ot = nil, '', ''
local old = redis.call('HGET', KEYS[2], id)
if old then
  local m = cjson.decode(old)
  ox, oq, ot = m[1], m[2], m[3]
end
local move_q = oq ~= '' and oq ~= q
local move_t = ot ~= '' and ot ~= t
if (move_q and oq ~= (ARGV[10] or '')) or (move_t and ot ~= (ARGV[11] or '')) then return { 0, oq, ot } end
if ox then redis.call('ZREM', KEYS[4 + ox], id) end
if move_q then redis.call('ZREM', KEYS[14], id) end
if move_t then redis.call('ZREM', KEYS[15], id) end
local score = ARGV[4]
redis.call('ZADD', KEYS[4], score, id)
redis.call('ZADD', KEYS[4 + x], score, id)
if q ~= '' then redis.call('ZADD', KEYS[11], score, id) end
if t ~= '' then redis.call('ZADD', KEYS[12], score, id) end
local created = redis.call('HGET', KEYS[1], 'c') or ARGV[3]
local version = redis.call('INCR', KEYS[13])
redis.call('HSET', KEYS[1], 'j', ARGV[2], 'c', created, 'v', version)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[3], tonumber(ARGV[4]) + tonumber(ARGV[5]) * 1000, id)
redis.call('HSET', KEYS[2], id, cjson.encode({ x, q, t }))
redis.call('PUBLISH', ARGV[9] .. id, version .. '\n' .. created .. '\n' .. ARGV[2])
return { 1, created, version }
