-- Apply `one` to every student of the call (a single Redis: the per-command cost of the client is
-- paid once, and the held index is written in the same script as the accounts): ARGV[1] students,
-- then per student its number of keys and of arguments, then all arguments; KEYS in the same
-- student order, then the held index when `with_index`. Every student is checked before the first
-- write; `check` may return up to three values it read or worked out, handed on to `one`.

local function for_each_student(one, check, with_index)
  local index = nil
  if with_index then index = K[#K] end
  local count = tonumber(A[1])
  if not count or count < 0 or count % 1 ~= 0 or #A < 1 + 2 * count then
    return redis.error_reply('the student counts do not match the arguments')
  end
  local key_at, arg_at = 1, 1 + 2 * count
  local parts = {}  -- per student: its first key, its number of keys, its argument base, count
  for s = 1, count do
    local nkeys, nargs = number_of(A[2 * s]), number_of(A[2 * s + 1])
    if not nkeys or not nargs or nkeys < 0 or nargs < 0 then
      return redis.error_reply('the student counts do not match the arguments')
    end
    local at = 4 * s
    parts[at - 3], parts[at - 2], parts[at - 1], parts[at] = key_at, nkeys, arg_at, nargs
    key_at, arg_at = key_at + nkeys, arg_at + nargs
  end
  if key_at - 1 ~= #K - (with_index and 1 or 0) or arg_at ~= #A then
    return redis.error_reply('the student counts do not match the arguments')
  end
  if index and not of_type(index, 'zset', 'none') then
    return redis.error_reply('the held index is not a sorted set')
  end
  local reads = {}
  for s = 1, count do
    local at = 4 * s
    local failure, x, y, z = check(parts[at - 3], parts[at - 2], parts[at - 1], parts[at])
    if failure then return redis.error_reply(failure) end
    reads[at - 2], reads[at - 1], reads[at] = x or false, y or false, z or false
  end
  local replies = {}
  for s = 1, count do
    local at = 4 * s
    replies[s] = one(parts[at - 3], parts[at - 2], parts[at - 1], parts[at], index,
      reads[at - 2], reads[at - 1], reads[at])
  end
  return replies
end
