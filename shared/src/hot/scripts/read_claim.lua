-- The current state of every id in a claim's saving-set. KEYS: 1 saving, 2 objects, 3 mtimes, 4 meta.
-- Returns {ids, jsons, stamps}; a missing json means the object was deleted (its stamp is the delete's).
-- A delete recorded before deletes kept their stamp has none: it gets the project's stamp, newer than any write
-- of it that can be in flight.
-- HMGET goes in chunks: Lua's unpack() fails beyond ~8000 values, and a project may hold 10,000 objects.
local ids = redis.call('SMEMBERS', KEYS[1])
if #ids == 0 then return { {}, {}, {} } end
local fallback = redis.call('HGET', KEYS[4], 'stamp')
if not fallback then
  local t = redis.call('TIME')
  fallback = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
local jsons, mtimes, chunk_size = {}, {}, 1000
for first = 1, #ids, chunk_size do
  local last = math.min(first + chunk_size - 1, #ids)
  local chunk = {}
  for i = first, last do chunk[#chunk + 1] = ids[i] end
  local js = redis.call('HMGET', KEYS[2], unpack(chunk))
  local ms = redis.call('HMGET', KEYS[3], unpack(chunk))
  for i = 1, #chunk do
    jsons[first + i - 1] = js[i]
    mtimes[first + i - 1] = ms[i] or fallback
  end
end
return { ids, jsons, mtimes }
