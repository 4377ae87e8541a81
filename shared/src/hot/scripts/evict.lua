-- Removes an idle, fully saved project from the hot state, all of its keys at once, re-checking everything
-- inside the script so that no edit, join, claim or cold load can interleave with it: an edit or read after it
-- finds the project not loaded and loads it again from the durable store.
-- KEYS: 1 resident index, 2 dirty index, 3 lease index, 4 size index, 5 meta, 6 changed, 7 saving, 8 lease, 9 present,
--       10 refused, then every key of the project (deleted).
-- ARGV: 1 project, 2 idle before ms (last access must be at or before it), 3 now ms, 4 a seq the caller knows
--       is persisted in the durable store.
-- Returns {status, seq}: evicted | busy (not idle, unsaved, claimed, held back or in use) | gone (not loaded) |
-- unpersisted (seq is above every seq known persisted: persist it, then ask again with it).
local project = ARGV[1]
if redis.call('EXISTS', KEYS[5]) == 0 then
  -- Not loaded, or a cold load is still staging its objects: leave its keys alone.
  redis.call('ZREM', KEYS[1], project)
  redis.call('ZREM', KEYS[4], project)
  return { 'gone', 0 }
end
local last = redis.call('ZSCORE', KEYS[1], project)
if not last or tonumber(last) > tonumber(ARGV[2]) then return { 'busy', 0 } end
for _, present_until in ipairs(redis.call('HVALS', KEYS[9])) do
  if tonumber(present_until) > tonumber(ARGV[3]) then
    -- In use for as long as a client stays: its idle time starts again when it leaves.
    redis.call('ZADD', KEYS[1], ARGV[3], project)
    return { 'busy', 0 }
  end
end
if redis.call('HLEN', KEYS[10]) > 0 then
  -- An object the durable store refused lives only here.
  redis.call('ZADD', KEYS[1], ARGV[3], project)
  return { 'busy', 0 }
end
if redis.call('ZSCORE', KEYS[2], project) or redis.call('ZSCORE', KEYS[3], project)
  or redis.call('EXISTS', KEYS[6], KEYS[7], KEYS[8]) > 0 then
  return { 'busy', 0 }
end
local seq = tonumber(redis.call('HGET', KEYS[5], 'seq')) or 0
local persisted = math.max(tonumber(redis.call('HGET', KEYS[5], 'persistedSeq')) or 0, tonumber(ARGV[4]))
if seq > persisted then return { 'unpersisted', seq } end
redis.call('DEL', unpack(KEYS, 11))
redis.call('ZREM', KEYS[1], project)
redis.call('ZREM', KEYS[4], project)
return { 'evicted', seq }
