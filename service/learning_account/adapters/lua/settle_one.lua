-- ARGV: 1 the version the caller last wrote or read, 2 the student id, 3 the held index's score
-- ('' when nothing is held), 4 the published digests (DIGEST bytes each, concatenated).

local function check_settle(k, nk, b, na)
  if nk ~= 1 or na ~= 4 then return 'settle: the arguments do not match the keys' end
  if A[b + 3] ~= '' and not is_number(A[b + 3]) then
    return 'settle: the held index score is not a number'
  end
  if #A[b + 4] % DIGEST ~= 0 then return 'settle: a digest is not ' .. DIGEST .. ' bytes' end
  if not of_type(K[k], 'hash', 'none') then return 'settle: the account is not a hash' end
  return nil
end

local function settle_one(k, nk, b, na, index)
  local key, published = K[k], A[b + 4]
  local pending = redis.call('HGET', key, 'p') or ''
  if pending ~= '' and published ~= '' then
    local kept = {}
    for at = 1, #pending, DIGEST do
      local digest = string.sub(pending, at, at + DIGEST - 1)
      if not has_digest(published, digest) then kept[#kept + 1] = digest end
    end
    pending = table.concat(kept)
    if pending == '' then
      redis.call('HDEL', key, 'p')
    else
      redis.call('HSET', key, 'p', pending)
    end
  end
  -- a write since then set the index itself, from the state it wrote
  if index and (redis.call('HGET', key, 'v') or '') == A[b + 1] then
    local student = A[b + 2]
    if pending ~= '' then
      redis.call('ZADD', index, 0, student)
    elseif A[b + 3] ~= '' then
      redis.call('ZADD', index, A[b + 3], student)
    else
      redis.call('ZREM', index, student)
    end
  end
  return pending ~= '' and 1 or 0
end
