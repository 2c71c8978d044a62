-- A claimed index entry is released (rescheduled or removed) only if no writer re-scored it
-- since. KEYS: the held index; ARGV: 1 the student id, 2 the claim's score, 3 the new score
-- ('' to remove the entry).

local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then
  return 0
end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
