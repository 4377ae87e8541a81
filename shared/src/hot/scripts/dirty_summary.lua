-- Dirty projects for metrics: waiting (dirty index) and being saved (lease index).
-- KEYS: 1 dirty index, 2 lease index. Returns {count, oldest ms or -1, ids (up to 100, oldest first)}.
local entries, seen = {}, {}
local waiting = redis.call('ZRANGE', KEYS[1], 0, 99, 'WITHSCORES')
for i = 1, #waiting, 2 do
  entries[#entries + 1] = { waiting[i], tonumber(waiting[i + 1]) }
  seen[waiting[i]] = true
end
local extra = 0
for _, project in ipairs(redis.call('ZRANGE', KEYS[2], 0, 999)) do
  local since = redis.call('HGET', 'canvas:{' .. project .. '}:lease', 'since')
  if redis.call('ZSCORE', KEYS[1], project) == false then
    extra = extra + 1
  end
  if not seen[project] and since then
    entries[#entries + 1] = { project, tonumber(since) }
    seen[project] = true
  elseif since then
    for _, e in ipairs(entries) do
      if e[1] == project and tonumber(since) < e[2] then e[2] = tonumber(since) end
    end
  end
end
table.sort(entries, function(a, b) return a[2] < b[2] end)
local ids = {}
for i = 1, math.min(#entries, 100) do ids[i] = entries[i][1] end
local oldest = -1
if #entries > 0 then oldest = string.format('%d', entries[1][2]) end
return { redis.call('ZCARD', KEYS[1]) + extra, oldest, ids }
