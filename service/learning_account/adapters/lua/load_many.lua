-- Every student's account fields in one call (a single Redis: the per-command cost of the
-- client is paid once). Students that read the same fields come as one group: ARGV per group its
-- number of students, its number of fields, then the fields; KEYS the accounts in group order.
-- The reply is every student's HMGET reply, one after the other in one flat array (false for a
-- field not set): the fields are copied into Lua once per group, and a flat array costs Redis
-- less to reply than one array per student.

local replies, n, key_at, at = {}, 0, 1, 1
while at <= #ARGV do
  local students, nfields = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  local last = at + 1 + nfields
  for s = key_at, key_at + students - 1 do
    local values = redis.call('HMGET', KEYS[s], unpack(ARGV, at + 2, last))
    for i = 1, nfields do
      replies[n + i] = values[i]
    end
    n = n + nfields
  end
  key_at, at = key_at + students, last + 1
end
return replies
