-- A save succeeded: drop the saving-set and the lease, if the claim is still ours.
-- KEYS: 1 saving, 2 lease, 3 lease index. ARGV: 1 token, 2 project.
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
