-- Shared by the account scripts. DIGEST (the bytes of an idempotency digest) and ENTRY (of a
-- digest with its content digest) are set by the line the loader puts before this file.
-- Every script checks everything a write could fail on before its first write, and a script
-- over many students checks them all first: Redis does not roll back a script that fails
-- halfway (and refuses only the first write of a script for lack of memory).
-- A student's functions read its part of KEYS and ARGV in place: its keys from `k` on (`nk` of
-- them), its arguments after `b` (`na` of them), so its argument i is A[b + i]: a call over many
-- students copies no argument and builds no table per student.

local K, A = KEYS, ARGV

-- the counts and the retention repeat from student to student: each text is converted once
local counted = {}
local function number_of(text)
  local n = counted[text]
  if n == nil then
    n = tonumber(text)
    if n then counted[text] = n end
  end
  return n
end

local function is_number(text)
  local n = tonumber(text)
  return n ~= nil and n == n
end

local function of_type(key, ...)
  local kind = redis.call('TYPE', key).ok
  for _, allowed in ipairs({...}) do
    if kind == allowed then return true end
  end
  return false
end

local function has_digest(list, digest)
  local start = 1
  while true do
    local at = string.find(list, digest, start, true)
    if not at then return false end
    if (at - 1) % DIGEST == 0 then return true end
    start = at + 1
  end
end
