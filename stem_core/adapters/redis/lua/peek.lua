-- peek.lua: one page of a queue's messages in one state, without claiming them, from a
-- cursor. A call reads at most `limit` entries of each source it walks (plus the bounded
-- candidate scan of `pending`), however deep the cursor is: a peek never blocks Redis for
-- longer on a long queue (there is no offset here; the adapter skips by cursor pages).
--
-- KEYS: the queue's 20-key block (lib.lua).
-- ARGV: [1] state (pending | delayed | inflight), [2] limit, [3] cursor ('' = the start),
--       [4] how many ended leases and due delayed messages to consider (as claim.lua),
--       [5] '1' to return the rows, '0' to only walk (the adapter skipping an offset).
-- Cursors (the position after the last row given):
--   pending:          "<band>|<candidates taken in that band>|<last stream id taken>"
--   delayed/inflight: "<score>|<member>" of the last row (sorted set order)
-- pending:  delivery order (band 9 first; inside a band the merge claim.lua makes: ended
--           leases and due P:delayed messages by ready time, against undelivered entries);
-- delayed:  P:delayed messages not yet due, by due time; inflight: by lease deadline.
-- Reply: {next cursor ('' at the end), entries read, rows...}; rows are flat groups of 4:
--        envelope JSON, holder ('' none), lease deadline us (-1 none), deliveries.

local state, limit, cursor = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local scan, emit = tonumber(ARGV[4]), ARGV[5] == '1'
local K = block(0)
local now = now_us()
local out = { '', 0 }
local taken, read = 0, 0
local function add(e, holder, deadline, count)
  taken = taken + 1
  if emit then
    local n = #out
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = e, holder, deadline, count
  end
end

local function split(text)
  local sep = string.find(text, '|', 1, true)
  return string.sub(text, 1, sep - 1), string.sub(text, sep + 1)
end

-- Up to `limit` members of a sorted set after the cursor ("<score>|<member>"), or from
-- the first score above `now` without one; members whose score is not above now skipped.
local function zpage(key)
  local items
  if cursor == '' then
    items = redis.call('ZRANGEBYSCORE', key, '(' .. int(now), '+inf', 'WITHSCORES', 'LIMIT', 0, limit)
  else
    local cs, cm = split(cursor)
    local score = redis.call('ZSCORE', key, cm)
    if score and tonumber(score) == tonumber(cs) then
      local rank = redis.call('ZRANK', key, cm)
      items = redis.call('ZRANGE', key, rank + 1, rank + limit, 'WITHSCORES')
    else
      -- The cursor's member moved or went: go on after its score.
      items = redis.call('ZRANGEBYSCORE', key, '(' .. cs, '+inf', 'WITHSCORES', 'LIMIT', 0, limit)
    end
  end
  read = read + #items / 2
  if #items >= 2 * limit then out[1] = items[#items] .. '|' .. items[#items - 1] end
  local live = {}
  for k = 1, #items, 2 do
    if tonumber(items[k + 1]) > now then live[#live + 1] = { items[k], tonumber(items[k + 1]) } end
  end
  return live
end

if limit <= 0 then return out end

if state == 'delayed' then
  for _, item in ipairs(zpage(K.delayed)) do
    local _, d, e = 0, 0, ''
    if emit then
      local body = redis.call('HGET', K.dly, item[1])
      if body then
        local _b, dd, _v, _r, _i, ee = cmsgpack.unpack(body)
        d, e = dd, ee
      end
    end
    add(e, '', -1, tonumber(d) or 0)
  end
elseif state == 'inflight' then
  for _, item in ipairs(zpage(K.leases)) do
    local lid = item[1]
    if emit then
      local band, lane, eid = lid_parts(lid)
      local entry = redis.call('XRANGE', lane_stream(K, band, lane), eid, eid)[1]
      local rec = lease_get(K, lid)
      if entry and rec then add(rec.o or field(entry[2], 'e'), rec.h, item[2], rec.c) end
    else
      add('', '', item[2], 0)
    end
  end
else
  local cband, ctaken, csid = 9, 0, ''
  if cursor ~= '' then
    local b, rest = split(cursor)
    local t, sid = split(rest)
    cband, ctaken, csid = tonumber(b), tonumber(t), sid
  end
  -- Candidates, bucketed by band: leases that ended and due messages (bounded, as claim).
  local cands = {}
  local function cand(band, r, e, count)
    cands[band] = cands[band] or {}
    local list = cands[band]
    list[#list + 1] = { r, #list, e, count }
  end
  local ended = redis.call('ZRANGEBYSCORE', K.leases, '-inf', now, 'LIMIT', 0, scan)
  read = read + #ended
  for _, lid in ipairs(ended) do
    local band, lane, eid = lid_parts(lid)
    if band <= cband then
      local entry = redis.call('XRANGE', lane_stream(K, band, lane), eid, eid)[1]
      local rec = lease_get(K, lid)
      if entry and rec then cand(band, tonumber(field(entry[2], 'r')) or 0, rec.o or field(entry[2], 'e'), rec.c) end
    end
  end
  local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'WITHSCORES', 'LIMIT', 0, scan)
  read = read + #due / 2
  for k = 1, #due, 2 do
    local band = tonumber(string.match(due[k], '^(%d):')) or 0
    if band <= cband then
      local body = redis.call('HGET', K.dly, due[k])
      if body then
        local _, d, _, _, _, e = cmsgpack.unpack(body)
        cand(band, tonumber(due[k + 1]), e, tonumber(d) or 0)
      end
    end
  end
  for band = cband, 0, -1 do
    local list = cands[band] or {}
    table.sort(list, function(a, b) if a[1] ~= b[1] then return a[1] < b[1] end return a[2] < b[2] end)
    local ci = (band == cband) and ctaken or 0
    local s = K.s[band]
    local sid = (band == cband and csid ~= '') and csid or nil
    local entries = {}
    if redis.call('EXISTS', s) == 1 then
      sid = sid or last_delivered(s) or '0-0'
      entries = redis.call('XRANGE', s, '(' .. sid, '+', 'COUNT', limit - taken)
      read = read + #entries
    end
    local ei = 1
    while taken < limit do
      local c, h = list[ci + 1], entries[ei]
      if c and (h == nil or c[1] <= (tonumber(field(h[2], 'r')) or 0)) then
        add(c[3], '', -1, c[4])
        ci = ci + 1
      elseif h then
        add(field(h[2], 'e'), '', -1, tonumber(field(h[2], 'd')) or 0)
        sid = h[1]
        ei = ei + 1
      else
        break
      end
    end
    if taken >= limit then
      out[1] = band .. '|' .. ci .. '|' .. (sid or '')
      break
    end
  end
end

out[2] = read
return out
