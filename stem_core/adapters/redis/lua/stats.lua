-- stats.lua: counts of one queue, read-only and independent of its length.
--
-- KEYS: the queue's 18-key block (lib.lua). ARGV: none.
-- Per band: XLEN (live entries) minus the XPENDING count (leased) is undelivered.
-- Leases past their deadline and delayed messages past their due time count as
-- pending (the next claim takes them); the oldest ready time comes from each band's
-- first undelivered entry and those. Nothing is scanned: O(bands + log n).
-- Reply: {pending, delayed, inflight, dead, oldest ready time us or -1, now us, enq, done}.

local now = now_us()
local ready, pel, oldest = 0, 0, -1
local function older(r)
  r = tonumber(r)
  if r and (oldest < 0 or r < oldest) then oldest = r end
end
for band = 0, 9 do
  local s = stream(0, band)
  if redis.call('EXISTS', s) == 1 then
    local held = 0
    local ok, summary = pcall(redis.call, 'XPENDING', s, GROUP)
    if ok then held = summary[1] end
    ready = ready + redis.call('XLEN', s) - held
    pel = pel + held
    local head = first_new(s)
    if head then older(field(head[2], 'r')) end
  end
end
local expired = redis.call('ZCOUNT', KEYS[LEASES], '-inf', now)
if expired > 0 then
  local lid = redis.call('ZRANGEBYSCORE', KEYS[LEASES], '-inf', now, 'LIMIT', 0, 1)[1]
  local band, eid = string.match(lid, '^(%d):(.+)$')
  local entry = redis.call('XRANGE', stream(0, tonumber(band)), eid, eid)[1]
  if entry then older(field(entry[2], 'r')) end
end
local due = redis.call('ZCOUNT', KEYS[DELAYED], '-inf', now)
if due > 0 then older(redis.call('ZRANGE', KEYS[DELAYED], 0, 0, 'WITHSCORES')[2]) end
local totals = redis.call('HMGET', KEYS[STATS], 'enq', 'done')
return {
  ready + expired + due,
  redis.call('ZCARD', KEYS[DELAYED]) - due,
  math.max(0, pel - expired),
  redis.call('ZCARD', KEYS[DEAD]),
  oldest,
  now,
  tonumber(totals[1]) or 0,
  tonumber(totals[2]) or 0,
}
