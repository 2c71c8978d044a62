-- Apply `one` to every student of the call (a single Redis: the per-command cost of the client is
-- paid once, and the held index is written in the same script as the accounts): ARGV[1] students,
-- then per student its number of keys and of arguments, then all arguments; KEYS in the same
-- student order, then the held index when `with_index`. With `check`, every student is checked
-- before the first write.

local function for_each_student(one, check, with_index)
  local index = nil
  if with_index then index = KEYS[#KEYS] end
  local count = tonumber(ARGV[1])
  if not count or count < 0 or count % 1 ~= 0 or #ARGV < 1 + 2 * count then
    return redis.error_reply('the student counts do not match the arguments')
  end
  local key_at, arg_at = 1, 2 + 2 * count
  local calls = {}
  for s = 1, count do
    local nkeys, nargs = tonumber(ARGV[2 * s]), tonumber(ARGV[2 * s + 1])
    if not nkeys or not nargs or nkeys < 0 or nargs < 0 then
      return redis.error_reply('the student counts do not match the arguments')
    end
    local keys, argv = {}, {}
    for i = 1, nkeys do keys[i] = KEYS[key_at + i - 1] end
    for i = 1, nargs do argv[i] = ARGV[arg_at + i - 1] end
    calls[s] = {keys, argv}
    key_at, arg_at = key_at + nkeys, arg_at + nargs
  end
  if key_at - 1 ~= #KEYS - (with_index and 1 or 0) or arg_at - 1 ~= #ARGV then
    return redis.error_reply('the student counts do not match the arguments')
  end
  if check then
    if index and not of_type(index, 'zset', 'none') then
      return redis.error_reply('the held index is not a sorted set')
    end
    for s = 1, count do
      local failure = check(calls[s][1], calls[s][2])
      if failure then return redis.error_reply(failure) end
    end
  end
  local replies = {}
  for s = 1, count do
    replies[s] = one(calls[s][1], calls[s][2], index)
  end
  return replies
end
