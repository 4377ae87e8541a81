-- Applies one edit to a project atomically, in one round trip.
-- KEYS: 1 objects, 2 mtimes, 3 meta, 4 changed, 5 dirty index, 6 journal, 7 resident index (both of the project's
--       bucket), 8 channel
-- ARGV: 1 op (c|u|d), 2 object id, 3 object id as JSON, 4 body (create: object JSON without version;
--       update: patch JSON), 5 now ms, 6 `by` as JSON, 7 origin connection id, 8 max object bytes,
--       9 max objects, 10 publish command (PUBLISH, or SPUBLISH on a cluster), 11 project id, 12 traceparent (may be empty),
--       13 the version an update or delete requires (empty: unconditional), 14 journal length (0: no journal),
--       15 max project bytes, 16 the highest seq the caller has seen for the project (its floor),
--       17 the object's text the caller merged against (empty: none), 18 the caller's merged text (update),
--       19 the version of 18 (update) or of 17 (delete)
-- Returns {status, version, seq, object JSON after a create or update, merged}; status is ok | not_loaded | exists | not_found | too_large | too_many | bad_type |
-- project_too_large | version_mismatch (then version is the object's current one). When the object's stored text is
-- still ARGV[17] the caller's merge is the one this script would do (json.lua, same texts, same bytes): it is
-- written as it is, without parsing anything, merged is 'caller' and the object JSON is left out (the caller has it).
local meta = redis.call('HMGET', KEYS[3], 'seq', 'bytes', 'stamp')
if not meta[1] and redis.call('EXISTS', KEYS[3]) == 0 then return { 'not_loaded', 0, 0 } end
local op, id = ARGV[1], ARGV[2]
local current = redis.call('HGET', KEYS[1], id)
local version, body = 0, nil
local by_caller = current and ARGV[17] ~= '' and current == ARGV[17]

if op == 'c' then
  if current then return { 'exists', 0, 0 } end
  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[9]) then return { 'too_many', 0, 0 } end
  version = 1
  body = string.sub(ARGV[4], 1, -2) .. ',"version":1}'
elseif op == 'u' then
  if not current then return { 'not_found', 0, 0 } end
  if by_caller then
    version = tonumber(ARGV[19])
    body = ARGV[18]
  else
    local obj = parse_object(current)
    local current_version = tonumber(obj.vals['"version"']) or 0
    if ARGV[13] ~= '' and tonumber(ARGV[13]) ~= current_version then
      return { 'version_mismatch', current_version, 0 }
    end
    local patch = parse_object(ARGV[4])
    local new_type = patch.vals['"type"']
    if new_type ~= nil and new_type ~= obj.vals['"type"'] then return { 'bad_type', 0, 0 } end
    version = current_version + 1
    -- One parse of the object and of the patch, one serialization.
    merge_into(obj, patch)
    if obj.vals['"version"'] == nil then obj.keys[#obj.keys + 1] = '"version"' end
    obj.vals['"version"'] = string.format('%d', version)
    body = serialize(obj)
  end
else
  if not current then return { 'not_found', 0, 0 } end
  if ARGV[13] ~= '' then
    local current_version
    if by_caller then
      current_version = tonumber(ARGV[19])
    else
      current_version = tonumber(parse_object(current).vals['"version"']) or 0
    end
    if tonumber(ARGV[13]) ~= current_version then return { 'version_mismatch', current_version, 0 } end
  end
end

if body and #body > tonumber(ARGV[8]) then return { 'too_large', 0, 0 } end
-- meta's `bytes` is the project's total object JSON; only an edit that grows it is held to the budget.
local grows = (body and #body or 0) - (current and #current or 0)
local bytes = (tonumber(meta[2]) or 0) + grows
if grows > 0 and bytes > tonumber(ARGV[15]) then return { 'project_too_large', 0, 0 } end

-- A seq at or below one the caller has already seen means Redis lost its tail (AOF, failover): continue above it,
-- never hand out a seq twice.
local seq = math.max((tonumber(meta[1]) or 0) + 1, (tonumber(ARGV[16]) or 0) + 1)
-- The edit's stamp orders the durable writes of this id: strictly above every earlier stamp of the project, so
-- a later edit always wins in DynamoDB whatever the clocks. A delete keeps its stamp until it is saved.
local stamp = string.format('%d', math.max(tonumber(ARGV[5]), (tonumber(meta[3]) or 0) + 1))
if grows ~= 0 then
  redis.call('HSET', KEYS[3], 'seq', seq, 'stamp', stamp, 'bytes', bytes)
else
  redis.call('HSET', KEYS[3], 'seq', seq, 'stamp', stamp)
end
redis.call('HSET', KEYS[2], id, stamp)
if op == 'd' then
  redis.call('HDEL', KEYS[1], id)
else
  redis.call('HSET', KEYS[1], id, body)
end
redis.call('SADD', KEYS[4], id)
redis.call('ZADD', KEYS[5], 'NX', ARGV[5], ARGV[11])
redis.call('ZADD', KEYS[7], ARGV[5], ARGV[11])

-- The broadcast frame, in the layout of `Broadcast` in protocol.rs byte for byte (a conformance test checks).
local seq_text = string.format('%d', seq)
local tail = ',"seq":' .. seq_text .. ',"by":' .. ARGV[6] .. '}'
local frame
if op == 'c' then
  frame = '{"type":"created","object":' .. body .. tail
elseif op == 'u' then
  frame = '{"type":"updated","id":' .. ARGV[3] .. ',"patch":' .. ARGV[4] .. ',"version":' .. version .. tail
else
  frame = '{"type":"deleted","id":' .. ARGV[3] .. tail
end
if ARGV[14] ~= '0' then
  -- One more than the journal length: a resume from N needs N's own entry besides the ones after it. `~` trims
  -- whole stream nodes only: cheaper, and it never leaves fewer entries than asked.
  local keep, entry_id = tonumber(ARGV[14]) + 1, seq_text .. '-0'
  local added = redis.pcall('XADD', KEYS[6], 'MAXLEN', '~', keep, entry_id, 'o', ARGV[7], 'f', frame)
  if type(added) == 'table' and added.err then
    -- A journal left from an earlier life of the project, with higher seqs than this one: start it afresh.
    redis.call('DEL', KEYS[6])
    redis.call('XADD', KEYS[6], 'MAXLEN', '~', keep, entry_id, 'o', ARGV[7], 'f', frame)
  end
end
redis.call(ARGV[10], KEYS[8], ARGV[7] .. '\n' .. seq_text .. '\n' .. ARGV[12] .. '\n' .. frame)
if by_caller then return { 'ok', version, seq, '', 'caller' } end
return { 'ok', version, seq, body or '', 'script' }
