-- Installs a project read from the durable store unless it is already loaded.
-- KEYS: 1 objects, 2 mtimes, 3 meta. ARGV: 1 seq floor, 2 now ms, 3 stamp floor (the newest stamp the durable
-- store holds for this project, tombstones included: new edits are stamped above it), then (id, json, mtime)
-- triples. HSETNX so that nothing already in Redis (always newer than the durable copy) is overwritten.
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
for i = 4, #ARGV, 3 do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 2])
end
redis.call('HSET', KEYS[3], 'seq', ARGV[1], 'savedSeq', ARGV[1], 'loadedAt', ARGV[2], 'stamp', ARGV[3])
return 1
