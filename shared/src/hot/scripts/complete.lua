-- A save succeeded: drop the saving-set and the lease, if the claim is still ours, and raise savedSeq to the
-- claim's seq (never lower it: an older claim may complete after a newer one). The stamps of the claim's deletes
-- are saved now and forgotten, unless the id was edited again since (then the next claim needs its stamp).
-- An object the store refused (held back) is forgotten once a newer version of it is saved (its stamp moved on).
-- The claim's seq was persisted in the durable store before this runs: it is recorded as `persistedSeq`.
-- KEYS: 1 saving, 2 lease, 3 lease index, 4 meta, 5 objects, 6 mtimes, 7 changed, 8 refused, 9 size index,
-- 10 saving index, 11 channel. ARGV: 1 token, 2 project, 3 claim seq, 4 publish command (PUBLISH, or SPUBLISH on a
-- cluster), 5 origin. A raise of savedSeq is announced to every client
-- of the project as an ephemeral `saved` frame.
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[1] then return 0 end
local any_refused = redis.call('EXISTS', KEYS[8]) == 1
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if any_refused then
    local held = redis.call('HGET', KEYS[8], id)
    if held and held ~= redis.call('HGET', KEYS[6], id) then redis.call('HDEL', KEYS[8], id) end
  end
  if redis.call('HEXISTS', KEYS[5], id) == 0 and redis.call('SISMEMBER', KEYS[7], id) == 0 then
    redis.call('HDEL', KEYS[6], id)
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[10], ARGV[2])
redis.call('ZADD', KEYS[9], tonumber(redis.call('HGET', KEYS[4], 'bytes')) or 0, ARGV[2])
if tonumber(redis.call('HGET', KEYS[4], 'persistedSeq') or '0') < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[4], 'persistedSeq', ARGV[3])
end
if tonumber(redis.call('HGET', KEYS[4], 'savedSeq') or '0') < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[4], 'savedSeq', ARGV[3])
  redis.call(ARGV[4], KEYS[11], ARGV[5] .. '\n0\n\n{"type":"saved","seq":' .. ARGV[3] .. '}')
end
return 1
