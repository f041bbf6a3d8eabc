-- stats.lua: counts of one queue, read-only and independent of its length.
--
-- KEYS: the queue's 18-key block (lib.lua). ARGV: none.
-- Per band: XLEN (live entries) minus the XPENDING count (leased) is undelivered.
-- Leases past their deadline and delayed messages past their due time count as
-- pending (the next claim takes them); the oldest ready time comes from each band's
-- first undelivered entry and those. The enqueued total is entries-added + enq - readd
-- (lib.lua). Nothing is scanned: O(bands + log n).
-- Reply: {pending, delayed, inflight, dead, oldest ready time us or -1, now us, enq, done}.

local K = block(0)
local now = now_us()
local ready, pel, oldest, added = 0, 0, -1, 0
local function older(r)
  r = tonumber(r)
  if r and (oldest < 0 or r < oldest) then oldest = r end
end
for band = 0, 9 do
  local s = K.s[band]
  if redis.call('EXISTS', s) == 1 then
    local held = 0
    local ok, summary = pcall(redis.call, 'XPENDING', s, GROUP)
    if ok then held = summary[1] end
    ready = ready + redis.call('XLEN', s) - held
    pel = pel + held
    local head = first_new(s)
    if head then older(field(head[2], 'r')) end
    local info = redis.call('XINFO', 'STREAM', s)
    for k = 1, #info, 2 do
      if info[k] == 'entries-added' then added = added + info[k + 1] end
    end
  end
end
local expired = redis.call('ZCOUNT', K.leases, '-inf', now)
if expired > 0 then
  local lid = redis.call('ZRANGEBYSCORE', K.leases, '-inf', now, 'LIMIT', 0, 1)[1]
  local band, eid = string.match(lid, '^(%d):(.+)$')
  local entry = redis.call('XRANGE', K.s[tonumber(band)], eid, eid)[1]
  if entry then older(field(entry[2], 'r')) end
end
local due = redis.call('ZCOUNT', K.delayed, '-inf', now)
if due > 0 then older(redis.call('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')[2]) end
local totals = redis.call('HMGET', K.stats, 'enq', 'done', 'readd')
return {
  ready + expired + due,
  redis.call('ZCARD', K.delayed) - due,
  math.max(0, pel - expired),
  redis.call('ZCARD', K.dead),
  oldest,
  now,
  added + (tonumber(totals[1]) or 0) - (tonumber(totals[3]) or 0),
  tonumber(totals[2]) or 0,
}
