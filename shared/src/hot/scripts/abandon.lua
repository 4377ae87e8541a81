-- A save failed: merge the saving-set back into the changed-set and re-mark the project dirty at its
-- original time (ZADD LT keeps an even older mark). KEYS: 1 changed, 2 saving, 3 lease, 4 lease index,
-- 5 dirty index, 6 saving index. ARGV: 1 token, 2 project, 3 dirty since ms.
if redis.call('HGET', KEYS[3], 'token') ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('SUNIONSTORE', KEYS[1], KEYS[1], KEYS[2])
  redis.call('DEL', KEYS[2])
end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[6], ARGV[2])
redis.call('ZADD', KEYS[5], 'LT', ARGV[3], ARGV[2])
return 1
