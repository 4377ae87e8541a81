-- Extends a claim's lease if the claim is still ours. KEYS: 1 lease, 2 lease index.
-- ARGV: 1 token, 2 project, 3 lease ms, 4 now ms (empty: Redis' TIME, the one clock every saver's leases are
-- judged on).
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
return 1
