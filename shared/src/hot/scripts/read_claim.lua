-- One page of the current state of the ids in a claim's saving-set. KEYS: 1 saving, 2 objects, 3 mtimes, 4 meta.
-- ARGV: 1 SSCAN cursor, 2 ids of that cursor's batch already returned, 3 max ids, 4 max JSON bytes.
-- Returns {next cursor, next skip, ids, jsons, stamps}; an empty next cursor means this was the last page. A missing
-- json means the object was deleted (its stamp is the delete's).
-- Why a cursor plus a skip: SSCAN hands out batches of its own size, and a page must stop inside one when the bounds
-- are reached. Nothing changes the saving-set while its claim is held (edits go to the changed-set), so SSCAN from
-- the same cursor returns the same batch again, and skipping what was already returned yields each id once.
-- A page stops before the id that would take it past the byte bound, but always holds at least one id.
-- A delete recorded before deletes kept their stamp has none: it gets the project's stamp, newer than any write
-- of it that can be in flight.
local cursor, skip = ARGV[1], tonumber(ARGV[2])
local max_items, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local ids, jsons, mtimes, bytes = {}, {}, {}, 0
local fallback
local function stamp_of(id)
  local stamp = redis.call('HGET', KEYS[3], id)
  if stamp then return stamp end
  if not fallback then
    fallback = redis.call('HGET', KEYS[4], 'stamp')
    if not fallback then
      local t = redis.call('TIME')
      fallback = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
    end
  end
  return fallback
end
while true do
  local reply = redis.call('SSCAN', KEYS[1], cursor, 'COUNT', 100)
  local batch = reply[2]
  for i = skip + 1, #batch do
    local id = batch[i]
    local json = redis.call('HGET', KEYS[2], id)
    local size = json and #json or 0
    if #ids >= max_items or (#ids > 0 and bytes + size > max_bytes) then
      return { cursor, i - 1, ids, jsons, mtimes }
    end
    local n = #ids + 1
    ids[n], jsons[n], mtimes[n] = id, json, stamp_of(id)
    bytes = bytes + size
  end
  if reply[1] == '0' then return { '', 0, ids, jsons, mtimes } end
  cursor, skip = reply[1], 0
end
