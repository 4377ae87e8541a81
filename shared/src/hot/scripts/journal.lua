-- Journal entries from a seq on (that seq's own entry first, if the journal holds it), with the project's seq and
-- savedSeq read at the same instant.
-- KEYS: 1 meta, 2 journal. ARGV: 1 after (seq), 2 most entries to return after it.
-- Returns false when the project is not loaded, else {seq, savedSeq, {{id, {field, value, ...}}, ...}}.
local meta = redis.call('HMGET', KEYS[1], 'seq', 'savedSeq')
if not meta[1] then return false end
local entries = {}
if tonumber(ARGV[1]) <= tonumber(meta[1]) then
  entries = redis.call('XRANGE', KEYS[2], ARGV[1] .. '-0', '+', 'COUNT', tonumber(ARGV[2]) + 1)
end
return { meta[1], meta[2] or '0', entries }
