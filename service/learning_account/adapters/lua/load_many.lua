-- Every student's account fields in one call (a single Redis: the per-command cost of the
-- client is paid once). KEYS: the accounts; ARGV: per account its number of fields, then them.
-- The reply per account is HMGET's.

local replies, at = {}, 1
for s = 1, #KEYS do
  local n = tonumber(ARGV[at])
  replies[s] = redis.call('HMGET', KEYS[s], unpack(ARGV, at + 1, at + n))
  at = at + n + 1
end
return replies
