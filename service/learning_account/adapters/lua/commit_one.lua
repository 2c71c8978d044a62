-- ARGV: 1 expected version, 2 core, 3 outbox retention (ms), 4 number of year fields, 5 the held
-- index's score for this student (a number, '-' to remove, '' to leave it), 6 '1' when the steps'
-- outputs still wait for publication (their digests go to `p`), 7 the student id; then the year
-- fields (name, value), then per outputs key its entry and outputs. An entry is a digest with its
-- content digest (to `k`), or a digest alone (to `p` when pending, else to `d`).

local function check_commit(keys, argv)
  local nfields = tonumber(argv[4])
  if #argv < 7 or not nfields or nfields < 0 or nfields % 1 ~= 0
      or #argv ~= 7 + 2 * nfields + 2 * (#keys - 1) then
    return 'commit: the arguments do not match the keys'
  end
  local retention = tonumber(argv[3])
  if not retention or retention < 1 or retention % 1 ~= 0 then
    return 'commit: the outbox retention must be a whole number of milliseconds, at least 1'
  end
  if argv[5] ~= '' and argv[5] ~= '-' and not is_number(argv[5]) then
    return 'commit: the held index score is not a number'
  end
  if argv[6] ~= '' and argv[6] ~= '1' then
    return 'commit: the pending flag is neither empty nor 1'
  end
  for at = 8 + 2 * nfields, #argv, 2 do
    local size = #argv[at]
    if argv[6] == '1' and size ~= DIGEST then
      return 'commit: a pending digest is not ' .. DIGEST .. ' bytes'
    end
    if size ~= DIGEST and size ~= ENTRY then
      return 'commit: a digest is not ' .. DIGEST .. ' or ' .. ENTRY .. ' bytes'
    end
  end
  -- a key of another type fails the read (WRONGTYPE), not the write after it
  local current = redis.pcall('HGET', keys[1], 'v')
  if type(current) == 'table' then return 'commit: the account is not a hash' end
  if current and not is_number(current) then return 'commit: the stored version is not a number' end
  return nil
end

-- one read and one write of the hash: a Redis call from Lua costs more than the work it does here
local function commit_one(keys, argv, index)
  local stored = redis.call('HMGET', keys[1], 'v', 'd', 'k', 'p')
  local current = stored[1]
  if (current or '') ~= argv[1] then
    return 0
  end
  local fields = {'s', argv[2], 'v', (tonumber(current) or 0) + 1}
  local at = 8
  for i = 1, tonumber(argv[4]) do
    fields[#fields + 1] = argv[at]
    fields[#fields + 1] = argv[at + 1]
    at = at + 2
  end
  local retention = tonumber(argv[3])
  local added = {d = {}, k = {}, p = {}}
  for i = 2, #keys do
    local list = argv[6] == '1' and 'p' or (#argv[at] == DIGEST and 'd' or 'k')
    local entries = added[list]
    entries[#entries + 1] = argv[at]
    if argv[at + 1] ~= '' then
      redis.call('SET', keys[i], argv[at + 1], 'PX', retention)
    end
    at = at + 2
  end
  local pending = stored[4] or ''
  for n, list in ipairs({'d', 'k', 'p'}) do
    if #added[list] > 0 then
      local listed = (stored[n + 1] or '') .. table.concat(added[list])
      fields[#fields + 1] = list
      fields[#fields + 1] = listed
      if list == 'p' then pending = listed end
    end
  end
  redis.call('HSET', keys[1], unpack(fields))
  if index then
    if pending ~= '' then
      redis.call('ZADD', index, 0, argv[7])
    elseif argv[5] == '-' then
      redis.call('ZREM', index, argv[7])
    elseif argv[5] ~= '' then
      redis.call('ZADD', index, argv[5], argv[7])
    end
  end
  return {fields[4], pending ~= '' and 1 or 0}
end
