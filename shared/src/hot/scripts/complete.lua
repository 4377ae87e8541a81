-- A save succeeded: drop the saving-set and the lease, if the claim is still ours, and raise savedSeq to the
-- claim's seq (never lower it: an older claim may complete after a newer one).
-- KEYS: 1 saving, 2 lease, 3 lease index, 4 meta. ARGV: 1 token, 2 project, 3 claim seq.
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[2])
if tonumber(redis.call('HGET', KEYS[4], 'savedSeq') or '0') < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[4], 'savedSeq', ARGV[3])
end
return 1
