-- Stages one chunk of a cold load's objects (a big project is installed in chunks, the last by `load.lua`).
-- KEYS: 1 objects, 2 mtimes, 3 meta. ARGV: (id, json, mtime) triples.
-- Returns 0 once the project is loaded (by another load): from then on its objects are edited, and a staged
-- older copy must not be written over them. Staged objects are invisible until meta exists.
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
for i = 1, #ARGV, 3 do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 2])
end
return 1
