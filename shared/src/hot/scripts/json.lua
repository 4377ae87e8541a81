-- A lossless JSON helper for merge patches inside Redis.
-- Redis's cjson rewrites numbers (14 digits) and turns [] into {}, which would corrupt free-form client data.
-- Instead we never decode values: we split the top level of an object into raw key and value texts, merging
-- recursively only where a patch recurses. Input is always serde_json's compact output (no whitespace).
local function skip_string(s, i)
  local j = i + 1
  while true do
    local k = string.find(s, '["\\]', j)
    if not k then error('canvas: unterminated JSON string') end
    if string.byte(s, k) == 92 then j = k + 2 else return k + 1 end
  end
end

local function skip_value(s, i)
  local c = string.sub(s, i, i)
  if c == '"' then return skip_string(s, i) end
  if c == '{' or c == '[' then
    local depth, j = 0, i
    while true do
      local k = string.find(s, '[%[%]{}"]', j)
      if not k then error('canvas: unbalanced JSON') end
      local d = string.sub(s, k, k)
      if d == '"' then
        j = skip_string(s, k)
      else
        if d == '{' or d == '[' then depth = depth + 1 else depth = depth - 1 end
        j = k + 1
        if depth == 0 then return j end
      end
    end
  end
  return string.find(s, '[,}%]]', i) or (#s + 1)
end

local function parse_object(s)
  local obj = { keys = {}, vals = {} }
  if string.sub(s, 1, 1) ~= '{' then error('canvas: not a JSON object') end
  local i = 2
  if string.sub(s, i, i) == '}' then return obj end
  while true do
    local kend = skip_string(s, i)
    local key = string.sub(s, i, kend - 1)
    local vend = skip_value(s, kend + 1)
    if obj.vals[key] == nil then obj.keys[#obj.keys + 1] = key end
    obj.vals[key] = string.sub(s, kend + 1, vend - 1)
    if string.sub(s, vend, vend) == '}' then return obj end
    i = vend + 1
  end
end

local function serialize(obj)
  local parts, seen = {}, {}
  for _, k in ipairs(obj.keys) do
    local v = obj.vals[k]
    if v ~= nil and not seen[k] then
      seen[k] = true
      parts[#parts + 1] = k .. ':' .. v
    end
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- RFC 7396 on raw texts: a value is parsed only where the patch recurses into it.
local merge_raw

-- Merges a parsed patch into a parsed object, in place.
local function merge_into(target, patch)
  for _, k in ipairs(patch.keys) do
    local v = patch.vals[k]
    if v == 'null' then
      target.vals[k] = nil
    else
      if target.vals[k] == nil then target.keys[#target.keys + 1] = k end
      target.vals[k] = merge_raw(target.vals[k], v)
    end
  end
end

merge_raw = function(target_raw, patch_raw)
  if string.sub(patch_raw, 1, 1) ~= '{' then return patch_raw end
  local target
  if target_raw and string.sub(target_raw, 1, 1) == '{' then
    target = parse_object(target_raw)
  else
    target = { keys = {}, vals = {} }
  end
  merge_into(target, parse_object(patch_raw))
  return serialize(target)
end
