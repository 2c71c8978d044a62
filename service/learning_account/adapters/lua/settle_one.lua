-- ARGV: 1 the version the caller last wrote or read, 2 the student id, 3 the held index's score
-- ('' when nothing is held), 4 the published digests (DIGEST bytes each, concatenated).

local function check_settle(keys, argv)
  if #keys ~= 1 or #argv ~= 4 then return 'settle: the arguments do not match the keys' end
  if argv[3] ~= '' and not is_number(argv[3]) then
    return 'settle: the held index score is not a number'
  end
  if #argv[4] % DIGEST ~= 0 then return 'settle: a digest is not ' .. DIGEST .. ' bytes' end
  if not of_type(keys[1], 'hash', 'none') then return 'settle: the account is not a hash' end
  return nil
end

local function settle_one(keys, argv, index)
  local pending = redis.call('HGET', keys[1], 'p') or ''
  if pending ~= '' and argv[4] ~= '' then
    local kept = {}
    for at = 1, #pending, DIGEST do
      local digest = string.sub(pending, at, at + DIGEST - 1)
      if not has_digest(argv[4], digest) then kept[#kept + 1] = digest end
    end
    pending = table.concat(kept)
    if pending == '' then
      redis.call('HDEL', keys[1], 'p')
    else
      redis.call('HSET', keys[1], 'p', pending)
    end
  end
  -- a write since then set the index itself, from the state it wrote
  if index and (redis.call('HGET', keys[1], 'v') or '') == argv[1] then
    if pending ~= '' then
      redis.call('ZADD', index, 0, argv[2])
    elseif argv[3] ~= '' then
      redis.call('ZADD', index, argv[3], argv[2])
    else
      redis.call('ZREM', index, argv[2])
    end
  end
  return pending ~= '' and 1 or 0
end
