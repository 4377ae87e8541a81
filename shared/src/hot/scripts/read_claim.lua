-- The current state of every id in a claim's saving-set. KEYS: 1 saving, 2 objects, 3 mtimes.
-- Returns {ids, jsons, mtimes}; a missing json means the object was deleted.
-- HMGET goes in chunks: Lua's unpack() fails beyond ~8000 values, and a project may hold 10,000 objects.
local ids = redis.call('SMEMBERS', KEYS[1])
if #ids == 0 then return { {}, {}, {} } end
local jsons, mtimes, chunk_size = {}, {}, 1000
for first = 1, #ids, chunk_size do
  local last = math.min(first + chunk_size - 1, #ids)
  local chunk = {}
  for i = first, last do chunk[#chunk + 1] = ids[i] end
  local js = redis.call('HMGET', KEYS[2], unpack(chunk))
  local ms = redis.call('HMGET', KEYS[3], unpack(chunk))
  for i = 1, #chunk do
    jsons[first + i - 1] = js[i]
    mtimes[first + i - 1] = ms[i]
  end
end
return { ids, jsons, mtimes }
