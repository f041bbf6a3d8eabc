-- stats.lua: counts of one queue, read-only and independent of its length.
--
-- KEYS: the queue's 20-key block (lib.lua). ARGV: none.
-- Per band: XLEN (live entries) minus the XPENDING count (leased) is undelivered; P:p
-- is all leased. Leases that ended and P:delayed messages past their due time count as
-- pending (the next claim takes them); the oldest ready time comes from each band's
-- first undelivered entry and those. Enqueued total: the band streams' entries-added
-- plus enq (lib.lua). Nothing is scanned: O(bands + log n).
-- Reply: {pending, delayed, inflight, dead, oldest ready time us or -1, now us, enq, done}.

local K = block(0)
local now = now_us()
local ready, pel, oldest, added = 0, 0, -1, 0
local function older(r)
  r = tonumber(r)
  if r and (oldest < 0 or r < oldest) then oldest = r end
end
local function held(s)
  local ok, summary = pcall(redis.call, 'XPENDING', s, GROUP)
  if ok then return summary[1] end
  return 0
end
for band = 0, 9 do
  local s = K.s[band]
  if redis.call('EXISTS', s) == 1 then
    local h = held(s)
    ready = ready + redis.call('XLEN', s) - h
    pel = pel + h
    local head = first_new(s)
    if head then older(field(head[2], 'r')) end
    local info = redis.call('XINFO', 'STREAM', s)
    for k = 1, #info, 2 do
      if info[k] == 'entries-added' then added = added + info[k + 1] end
    end
  end
end
if redis.call('EXISTS', K.p) == 1 then pel = pel + held(K.p) end
local expired = redis.call('ZCOUNT', K.leases, '-inf', now)
if expired > 0 then
  local band, lane, eid = lid_parts(redis.call('ZRANGEBYSCORE', K.leases, '-inf', now, 'LIMIT', 0, 1)[1])
  local entry = redis.call('XRANGE', lane_stream(K, band, lane), eid, eid)[1]
  if entry then older(field(entry[2], 'r')) end
end
local due = redis.call('ZCOUNT', K.delayed, '-inf', now)
if due > 0 then older(redis.call('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')[2]) end
local totals = redis.call('HMGET', K.stats, 'enq', 'done')
return {
  ready + expired + due,
  redis.call('ZCARD', K.delayed) - due,
  math.max(0, pel - expired),
  redis.call('ZCARD', K.dead),
  oldest,
  now,
  added + (tonumber(totals[1]) or 0),
  tonumber(totals[2]) or 0,
}
