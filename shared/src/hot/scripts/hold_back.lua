-- Records objects the durable store refused, while the claim is still ours: they live only in the hot state,
-- so the project is not evicted until each has changed and been saved. KEYS: 1 lease, 2 refused.
-- ARGV: 1 token, then (id, stamp of the refused version) pairs.
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
return 1
