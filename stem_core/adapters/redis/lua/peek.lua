-- peek.lua: one page of a queue's messages in one state, without claiming them.
--
-- KEYS: the queue's 18-key block (lib.lua).
-- ARGV: [1] state (pending | delayed | inflight), [2] limit, [3] offset, [4] promote batch.
-- Due delayed messages are promoted first, so the states are what a consumer would see.
-- pending:  delivery order (band 9 first; expired leases, then undelivered entries);
-- delayed:  by due time; inflight: by lease deadline.
-- Reply: flat groups of 4: envelope JSON, holder ('' none), lease deadline us (-1 none), deliveries.

local state, limit, offset = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local K = block(0)
local now = now_us()
promote(K, now, tonumber(ARGV[4]))
local want = offset + limit
local rows = {}
local function add(e, holder, deadline, count)
  rows[#rows + 1] = { e, holder, deadline, count }
end

if state == 'pending' then
  local expired = {}
  for _, lid in ipairs(redis.call('ZRANGEBYSCORE', K.leases, '-inf', now, 'LIMIT', 0, want)) do
    local band = tonumber(string.sub(lid, 1, 1))
    expired[band] = expired[band] or {}
    table.insert(expired[band], lid)
  end
  for band = 9, 0, -1 do
    if #rows >= want then break end
    local s = K.s[band]
    for _, lid in ipairs(expired[band] or {}) do
      local eid = string.sub(lid, 3)
      local entry = redis.call('XRANGE', s, eid, eid)[1]
      local rec = lease_get(K, lid)
      if entry and rec and #rows < want then add(field(entry[2], 'e'), '', -1, rec.c) end
    end
    if #rows < want and redis.call('EXISTS', s) == 1 then
      local last = last_delivered(s) or '0-0'
      for _, entry in ipairs(redis.call('XRANGE', s, '(' .. last, '+', 'COUNT', want - #rows)) do
        add(field(entry[2], 'e'), '', -1, tonumber(field(entry[2], 'd')) or 0)
      end
    end
  end
elseif state == 'delayed' then
  for _, mid in ipairs(redis.call('ZRANGE', K.delayed, 0, want - 1)) do
    local body = redis.call('HGET', K.dly, mid)
    if body then
      local _, d, _, _, _, e = cmsgpack.unpack(body)
      add(e, '', -1, tonumber(d) or 0)
    end
  end
else
  local leased = redis.call('ZRANGEBYSCORE', K.leases, '(' .. int(now), '+inf', 'WITHSCORES', 'LIMIT', 0, want)
  for k = 1, #leased, 2 do
    local lid = leased[k]
    local band, eid = string.match(lid, '^(%d):(.+)$')
    local entry = redis.call('XRANGE', K.s[tonumber(band)], eid, eid)[1]
    local rec = lease_get(K, lid)
    if entry and rec then add(field(entry[2], 'e'), rec.h, tonumber(leased[k + 1]), rec.c) end
  end
end

local out = {}
for k = offset + 1, math.min(#rows, want) do
  local row = rows[k]
  out[#out + 1], out[#out + 2], out[#out + 3], out[#out + 4] = row[1], row[2], row[3], row[4]
end
return out
