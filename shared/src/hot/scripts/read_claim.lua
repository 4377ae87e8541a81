-- The current state of every id in a claim's saving-set. KEYS: 1 saving, 2 objects, 3 mtimes.
-- Returns {ids, jsons, mtimes}; a missing json means the object was deleted.
local ids = redis.call('SMEMBERS', KEYS[1])
if #ids == 0 then return { {}, {}, {} } end
return { ids, redis.call('HMGET', KEYS[2], unpack(ids)), redis.call('HMGET', KEYS[3], unpack(ids)) }
