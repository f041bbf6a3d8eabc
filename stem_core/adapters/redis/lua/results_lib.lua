-- results_lib.lua: how a task status is written, prepended to every script that writes
-- one: results_set.lua, results_set_many.lua, and the broker scripts that write statuses
-- in the same step as their own work (enqueue_with.lua, ack_with.lua); see
-- connection.load_lua. One text, so a status is stored the same way on every path.
--
-- R = <namespace>:r{<namespace>}: (one hash tag: every key below is in one slot)
--   R:s:<id>     HASH  j status JSON (created_at null), c created_at ISO, v version
--   R:ix         HASH  id -> JSON [state index, queue, task] (what indexes hold it)
--   R:exp        ZSET  id -> expiry (us): what results_prune.lua visits
--   R:all        ZSET  id -> updated_at (us)            (list_statuses, newest first)
--   R:x:<state>  ZSET  per state, in the order queued running succeeded failed retried
--                      cancelled (state index 1..6)
--   R:q:<queue>, R:t:<task>  ZSET id -> updated_at (us), for statuses with those labels
--   R:ver        STRING namespace-wide version counter (orders watch messages)
-- status_keys(base) gathers KEYS[base + 1 .. base + 10]: ix, exp, all, the six state
-- sets, ver (results.py STATUS_KEYS). created_at survives overwrites (until the status
-- expires); every write publishes "<version>\n<created_at>\n<JSON>" on the channel
-- <watch prefix><id> (watch.py).
--
-- Statuses travel packed in one argument (results.py StatusBatch): each record is
-- "<state index>,<s>,<q>,<t>,<ttl ms>,<id len>,<JSON len>,<queue len>,<task len>:"
-- followed by the id, the status JSON, the queue and the task labels ('' = none), where
-- s, q, t are the KEYS positions of R:s:<id>, R:q:<queue>, R:t:<task> (0 when no label).
-- A status moving to another queue/task index also needs the old index key, which the
-- caller cannot know beforehand: status_blocked says so, and the script either asks
-- again naming it (results_set.lua) or does nothing at all (status_write_all).

local function status_keys(base)
  local R = { x = {} }
  R.ix, R.exp, R.all = KEYS[base + 1], KEYS[base + 2], KEYS[base + 3]
  for k = 1, 6 do R.x[k] = KEYS[base + 3 + k] end
  R.ver = KEYS[base + 10]
  return R
end

local function status_records(blob)
  local out, pos = {}, 1
  while pos <= #blob do
    local colon = string.find(blob, ':', pos, true)
    local x, s, q, t, ttl, il, bl, ql, tl = string.match(string.sub(blob, pos, colon - 1),
      '^(%d),(%d+),(%d+),(%d+),(%d+),(%d+),(%d+),(%d+),(%d+)$')
    il, bl, ql, tl = tonumber(il), tonumber(bl), tonumber(ql), tonumber(tl)
    local a = colon + 1
    out[#out + 1] = {
      x = tonumber(x), s = KEYS[tonumber(s)], qk = KEYS[tonumber(q)], tk = KEYS[tonumber(t)], ttl = ttl,
      id = string.sub(blob, a, a + il - 1),
      body = string.sub(blob, a + il, a + il + bl - 1),
      q = string.sub(blob, a + il + bl, a + il + bl + ql - 1),
      t = string.sub(blob, a + il + bl + ql, a + il + bl + ql + tl - 1),
    }
    pos = a + il + bl + ql + tl
  end
  return out
end

-- What R:ix says of `id`: its state index (nil: no status), queue and task labels.
local function status_old(R, id)
  local old = redis.call('HGET', R.ix, id)
  if not old then return nil, '', '' end
  local m = cjson.decode(old)
  return m[1], m[2], m[3]
end

-- True when labels q, t leave an old label (oq, ot) whose index key the caller did not
-- name (named_q, named_t: the old labels it passed the keys of, or nil).
local function status_blocked(oq, ot, q, t, named_q, named_t)
  return (oq ~= '' and oq ~= q and oq ~= named_q) or (ot ~= '' and ot ~= t and ot ~= named_t)
end

local function zadd_now(key, score, member) redis.call('ZADD', key, score, member) end

