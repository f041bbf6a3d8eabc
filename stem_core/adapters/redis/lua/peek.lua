-- peek.lua: one page of a queue's messages in one state, without claiming them.
--
-- KEYS: the queue's 20-key block (lib.lua).
-- ARGV: [1] state (pending | delayed | inflight), [2] limit, [3] offset, [4] how many
--       due delayed messages to consider.
-- pending:  delivery order (band 9 first, then oldest ready time): undelivered entries,
--           leases that ended and due P:delayed messages, as a claim would take them;
-- delayed:  P:delayed messages not yet due, by due time; inflight: by lease deadline.
-- Reply: flat groups of 4: envelope JSON, holder ('' none), lease deadline us (-1 none), deliveries.

local state, limit, offset = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local K = block(0)
local now = now_us()
local want = offset + limit
local rows = {}
local function add(e, holder, deadline, count)
  rows[#rows + 1] = { e, holder, deadline, count }
end

if state == 'pending' then
  local bands = {}
  local function cand(band, r, e, count)
    bands[band] = bands[band] or {}
    local list = bands[band]
    list[#list + 1] = { r, #list, e, count }
  end
  for _, lid in ipairs(redis.call('ZRANGEBYSCORE', K.leases, '-inf', now, 'LIMIT', 0, want)) do
    local band, lane, eid = lid_parts(lid)
    local entry = redis.call('XRANGE', lane_stream(K, band, lane), eid, eid)[1]
    local rec = lease_get(K, lid)
    if entry and rec then cand(band, tonumber(field(entry[2], 'r')) or 0, rec.o or field(entry[2], 'e'), rec.c) end
  end
  local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'WITHSCORES', 'LIMIT', 0, math.max(want, tonumber(ARGV[4])))
  for k = 1, #due, 2 do
    local body = redis.call('HGET', K.dly, due[k])
    if body then
      local band, d, _, _, _, e = cmsgpack.unpack(body)
      cand(band, tonumber(due[k + 1]), e, tonumber(d) or 0)
    end
  end
  for band = 9, 0, -1 do
    if #rows >= want then break end
    local s = K.s[band]
    if redis.call('EXISTS', s) == 1 then
      local last = last_delivered(s) or '0-0'
      for _, entry in ipairs(redis.call('XRANGE', s, '(' .. last, '+', 'COUNT', want - #rows)) do
        cand(band, tonumber(field(entry[2], 'r')) or 0, field(entry[2], 'e'), tonumber(field(entry[2], 'd')) or 0)
      end
    end
    local list = bands[band] or {}
    table.sort(list, function(a, b) if a[1] ~= b[1] then return a[1] < b[1] end return a[2] < b[2] end)
    for _, row in ipairs(list) do
      if #rows >= want then break end
      add(row[3], '', -1, row[4])
    end
  end
elseif state == 'delayed' then
  for _, mid in ipairs(redis.call('ZRANGEBYSCORE', K.delayed, '(' .. int(now), '+inf', 'LIMIT', 0, want)) do
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
    local band, lane, eid = lid_parts(lid)
    local entry = redis.call('XRANGE', lane_stream(K, band, lane), eid, eid)[1]
    local rec = lease_get(K, lid)
    if entry and rec then add(rec.o or field(entry[2], 'e'), rec.h, tonumber(leased[k + 1]), rec.c) end
  end
end

local out = {}
for k = offset + 1, math.min(#rows, want) do
  local row = rows[k]
  out[#out + 1], out[#out + 2], out[#out + 3], out[#out + 4] = row[1], row[2], row[3], row[4]
end
return out
