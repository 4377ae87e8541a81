-- A project's seq, savedSeq and objects, read atomically. KEYS: 1 objects, 2 meta.
-- Returns false when the project is not loaded, else {seq, savedSeq, object json...}.
local seq = redis.call('HGET', KEYS[2], 'seq')
if not seq then return false end
local out = redis.call('HVALS', KEYS[1])
table.insert(out, 1, redis.call('HGET', KEYS[2], 'savedSeq') or '0')
table.insert(out, 1, seq)
return out
