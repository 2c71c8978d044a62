-- ARGV: 1 number of events n, then per event its digest and content digest, then the year fields
-- to read; KEYS: the account, then per event its outputs key and that of a refused re-use. Per
-- event the reply is its stored outputs when it was seen (the same content, or a digest alone in
-- `d`), 1 when its digest stands for other content (a re-use), 0 when it is new.

local function load_one(keys, argv)
  local n = tonumber(argv[1])
  local fields = {'s', 'v', 'd', 'p', 'k'}
  for i = 2 * n + 2, #argv do
    fields[#fields + 1] = argv[i]
  end
  local values = redis.call('HMGET', keys[1], unpack(fields))
  local digests_alone, entries = values[3] or '', values[5] or ''
  local reply = {values[1], values[2], values[4]}
  for i = 1, n do
    local digest, content = argv[2 * i], argv[2 * i + 1]
    local outcome = 0
    if has_digest(digests_alone, digest) then
      outcome = redis.call('GET', keys[2 * i]) or ''
    else
      local contents = contents_of(entries, digest)
      if contents[1] == content then
        outcome = redis.call('GET', keys[2 * i]) or ''
      elseif #contents > 0 then
        outcome = 1
        for j = 2, #contents do
          if contents[j] == content then outcome = redis.call('GET', keys[2 * i + 1]) or '' end
        end
      end
    end
    reply[#reply + 1] = outcome
  end
  for i = 6, #values do
    reply[#reply + 1] = values[i]
  end
  return reply
end
