-- The projects of one bucket a saver may claim now: expired leases (a crashed saver's claims) by expiry, then
-- the oldest dirty projects not under a live lease. Reads only; each is then claimed by claim.lua, which
-- checks again. KEYS: 1 the bucket's dirty index, 2 its lease index.
-- ARGV: 1 now ms (empty: Redis' TIME, the one clock every saver's leases are judged on), 2 max projects.
-- Returns {ids, scores (lease expiry or dirty time), how many of them are expired leases (they come first)}.
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local max = tonumber(ARGV[2])
local ids, scores, seen = {}, {}, {}
local expired = redis.call('ZRANGE', KEYS[2], '-inf', now, 'BYSCORE', 'LIMIT', 0, max, 'WITHSCORES')
for i = 1, #expired, 2 do
  ids[#ids + 1] = expired[i]
  scores[#scores + 1] = expired[i + 1]
  seen[expired[i]] = true
end
local leases = #ids
local offset, window, scanned = 0, 100, 0
while #ids < max and scanned < 5000 do
  local batch = redis.call('ZRANGE', KEYS[1], offset, offset + window - 1, 'WITHSCORES')
  if #batch == 0 then break end
  for i = 1, #batch, 2 do
    if #ids >= max then break end
    local project = batch[i]
    local until_ms = redis.call('ZSCORE', KEYS[2], project)
    if not seen[project] and not (until_ms and tonumber(until_ms) > now) then
      ids[#ids + 1] = project
      scores[#scores + 1] = batch[i + 1]
      seen[project] = true
    end
  end
  offset = offset + window
  scanned = scanned + #batch / 2
end
return { ids, scores, leases }
