-- Raises a loaded project's seq to at least a floor, so a rolled-back Redis never reuses a seq a client saw.
-- KEYS: 1 meta. ARGV: 1 floor. Returns the seq afterwards, or false when the project is not loaded.
local seq = redis.call('HGET', KEYS[1], 'seq')
if not seq then return false end
if tonumber(seq) < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'seq', ARGV[1])
  return tonumber(ARGV[1])
end
return tonumber(seq)
