-- claim.lua: lease up to `limit` messages to one subscription, best first.
--
-- KEYS: one 20-key block per subscribed queue (lib.lua), in subscription order.
-- ARGV: [1] holder (consumer name), [2] limit, [3] default lease ms, [4] how many ended
--       leases and due delayed messages per queue to consider (ranking is exact while
--       there are no more than that), [5] number of queues.
-- Order: priority band 9 down to 0; inside a band, oldest ready time first across the
-- queues, among three kinds of candidates: undelivered band stream entries, leases
-- that ended (expired, nacked, requeued: taken back with XCLAIM, which resets the idle
-- time) and due P:delayed messages (added to P:p and read into the group on the spot).
-- A lease lasts the envelope's own length (field v) or the default; every delivery gets
-- a fresh fencing token.
-- Reply: {now, next_due, n, n x (queue index, lid, token, deliveries, lease deadline,
--        envelope JSON)}; when n = 0 it is followed by 11 XREAD cursors per queue (the
--        last entry id of each band stream and of P:w, "0-0" when empty) and next_due is
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

local function deliver(qi, lid, fields, prev)
  local K = Q[qi]
  local e = (prev and prev.o) or field(fields, 'e') or ''
  local count, i
  if prev then
    count, i = prev.c + 1, prev.i
  else
    count, i = (tonumber(field(fields, 'd')) or 0) + 1, envelope_id(e, lid)
  end
  local ms = tonumber(field(fields, 'v')) or 0
  if ms <= 0 then ms = default_ms end
  local token = redis.call('HINCRBY', K.stats, 'tok', 1)
  local deadline = now + ms * 1000
  redis.call('ZADD', K.leases, deadline, lid)
  lease_set(K, lid, { t = token, c = count, h = holder, i = i, o = prev and prev.o })
  if not prev then idx_add(K, i, 'l:' .. lid) end
  local n = #out
  out[n + 1], out[n + 2], out[n + 3] = qi, lid, token
  out[n + 4], out[n + 5], out[n + 6] = count, deadline, e
  taken = taken + 1
end

local function reclaim(qi, lid)
  local K = Q[qi]
  local band, lane, eid = lid_parts(lid)
  local prev = lease_get(K, lid)
  local ok, got = pcall(redis.call, 'XCLAIM', lane_stream(K, band, lane), GROUP, READER, 0, eid)
  if not ok or not prev or not got[1] or not got[1][2] then
    -- The entry was deleted meanwhile: its lease has nothing left to guard.
    redis.call('ZREM', K.leases, lid)
    redis.call('HDEL', K.lease, lid)
    if prev then idx_del(K, prev.i, 'l:' .. lid) end
    return
  end
  deliver(qi, lid, got[1][2], prev)
end

local function take_due(qi, mid)
  local K = Q[qi]
  local body = redis.call('HGET', K.dly, mid)
  redis.call('ZREM', K.delayed, mid)
  if not body then return end
  redis.call('HDEL', K.dly, mid)
  local band, d, v, r, i, e = cmsgpack.unpack(body)
  idx_del(K, i, 'd:' .. mid)
  local args = { K.p, '*', 'e', e, 'r', r, 'd', d }
  if v and v ~= '0' and v ~= '' then args[9] = 'v'; args[10] = v end
  redis.call('XADD', unpack(args))
  -- Nothing in P:p is ever left undelivered, so this reads the entry just added.
  local got = read_new(K.p, 1)
  if got[1] then deliver(qi, band .. 'p:' .. got[1][1], got[1][2], nil) end
end

-- Candidates of every queue, bucketed by band: leases that ended and due messages.
local olds, dues = {}, {}
if limit > 0 then
  for q = 0, nq - 1 do
    -- All of them (up to the batch), not just `limit`: a higher band may be further down.
    for _, lid in ipairs(redis.call('ZRANGEBYSCORE', Q[q].leases, '-inf', now, 'LIMIT', 0, batch)) do
      local band = tonumber(string.sub(lid, 1, 1))
      olds[band] = olds[band] or {}
      table.insert(olds[band], { q, lid })
    end
    local due = redis.call('ZRANGEBYSCORE', Q[q].delayed, '-inf', now, 'WITHSCORES', 'LIMIT', 0, batch)
    for k = 1, #due, 2 do
      local band = tonumber(string.match(due[k], '^(%d):'))
      dues[band] = dues[band] or {}
      table.insert(dues[band], { q, due[k], tonumber(due[k + 1]) })
    end
  end
end

-- One band, several kinds or queues: always the candidate with the oldest ready time.
local function merge_band(band)
  local cands = {}
  for _, item in ipairs(olds[band] or {}) do
    local b, lane, eid = lid_parts(item[2])
    local entry = redis.call('XRANGE', lane_stream(Q[item[1]], b, lane), eid, eid)[1]
    cands[#cands + 1] = { q = item[1], key = item[2], old = true, r = entry and tonumber(field(entry[2], 'r')) or 0 }
  end
  for _, item in ipairs(dues[band] or {}) do
    cands[#cands + 1] = { q = item[1], key = item[2], old = false, r = item[3] }
  end
  for n, c in ipairs(cands) do c.n = n end
  table.sort(cands, function(a, b) if a.r ~= b.r then return a.r < b.r end return a.n < b.n end)
  local heads = {}
  for q = 0, nq - 1 do heads[q] = first_new(Q[q].s[band]) or false end
  local next_cand = 1
  while taken < limit do
    local best, best_r
    for q = 0, nq - 1 do
      local h = heads[q]
      if h then
        local r = tonumber(field(h[2], 'r')) or 0
        if best == nil or r < best_r then best, best_r = q, r end
      end
    end
    local c = cands[next_cand]
    if c and (best == nil or c.r <= best_r) then
      if c.old then reclaim(c.q, c.key) else take_due(c.q, c.key) end
      next_cand = next_cand + 1
    elseif best ~= nil then
      local s = Q[best].s[band]
      local got = read_new(s, 1)
      if #got == 0 then
        heads[best] = false
      else
        deliver(best, band .. 's:' .. got[1][1], got[1][2], nil)
        heads[best] = redis.call('XRANGE', s, '(' .. got[1][1], '+', 'COUNT', 1)[1] or false
      end
    else
      return
    end
  end
end

if limit > 0 then
  for band = 9, 0, -1 do
    if taken >= limit then break end
    if nq == 1 and not olds[band] and not dues[band] then
      -- The common case: one queue, nothing coming back: the group hands out the oldest.
      for _, entry in ipairs(read_new(Q[0].s[band], limit - taken)) do
        deliver(0, band .. 's:' .. entry[1], entry[2], nil)
      end
    else
      merge_band(band)
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
  local last = redis.call('XREVRANGE', K.w, '+', '-', 'COUNT', 1)[1]
  reply[#reply + 1] = last and last[1] or '0-0'
end
reply[2] = next_due
return reply
