-- Claims dirty projects for one saver. KEYS: 1 dirty index, 2 lease index.
-- ARGV: 1 now ms (empty: Redis' TIME, the one clock every saver's leases are judged on), 2 lease ms,
-- 3 token prefix, 4 max claims.
-- First takes over expired leases (a crashed saver's claims), then the oldest dirty projects not under a live
-- lease. Each claim moves the project's changed-set into its saving-set (merging with a crashed claim's), so
-- new edits start a new changed-set and re-mark the project dirty. Each claim carries the project's seq at claim
-- time: every edit up to it is in the claim.
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local lease, prefix, max = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local claimed = {}

local function take(project, dirty_score)
  local base = 'canvas:{' .. project .. '}:'
  local changed, saving, lease_key = base .. 'changed', base .. 'saving', base .. 'lease'
  local since = dirty_score
  local previous = redis.call('HGET', lease_key, 'since')
  if previous and (not since or tonumber(previous) < since) then since = tonumber(previous) end
  if not since then since = now end
  if redis.call('EXISTS', changed) == 1 then
    if redis.call('EXISTS', saving) == 1 then
      redis.call('SUNIONSTORE', saving, saving, changed)
      redis.call('DEL', changed)
    else
      redis.call('RENAME', changed, saving)
    end
  end
  local seq = redis.call('HGET', base .. 'meta', 'seq') or '0'
  local token = prefix .. ':' .. (#claimed + 1)
  redis.call('ZREM', KEYS[1], project)
  redis.call('ZADD', KEYS[2], now + lease, project)
  redis.call('HSET', lease_key, 'token', token, 'since', string.format('%d', since))
  claimed[#claimed + 1] = { project, token, string.format('%d', since), seq }
end

for _, project in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, max)) do
  local score = redis.call('ZSCORE', KEYS[1], project)
  take(project, score and tonumber(score) or nil)
end

local offset, window, scanned = 0, 100, 0
while #claimed < max and scanned < 5000 do
  local batch = redis.call('ZRANGE', KEYS[1], offset, offset + window - 1, 'WITHSCORES')
  if #batch == 0 then break end
  local skipped = 0
  for i = 1, #batch, 2 do
    if #claimed >= max then break end
    local project, score = batch[i], tonumber(batch[i + 1])
    local until_ms = redis.call('ZSCORE', KEYS[2], project)
    if until_ms and tonumber(until_ms) > now then
      skipped = skipped + 1
    else
      take(project, score)
    end
  end
  -- claimed entries left the index; skipped ones stay, so the next window starts after them
  offset = offset + skipped
  scanned = scanned + #batch / 2
end
return claimed
