-- One bucket's dirty projects for metrics: waiting (dirty index) and being saved (saving index), each once at
-- its oldest time. KEYS: 1 dirty index, 2 saving index.
-- Returns {count, ids and times (up to 100, oldest first, flat)}: the 100 oldest of the union are among the 100
-- oldest of each index.
local entries, at = {}, {}
for k = 1, 2 do
  local rows = redis.call('ZRANGE', KEYS[k], 0, 99, 'WITHSCORES')
  for i = 1, #rows, 2 do
    local project, score = rows[i], tonumber(rows[i + 1])
    if at[project] == nil then
      entries[#entries + 1] = project
      at[project] = score
    elseif score < at[project] then
      at[project] = score
    end
  end
end
table.sort(entries, function(a, b) return at[a] < at[b] end)
local flat = {}
for i = 1, math.min(#entries, 100) do
  flat[#flat + 1] = entries[i]
  flat[#flat + 1] = string.format('%d', at[entries[i]])
end
local count = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
  - redis.call('ZINTERCARD', 2, KEYS[1], KEYS[2])
return { count, flat }
