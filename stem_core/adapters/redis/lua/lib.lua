-- lib.lua: helpers prepended to every broker script (see connection.load_lua).
--
-- Keys of one queue, P = <namespace>:{<queue>} (the hash tag keeps a queue in one Cluster
-- slot; queue names cannot contain braces). Scripts receive them through KEYS in the
-- order their header states and gather them in a table K:
--   K.s[band]  P:s0 .. P:s9  STREAM per priority band, consumer group "stem": what
--                            producers publish ready. Fields: e envelope JSON, r ready
--                            time (us); d deliveries so far and v lease ms when not 0.
--   K.delayed  P:delayed     ZSET  mid -> ready time (us); mid = "<band>:<seq>". Delayed
--                            messages, and messages coming back (replayed, nacked with a
--                            delay, requeued): once due they compete by ready time.
--   K.dly      P:dly         HASH  mid -> cmsgpack(band, d, v, r, envelope id, e)
--   K.leases   P:leases      ZSET  lid -> lease deadline (us); lid = "<band><lane>:<entry
--                            id>", lane s = the band stream, p = P:p
--   K.lease    P:lease       HASH  lid -> cmsgpack(token, deliveries, holder, envelope id,
--                            replacement envelope JSON or nil)
--   K.idx      P:idx         HASH  envelope id -> "d:<mid>" / "l:<lid>" (space separated):
--                            where its delayed and leased copies are (undelivered
--                            entries are not indexed: publishing stays one XADD)
--   K.stats    P:stats       HASH  done (acks), enq (enqueues into P:delayed), tok
--                            (fencing tokens), seq (mids)
--   K.dead     P:dead        ZSET  envelope id -> dead_at (us)
--   K.deadbody P:deadbody    HASH  envelope id -> dead-letter JSON
--   K.p        P:p           STREAM the due messages a claim took from P:delayed: each is
--                            added and read into the group in the same script, so all of
--                            P:p is leased
--   K.w        P:w           STREAM of one entry, bumped when something becomes ready
--                            without a band stream XADD (nack, requeue, replay): idle
--                            consumers block on it too
-- The full block (block(base)) is those 20 keys in this order: s0..s9, delayed, dly,
-- leases, lease, idx, stats, dead, deadbody, p, w.
-- Leases are pending entries (PEL) of the group; P:leases says when each ends (per
-- envelope lengths), P:lease who holds it under which token. A nacked message keeps its
-- entry: its lease ends at once and its next delivery carries the replacement (attempt
-- + 1). Enqueued total = entries-added of the band streams (every publish is an XADD
-- there) + enq. Lease times use the server's clock (TIME); ready, due and dead times
-- come from envelopes. Numbers written into fields are kept as strings.

local GROUP = 'stem'
-- Every Stem consumer reads as this one group consumer: the real holder lives in P:lease,
-- so consumers never pile up in the group (and no DELCONSUMER can orphan entries).
local READER = 'stem'
local BLOCK = 20

local function block(base)
  local K = { s = {} }
  for band = 0, 9 do K.s[band] = KEYS[base + 1 + band] end
  K.delayed, K.dly, K.leases, K.lease = KEYS[base + 11], KEYS[base + 12], KEYS[base + 13], KEYS[base + 14]
  K.idx, K.stats, K.dead, K.deadbody = KEYS[base + 15], KEYS[base + 16], KEYS[base + 17], KEYS[base + 18]
  K.p, K.w = KEYS[base + 19], KEYS[base + 20]
  return K
end

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function int(x)
  return string.format('%d', x)
end

local function field(fields, name)
  for k = 1, #fields, 2 do
    if fields[k] == name then return fields[k + 1] end
  end
  return nil
end

local function err_text(e)
  if type(e) == 'table' then return tostring(e.err) end
  return tostring(e)
end

-- band (number), lane ('s' or 'p') and entry id of a lid.
local function lid_parts(lid)
  local band, lane, eid = string.match(lid, '^(%d)([sp]):(.+)$')
  return tonumber(band), lane, eid
end

local function lane_stream(K, band, lane)
  if lane == 'p' then return K.p end
  return K.s[band]
end

local function wake(K)
  redis.call('XADD', K.w, 'MAXLEN', 1, '*', 'x', '1')
