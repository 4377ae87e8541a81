-- Extends a claim's lease if the claim is still ours. KEYS: 1 lease, 2 lease index.
-- ARGV: 1 token, 2 project, 3 new expiry ms.
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
