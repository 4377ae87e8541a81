-- Installs a project read from the durable store unless it is already loaded: the last step of a cold load,
-- after `load_chunk.lua` staged all but the last chunk of its objects.
-- KEYS: 1 objects, 2 mtimes, 3 meta, 4 resident index, 5 size index, 6 cold load counter. ARGV: 1 seq floor, 2 now ms, 3 stamp floor (the newest
-- stamp the durable store holds for this project, tombstones included: new edits are stamped above it),
-- 4 project, 5 the project's total object bytes, then (id, json, mtime) triples. What seq the durable store holds
-- is not known here: an eviction persists the seq first unless a save recorded it (`persistedSeq`).
-- HSETNX so that nothing already in Redis (always newer than the durable copy) is overwritten.
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
for i = 6, #ARGV, 3 do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 2])
end
redis.call('HSET', KEYS[3], 'seq', ARGV[1], 'savedSeq', ARGV[1], 'loadedAt', ARGV[2], 'stamp', ARGV[3],
  'bytes', ARGV[5])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[4])
redis.call('INCR', KEYS[6])
return 1
