-- lib.lua: helpers prepended to every broker script (see connection.load_lua).
--
-- Key block of one queue: 18 KEYS, P = <namespace>:{<queue>} (the hash tag keeps a
-- queue in one Cluster slot; queue names cannot contain braces). A script over several
-- queues receives one block per queue; `base` is the block's offset (0, 18, 36 ...).
--   +1..+10  P:s0 .. P:s9  STREAM per priority band (9 first), consumer group "stem".
--                          Entry fields: e envelope JSON, r ready time (us), i envelope id,
--                          d deliveries before this entry, v lease ms (0 = broker default)
--   +11      P:delayed     ZSET  mid -> due time (us)
--   +12      P:dly         HASH  mid -> cmsgpack(band, d, v, r, i, e)
--   +13      P:leases      ZSET  lid -> lease deadline (us); lid = "<band>:<entry id>"
--   +14      P:lease       HASH  lid -> cmsgpack(token, deliveries, holder, envelope id)
--   +15      P:loc         HASH  envelope id -> "s<band>:<entry id>" / "d:<mid>" (space separated)
--   +16      P:stats       HASH  enq, done (totals), tok (fencing tokens), seq (delayed ids)
--   +17      P:dead        ZSET  envelope id -> dead_at (us)
--   +18      P:deadbody    HASH  envelope id -> dead-letter JSON
-- The pending entries list (PEL) of a band's group holds the leased entries; P:leases
-- says when each lease ends (per-envelope lengths) and P:lease who holds it under which
-- token. Times are the server's clock (TIME), except ready/due/dead times that come
-- from envelopes. Numbers written into fields are kept as strings.

local GROUP = 'stem'
-- Every Stem consumer reads as this one group consumer: the real holder lives in P:lease,
-- so consumers never pile up in the group (and no DELCONSUMER can orphan entries).
local READER = 'stem'
local BLOCK = 18
local DELAYED, DLY, LEASES, LEASE, LOC, STATS, DEAD, DEADBODY = 11, 12, 13, 14, 15, 16, 17, 18

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function int(x)
  return string.format('%d', x)
end

local function stream(base, band)
  return KEYS[base + 1 + band]
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

local function loc_add(base, id, loc)
  local k = KEYS[base + LOC]
  local cur = redis.call('HGET', k, id)
  if cur then redis.call('HSET', k, id, cur .. ' ' .. loc) else redis.call('HSET', k, id, loc) end
end

local function loc_del(base, id, loc)
  local k = KEYS[base + LOC]
  local cur = redis.call('HGET', k, id)
  if not cur then return end
  if cur == loc then
    redis.call('HDEL', k, id)
    return
  end
  local rest = {}
  for part in string.gmatch(cur, '%S+') do
    if part ~= loc then rest[#rest + 1] = part end
  end
  if #rest == 0 then redis.call('HDEL', k, id) else redis.call('HSET', k, id, table.concat(rest, ' ')) end
end

local function ensure_group(s)
  if redis.call('EXISTS', s) == 0 then redis.call('XGROUP', 'CREATE', s, GROUP, '$', 'MKSTREAM') end
end

-- A ready message goes to the tail of its band's stream; returns the entry id.
local function add_ready(base, band, e, r, i, d, v)
  local s = stream(base, band)
  ensure_group(s)
  local eid = redis.call('XADD', s, '*', 'e', e, 'r', r, 'i', i, 'd', d, 'v', v)
  loc_add(base, i, 's' .. band .. ':' .. eid)
  return eid
end

local function add_delayed(base, due, band, e, r, i, d, v)
  local mid = int(redis.call('HINCRBY', KEYS[base + STATS], 'seq', 1))
  redis.call('ZADD', KEYS[base + DELAYED], due, mid)
  redis.call('HSET', KEYS[base + DLY], mid, cmsgpack.pack(band, d, v, r, i, e))
  loc_add(base, i, 'd:' .. mid)
end

local function place(base, now, due, band, e, r, i, d, v)
  if due > now then add_delayed(base, due, band, e, r, i, d, v) else add_ready(base, band, e, r, i, d, v) end
end

-- Due delayed messages (at most `batch`) move to their streams.
local function promote(base, now, batch)
  local due = redis.call('ZRANGEBYSCORE', KEYS[base + DELAYED], '-inf', now, 'LIMIT', 0, batch)
  for _, mid in ipairs(due) do
    local body = redis.call('HGET', KEYS[base + DLY], mid)
    redis.call('ZREM', KEYS[base + DELAYED], mid)
    if body then
      redis.call('HDEL', KEYS[base + DLY], mid)
      local band, d, v, r, i, e = cmsgpack.unpack(body)
      loc_del(base, i, 'd:' .. mid)
      add_ready(base, band, e, r, i, d, v)
    end
  end
end

local function lease_get(base, lid)
  local raw = redis.call('HGET', KEYS[base + LEASE], lid)
  if not raw then return nil end
  local t, c, h, i = cmsgpack.unpack(raw)
  return { t = t, c = c, h = h, i = i }
end

local function lease_set(base, lid, rec)
  redis.call('HSET', KEYS[base + LEASE], lid, cmsgpack.pack(rec.t, rec.c, rec.h, rec.i))
end

-- The lease record of `lid` when `token` (a string) still holds it, else nil (fenced).
local function holding(base, lid, token)
  local rec = lease_get(base, lid)
  if rec and int(rec.t) == token then return rec end
  return nil
end

-- Forget a leased entry: acknowledged, deleted from its stream, lease and index gone.
local function drop_entry(base, band, eid, envid)
  local s = stream(base, band)
  pcall(redis.call, 'XACK', s, GROUP, eid)
  redis.call('XDEL', s, eid)
  local lid = band .. ':' .. eid
  redis.call('ZREM', KEYS[base + LEASES], lid)
  redis.call('HDEL', KEYS[base + LEASE], lid)
  loc_del(base, envid, 's' .. band .. ':' .. eid)
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
    -- The group vanished (an operator destroyed it): every entry left is unacknowledged.
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