-- Overwrite status W (a record) whose R:ix entry was (ox, oq, ot); oqk/otk are the old
-- index keys when a label moves. T: iso (updated_at), us (updated_at), prefix (watch
-- channels). Returns created_at, version.
-- Only what changes is written: no R:ix entry means no R:s:<id> either (results_prune.lua
-- drops the entry only once the key is gone), so a first write has no created_at to
-- keep; a status staying in its state set is only re-scored there; an unchanged R:ix
-- entry is not rewritten.
-- With `later` (an index_writes collector), the ZADDs and the R:ix entry are collected
-- for one variadic call per key (index_flush) instead of one call each: only for a batch
-- whose ids are all different, so no later record of the same id needs them in place.
local function status_write(R, W, T, ox, oq, ot, oqk, otk, later)
  local id = W.id
  local zadd = later and later.zadd or zadd_now
  if ox and ox ~= W.x then redis.call('ZREM', R.x[ox], id) end
  if oq ~= '' and oq ~= W.q then redis.call('ZREM', oqk, id) end
  if ot ~= '' and ot ~= W.t then redis.call('ZREM', otk, id) end
  zadd(R.all, T.us, id)
  zadd(R.x[W.x], T.us, id)
  if W.q ~= '' then zadd(W.qk, T.us, id) end
  if W.t ~= '' then zadd(W.tk, T.us, id) end
  local created = T.iso
  if ox then created = redis.call('HGET', W.s, 'c') or T.iso end
  local version = redis.call('INCR', R.ver)
  redis.call('HSET', W.s, 'j', W.body, 'c', created, 'v', version)
  redis.call('PEXPIRE', W.s, W.ttl)
  zadd(R.exp, tonumber(T.us) + tonumber(W.ttl) * 1000, id)
  if ox ~= W.x or oq ~= W.q or ot ~= W.t then
    local mark = cjson.encode({ W.x, W.q, W.t })
    if later then later.mark(id, mark) else redis.call('HSET', R.ix, id, mark) end
  end
  redis.call('PUBLISH', T.prefix .. id, version .. '\n' .. created .. '\n' .. W.body)
  return created, version
end

-- Arguments per variadic call (even: score/member and field/value pairs; Lua's unpack
-- has a stack limit of about 8,000).
local INDEX_FLUSH_ARGS = 1000

-- A collector of index writes (see status_write): ZADD members per key in first-seen
-- order, and R:ix entries; index_flush(R, later) sends them.
local function index_writes()
  local later = { keys = {}, byKey = {}, marks = {} }
  later.zadd = function(key, score, member)
    local t = later.byKey[key]
    if not t then
      t = {}
      later.byKey[key] = t
      later.keys[#later.keys + 1] = key
    end
    t[#t + 1] = score
    t[#t + 1] = member
  end
  later.mark = function(id, mark)
    local m = later.marks
    m[#m + 1] = id
    m[#m + 1] = mark
  end
  return later
end

local function variadic(command, key, args)
  for i = 1, #args, INDEX_FLUSH_ARGS do
    redis.call(command, key, unpack(args, i, math.min(i + INDEX_FLUSH_ARGS - 1, #args)))
  end
end

local function index_flush(R, later)
  for _, key in ipairs(later.keys) do variadic('ZADD', key, later.byKey[key]) end
  if #later.marks > 0 then variadic('HSET', R.ix, later.marks) end
end

-- Every status of `ws` in order, or none: nil and the created_at of each (in order) when
-- all were written, {0, old queue, old task} (nothing written) when one moves to another
-- index (the caller then writes them one by one through results_set.lua). A status
-- repeated in `ws` moves from its earlier record's labels and keeps its created_at.
local function status_write_all(R, ws, T)
  local olds, now, repeated = {}, {}, false
  for k, W in ipairs(ws) do
    local o = now[W.id]
    if o then repeated = true else o = { status_old(R, W.id) } end
    if status_blocked(o[2], o[3], W.q, W.t, nil, nil) then return { 0, o[2], o[3] } end
    olds[k] = o
    now[W.id] = { W.x, W.q, W.t }
  end
  local created = {}
  local later = nil
  if #ws > 1 and not repeated then later = index_writes() end
  for k, W in ipairs(ws) do
    local o = olds[k]
    created[k] = status_write(R, W, T, o[1], o[2], o[3], nil, nil, later)
  end
  if later then index_flush(R, later) end
  return nil, created
end
