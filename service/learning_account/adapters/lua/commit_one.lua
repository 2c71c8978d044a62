-- ARGV: 1 expected version, 2 core, 3 outbox retention (ms), 4 number of year fields, 5 the held
-- index's score for this student (a number, '-' to remove, '' to leave it), 6 '1' when the steps'
-- outputs still wait for publication (their digests go to `p`), 7 the student id; then the year
-- fields (name, value), then per outputs key its entry and outputs. An entry is a digest with its
-- content digest (to its list of applied events: `k`, or `k:<prefix>` once split, as
-- `redis_layout.leaf` and `appended` say), or a digest alone (to `p` when pending, else to `d`).

-- the fields that may hold the list of an entry's digest, shallowest first
local function bucket_names(entry)
  local hex = string.gsub(string.sub(entry, 1, math.ceil(BUCKET_DEPTH / 2)), '.',
    function(c) return string.format('%02x', string.byte(c)) end)
  local names = {'k'}
  for n = 1, BUCKET_DEPTH do names[n + 1] = 'k:' .. string.sub(hex, 1, n) end
  return names
end

-- the list field of an entry's digest, what it holds, and its depth (`redis_layout.leaf`)
local function leaf(entry, lists)
  local names = bucket_names(entry)
  for depth = 0, BUCKET_DEPTH do
    local value = lists[names[depth + 1]]
    if not value then return names[depth + 1], '', depth end
    if value ~= SPLIT or depth == BUCKET_DEPTH then return names[depth + 1], value, depth end
  end
end

-- the list fields to set to add `entries`, in order, a list past BUCKET_ENTRIES split by the
-- next digit, and its parts again (`redis_layout.appended`); `lists` holds the fields read and
-- is updated
local function appended(entries, lists)
  local changed = {}
  for _, entry in ipairs(entries) do
    local name, listed, depth = leaf(entry, lists)
    listed = listed .. entry
    lists[name], changed[name] = listed, listed
    local grown = {{name, depth}}
    while #grown > 0 do
      name, depth = grown[#grown][1], grown[#grown][2]
      grown[#grown] = nil
      listed = changed[name]
      if #listed > BUCKET_ENTRIES * ENTRY and depth < BUCKET_DEPTH then
        lists[name], changed[name] = SPLIT, SPLIT
        local children = {}
        for at = 1, #listed, ENTRY do
          local moved = string.sub(listed, at, at + ENTRY - 1)
          local child = bucket_names(moved)[depth + 2]
          if not children[child] then grown[#grown + 1] = {child, depth + 1} end
          children[child] = (children[child] or '') .. moved
        end
        for child, now in pairs(children) do lists[child], changed[child] = now, now end
      end
    end
  end
  return changed
end

-- also reads the account (one HMGET) for commit_one, with the version it writes and where the
-- entries start: a key of another type fails the read (WRONGTYPE) here, not the write after it
local function check_commit(k, nk, b, na)
  local nfields = number_of(A[b + 4])
  if na < 7 or not nfields or nfields < 0 or nfields % 1 ~= 0
      or na ~= 7 + 2 * nfields + 2 * (nk - 1) then
    return 'commit: the arguments do not match the keys'
  end
  local retention = number_of(A[b + 3])
  if not retention or retention < 1 or retention % 1 ~= 0 then
    return 'commit: the outbox retention must be a whole number of milliseconds, at least 1'
  end
  local score, flag = A[b + 5], A[b + 6]
  if score ~= '' and score ~= '-' and not is_number(score) then
    return 'commit: the held index score is not a number'
  end
  if flag ~= '' and flag ~= '1' then
    return 'commit: the pending flag is neither empty nor 1'
  end
  for at = b + 8 + 2 * nfields, b + na, 2 do
    local size = #A[at]
    if flag == '1' and size ~= DIGEST then
      return 'commit: a pending digest is not ' .. DIGEST .. ' bytes'
    end
    if size ~= DIGEST and size ~= ENTRY then
      return 'commit: a digest is not ' .. DIGEST .. ' or ' .. ENTRY .. ' bytes'
    end
  end
  local stored = redis.pcall('HMGET', K[k], 'v', 'd', 'p', 'k')
  if stored.err then return 'commit: the account is not a hash' end
  local lists = {k = stored[4]}
  if stored[4] == SPLIT and flag ~= '1' then  -- the deeper lists of the entries' digests
    local names = {}
    for at = b + 8 + 2 * nfields, b + na, 2 do
      if #A[at] == ENTRY then
        local all = bucket_names(A[at])
        for n = 2, #all do names[#names + 1] = all[n] end
      end
    end
    if #names > 0 then
      local deeper = redis.call('HMGET', K[k], unpack(names))
      for i, name in ipairs(names) do lists[name] = deeper[i] end
    end
  end
  stored.lists = lists
  local current = stored[1]
  local version = 0
  if current then
    version = tonumber(current)
    if not version or version ~= version then
      return 'commit: the stored version is not a number'
    end
  end
  return nil, stored, version + 1, b + 8 + 2 * nfields
end

local function joined(listed, added)
  if not added then return nil end
  if listed then return listed .. added end
  return added
end

-- one write of the hash (and one SET per stored outputs): a Redis call from Lua costs more than
-- the work it does here. The reply: 0 when the version moved (nothing written), else 1, or 2
-- when digests of outputs that may not be published yet are pending.
local function commit_one(k, nk, b, na, index, stored, version, first)
  if (stored[1] or '') ~= A[b + 1] then
    return 0
  end
  local retention, pending_flag = A[b + 3], A[b + 6] == '1'
  local d, p
  local added = {}
  local at = first
  for i = k + 1, k + nk - 1 do
    local entry, outputs = A[at], A[at + 1]
    if pending_flag then
      p = p and p .. entry or entry
    elseif #entry == DIGEST then
      d = d and d .. entry or entry
    else
      added[#added + 1] = entry
    end
    if outputs ~= '' then
      redis.call('SET', K[i], outputs, 'PX', retention)
    end
    at = at + 2
  end
  d, p = joined(stored[2], d), joined(stored[3], p)
  local fields = {'s', A[b + 2], 'v', version}
  local n = 4
  if d then fields[n + 1], fields[n + 2], n = 'd', d, n + 2 end
  if p then fields[n + 1], fields[n + 2], n = 'p', p, n + 2 end
  if #added > 0 then
    for name, listed in pairs(appended(added, stored.lists)) do
      fields[n + 1], fields[n + 2], n = name, listed, n + 2
    end
  end
  for i = b + 8, first - 1 do
    n = n + 1
    fields[n] = A[i]
  end
  redis.call('HSET', K[k], unpack(fields, 1, n))
  local pending = p or stored[3] or ''
  if index then
    local student, score = A[b + 7], A[b + 5]
    if pending ~= '' then
      redis.call('ZADD', index, 0, student)
    elseif score == '-' then
      redis.call('ZREM', index, student)
    elseif score ~= '' then
      redis.call('ZADD', index, score, student)
    end
  end
  return pending ~= '' and 2 or 1
end
