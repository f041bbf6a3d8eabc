-- claim.lua: lease up to `limit` messages to one subscription, best first.
--
-- KEYS: one 18-key block per subscribed queue (lib.lua), in subscription order.
-- ARGV: [1] holder (consumer name), [2] limit, [3] default lease ms, [4] promote batch,
--       [5] number of queues.
-- Order: priority band 9 down to 0; inside a band, leases that expired (deadline passed
-- in P:leases) are taken back first, then undelivered entries, oldest ready time first
-- across queues. An expired entry moves to the group's reader with XCLAIM (which resets
-- its idle time); the envelope's own lease length (field v) or the default sets the new
-- deadline. Every delivery gets a fresh fencing token.
-- Reply: {now, next_due, n, n x (queue index, band, entry id, token, deliveries,
--        lease deadline, envelope JSON)}; when n = 0 it is followed by 10 XREAD cursors
--        per queue (last entry id of each band stream, "0-0" when empty) and next_due is
--        the earliest delayed or lease deadline (-1: none).

local holder = ARGV[1]
local limit = tonumber(ARGV[2])
local default_ms = tonumber(ARGV[3])
local batch = tonumber(ARGV[4])
local nq = tonumber(ARGV[5])
local now = now_us()
local Q = {}
for q = 0, nq - 1 do Q[q] = block(q * BLOCK) end
local out = {}
local taken = 0

local function deliver(qi, band, eid, fields, prev)
  local K = Q[qi]
  local e = field(fields, 'e') or ''
  local count, i
  if prev then
    count, i = prev.c + 1, prev.i
  else
    count, i = (tonumber(field(fields, 'd')) or 0) + 1, envelope_id(e, eid)
  end
  local ms = tonumber(field(fields, 'v')) or 0
  if ms <= 0 then ms = default_ms end
  local token = redis.call('HINCRBY', K.stats, 'tok', 1)
  local deadline = now + ms * 1000
  local lid = band .. ':' .. eid
  redis.call('ZADD', K.leases, deadline, lid)
  redis.call('HSET', K.lease, lid, cmsgpack.pack(token, count, holder, i))
  if not prev then idx_add(K, i, 'l:' .. lid) end
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4] = qi, band, eid, token
  out[n + 5], out[n + 6], out[n + 7] = count, deadline, e
  taken = taken + 1
end

local function reclaim(qi, lid)
  local K = Q[qi]
  local band, eid = string.match(lid, '^(%d):(.+)$')
  band = tonumber(band)
  local prev = lease_get(K, lid)
  local ok, got = pcall(redis.call, 'XCLAIM', K.s[band], GROUP, READER, 0, eid)
  if not ok or not prev or not got[1] or not got[1][2] then
    -- The entry was deleted meanwhile: its lease has nothing left to guard.
    redis.call('ZREM', K.leases, lid)
    redis.call('HDEL', K.lease, lid)
    if prev then idx_del(K, prev.i, 'l:' .. lid) end
    return
  end
  deliver(qi, band, eid, got[1][2], prev)
end

-- Several queues: peek at each band head and take the oldest, one at a time.
local function merge_band(band)
  local heads = {}
  for q = 0, nq - 1 do heads[q] = first_new(Q[q].s[band]) or false end
  while taken < limit do
    local best, best_r
    for q = 0, nq - 1 do
      local h = heads[q]
      if h then
        local r = tonumber(field(h[2], 'r')) or 0
        if best == nil or r < best_r then best, best_r = q, r end
      end
    end
    if best == nil then return end
    local s = Q[best].s[band]
    local got = read_new(s, 1)
    if #got == 0 then
      heads[best] = false
    else
      deliver(best, band, got[1][1], got[1][2], nil)
      heads[best] = redis.call('XRANGE', s, '(' .. got[1][1], '+', 'COUNT', 1)[1] or false
    end
  end
end

for q = 0, nq - 1 do promote(Q[q], now, batch) end

if limit > 0 then
  local expired = {}
  for q = 0, nq - 1 do
    for _, lid in ipairs(redis.call('ZRANGEBYSCORE', Q[q].leases, '-inf', now, 'LIMIT', 0, limit)) do
      local band = tonumber(string.sub(lid, 1, 1))
      expired[band] = expired[band] or {}
      table.insert(expired[band], { q, lid })
    end
  end
  for band = 9, 0, -1 do
    if taken >= limit then break end
    for _, item in ipairs(expired[band] or {}) do
      if taken >= limit then break end
      reclaim(item[1], item[2])
    end
    if taken < limit then
      if nq == 1 then
        for _, entry in ipairs(read_new(Q[0].s[band], limit - taken)) do
          deliver(0, band, entry[1], entry[2], nil)
        end
      else
        merge_band(band)
      end
    end
  end
end

if taken > 0 then
  local reply = { now, -1, taken }
  for k = 1, #out do reply[k + 3] = out[k] end
  return reply
end

local next_due = -1
local reply = { now, 0, 0 }
for q = 0, nq - 1 do
  local K = Q[q]
  for _, k in ipairs({ K.delayed, K.leases }) do
    local z = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
    if z[2] then
      local score = tonumber(z[2])
      if next_due < 0 or score < next_due then next_due = score end
    end
  end
  for band = 0, 9 do
    local last = redis.call('XREVRANGE', K.s[band], '+', '-', 'COUNT', 1)[1]
    reply[#reply + 1] = last and last[1] or '0-0'
  end
end
reply[2] = next_due
return reply
