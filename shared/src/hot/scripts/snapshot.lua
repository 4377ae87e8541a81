-- A project's seq, savedSeq and objects, read atomically; a read counts as access (resident index).
-- KEYS: 1 objects, 2 meta, 3 resident index, 4 a fresh key for a copy of the objects. ARGV: 1 now ms, 2 project,
-- 3 most objects and 4 most bytes returned whole.
-- Returns false when the project is not loaded; else {seq, savedSeq, 'whole', object json...} for a project
-- within both bounds, or {seq, savedSeq, 'copied'} after copying the objects to KEYS[4] (expiring by itself) for
-- the caller to page through: no reply ever carries a whole big project.
local seq = redis.call('HGET', KEYS[2], 'seq')
if not seq then return false end
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[2])
local saved = redis.call('HGET', KEYS[2], 'savedSeq') or '0'
local count = redis.call('HLEN', KEYS[1])
local bytes = tonumber(redis.call('HGET', KEYS[2], 'bytes')) or 0
if count <= tonumber(ARGV[3]) and bytes <= tonumber(ARGV[4]) then
  local out = redis.call('HVALS', KEYS[1])
  table.insert(out, 1, 'whole')
  table.insert(out, 1, saved)
  table.insert(out, 1, seq)
  return out
end
redis.call('COPY', KEYS[1], KEYS[4], 'REPLACE')
redis.call('PEXPIRE', KEYS[4], 60000)
return { seq, saved, 'copied' }
