-- Claims one project for one saver, if it is still claimable: dirty and not under a live lease, or under an
-- expired lease (a crashed saver's claim, taken over). Moves the changed-set into the saving-set (merging with a
-- crashed claim's), so new edits start a new changed-set and re-mark the project dirty. The claim carries the
-- project's seq at claim time: every edit up to it is in the claim.
-- KEYS: 1 dirty index, 2 lease index, 3 saving index (of the bucket), 4 changed, 5 saving, 6 lease, 7 meta.
-- ARGV: 1 now ms (empty: Redis' TIME), 2 lease ms, 3 token, 4 project.
-- Returns {token, since, seq}, or false when the project is not claimable (any more).
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local project = ARGV[4]
local until_ms = redis.call('ZSCORE', KEYS[2], project)
if until_ms and tonumber(until_ms) > now then return false end
local dirty_score = redis.call('ZSCORE', KEYS[1], project)
if not dirty_score and not until_ms then return false end
local since = dirty_score and tonumber(dirty_score) or nil
local previous = redis.call('HGET', KEYS[6], 'since')
if previous and (not since or tonumber(previous) < since) then since = tonumber(previous) end
if not since then since = now end
if redis.call('EXISTS', KEYS[4]) == 1 then
  if redis.call('EXISTS', KEYS[5]) == 1 then
    redis.call('SUNIONSTORE', KEYS[5], KEYS[5], KEYS[4])
    redis.call('DEL', KEYS[4])
  else
    redis.call('RENAME', KEYS[4], KEYS[5])
  end
end
local seq = redis.call('HGET', KEYS[7], 'seq') or '0'
local since_text = string.format('%d', since)
redis.call('ZREM', KEYS[1], project)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), project)
redis.call('ZADD', KEYS[3], since, project)
redis.call('HSET', KEYS[6], 'token', ARGV[3], 'since', since_text)
return { ARGV[3], since_text, seq }
