-- One student's call (a Redis Cluster: each student's keys on their own slot, the held index on
-- another, written by the client after the call).

local function checked_one(one, check)
  local failure, x, y, z = check(1, #K, 0, #A)
  if failure then return redis.error_reply(failure) end
  return one(1, #K, 0, #A, nil, x, y, z)
end