end

-- The envelope id: Stem writes it as the first key; other writers' JSON is decoded.
local function envelope_id(e, fallback)
  local id = string.match(e or '', '^{"id":"([^"\\]*)"')
  if id then return id end
  local ok, doc = pcall(cjson.decode, e)
  if ok and type(doc) == 'table' and type(doc.id) == 'string' then return doc.id end
  return fallback
end

local function idx_add(K, id, ref)
  local cur = redis.call('HGET', K.idx, id)
  if cur then redis.call('HSET', K.idx, id, cur .. ' ' .. ref) else redis.call('HSET', K.idx, id, ref) end
end

local function idx_del(K, id, ref)
  local cur = redis.call('HGET', K.idx, id)
  if not cur then return end
  if cur == ref then
    redis.call('HDEL', K.idx, id)
    return
  end
  local rest = {}
  for part in string.gmatch(cur, '%S+') do
    if part ~= ref then rest[#rest + 1] = part end
  end
  if #rest == 0 then redis.call('HDEL', K.idx, id) else redis.call('HSET', K.idx, id, table.concat(rest, ' ')) end
end

-- A freshly published ready message goes to the tail of its band's stream. The group is
-- created by the first claim (NOGROUP) if the stream is new.
local function add_ready(K, band, e, r, v)
  local args = { K.s[band], '*', 'e', e, 'r', r }
  if v and v ~= '0' and v ~= '' then args[7] = 'v'; args[8] = v end
  return redis.call('XADD', unpack(args))
end

-- Into P:delayed, due at `due` (a due time in the past = ready, ranked by it).
local function add_delayed(K, due, band, e, r, i, d, v)
  local mid = band .. ':' .. int(redis.call('HINCRBY', K.stats, 'seq', 1))
  redis.call('ZADD', K.delayed, due, mid)
  redis.call('HSET', K.dly, mid, cmsgpack.pack(band, d, v, r, i, e))
  idx_add(K, i, 'd:' .. mid)
  return mid
end

-- Append messages packed in one argument (publish.lua's ARGV[1]) to the queue of K: ready
-- ones to their band stream, future ones (due after the server's clock) to P:delayed,
-- counted in enq. Returns how many were stored. (Due 0, the usual case, needs no clock.)
local function publish_records(K, blob)
  local now = nil
  local pos, n = 1, 0
  while pos <= #blob do
    local colon = string.find(blob, ':', pos, true)
    local due, band, r, v, il, el = string.match(string.sub(blob, pos, colon - 1), '^(%d+),(%d),(%d+),(%d+),(%d+),(%d+)$')
    il, el = tonumber(il), tonumber(el)
    local i = string.sub(blob, colon + 1, colon + il)
    local e = string.sub(blob, colon + il + 1, colon + il + el)
    pos = colon + il + el + 1
    band = tonumber(band)
    due = tonumber(due)
    if due > 0 and not now then now = now_us() end
    if due > 0 and due > now then
      add_delayed(K, due, band, e, r, i, '0', v)
      redis.call('HINCRBY', K.stats, 'enq', 1)
    else
      add_ready(K, band, e, r, v)
    end
    n = n + 1
  end
  return n
end

local function lease_get(K, lid)
  local raw = redis.call('HGET', K.lease, lid)
  if not raw then return nil end
  local t, c, h, i, o = cmsgpack.unpack(raw)
  return { t = t, c = c, h = h, i = i, o = o }
end

local function lease_set(K, lid, rec)
  if rec.o then
    redis.call('HSET', K.lease, lid, cmsgpack.pack(rec.t, rec.c, rec.h, rec.i, rec.o))
  else
    redis.call('HSET', K.lease, lid, cmsgpack.pack(rec.t, rec.c, rec.h, rec.i))
  end
end

-- The lease record of `lid` when `token` (a string) still holds it, else nil (fenced).
local function holding(K, lid, token)
  local rec = lease_get(K, lid)
  if rec and int(rec.t) == token then return rec end
  return nil
end

-- Forget a leased entry: acknowledged, deleted from its stream, lease and index gone.
local function drop_entry(K, lid, envid)
  local band, lane, eid = lid_parts(lid)
  local s = lane_stream(K, band, lane)
  pcall(redis.call, 'XACK', s, GROUP, eid)
  redis.call('XDEL', s, eid)
  redis.call('ZREM', K.leases, lid)
  redis.call('HDEL', K.lease, lid)
  idx_del(K, envid, 'l:' .. lid)
end

-- Settle `lid` for good when `token` still holds it (ack.lua): 1, else 0 (stale: a
-- redelivered, requeued or removed message changes nothing). Counts done.
local function ack_entry(K, lid, token)
  local rec = holding(K, lid, token)
  if not rec then return 0 end
  drop_entry(K, lid, rec.i)
  redis.call('HINCRBY', K.stats, 'done', 1)
  return 1
end

-- The group's last-delivered-id (entries after it are undelivered), nil without a group.
local function last_delivered(s)
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', s)
  if not ok then return nil end
  for _, g in ipairs(groups) do
    local name, last
    for k = 1, #g, 2 do
      if g[k] == 'name' then name = g[k + 1] elseif g[k] == 'last-delivered-id' then last = g[k + 1] end
    end
    if name == GROUP then return last end
  end
  return nil
end

-- First undelivered entry of a stream ({id, fields}) or nil.
local function first_new(s)
  if redis.call('EXISTS', s) == 0 then return nil end
  local last = last_delivered(s) or '0-0'
  return redis.call('XRANGE', s, '(' .. last, '+', 'COUNT', 1)[1]
end

-- Up to `count` undelivered entries of a stream, handed to the group (XREADGROUP >).
local function read_new(s, count)
  if redis.call('EXISTS', s) == 0 then return {} end
  local ok, res = pcall(redis.call, 'XREADGROUP', 'GROUP', GROUP, READER, 'COUNT', count, 'STREAMS', s, '>')
  if not ok then
    if not string.find(err_text(res), 'NOGROUP') then error(res) end
    -- A new stream (publishing never creates groups), or an operator destroyed the
    -- group: every entry in the stream is unacknowledged, so the group starts at 0.
    redis.call('XGROUP', 'CREATE', s, GROUP, '0')
    res = redis.call('XREADGROUP', 'GROUP', GROUP, READER, 'COUNT', count, 'STREAMS', s, '>')
  end
  if not res then return {} end
  return res[1][2]
end

local function id_less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, bm = tonumber(am), tonumber(bm)
  if am ~= bm then return am < bm end
  return tonumber(as) < tonumber(bs)
end

-- Broadcast streams: destroy groups without a subscriber record, then trim every entry
-- all remaining groups have read. Returns how many groups remain.
local function bc_trim(s, subs)
  if redis.call('EXISTS', s) == 0 then return 0 end
  local low, n = nil, 0
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', s)) do
    local name, last
    for k = 1, #g, 2 do
      if g[k] == 'name' then name = g[k + 1] elseif g[k] == 'last-delivered-id' then last = g[k + 1] end
    end
    if not redis.call('ZSCORE', subs, name) then
      redis.call('XGROUP', 'DESTROY', s, name)
    else
      n = n + 1
      if low == nil or id_less(last, low) then low = last end
    end
  end
  if n == 0 then
    redis.call('XTRIM', s, 'MAXLEN', 0)
  else
    redis.call('XTRIM', s, 'MINID', low)
  end
  return n
end

-- Settle scripts take a short key list (only what they touch), in this order:
-- [1] the stream of the delivery's lid, [2] leases, [3] lease, [4] idx, [5] stats,
-- [6] delayed, [7] dly, [8] dead, [9] deadbody, [10] w; a script may pass a prefix.
-- They start at KEYS[base + 1] (base 0 unless a script passes several lids' keys).
local function settle_keys(lid, base)
  base = base or 0
  local band, lane = lid_parts(lid)
  local K = { s = {} }
  if lane == 'p' then K.p = KEYS[base + 1] else K.s[band] = KEYS[base + 1] end
  K.leases, K.lease, K.idx, K.stats = KEYS[base + 2], KEYS[base + 3], KEYS[base + 4], KEYS[base + 5]
  K.delayed, K.dly, K.dead, K.deadbody, K.w = KEYS[base + 6], KEYS[base + 7], KEYS[base + 8], KEYS[base + 9], KEYS[base + 10]
  return K
end
