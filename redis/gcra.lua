-- GCRA (generic cell rate algorithm) for the limits of one client, all or
-- nothing: the request is counted against every limit only if every limit
-- admits it. The arithmetic is that of ratelimit.MemoryStore, in
-- microseconds.
--
-- KEYS[i]        the bucket of limit i (all share one hash tag)
-- ARGV[1]        now, in microseconds since the Unix epoch; "" for the
--                server's clock (TIME)
-- ARGV[2i]       emission interval of limit i, in microseconds
-- ARGV[2i+1]     burst of limit i
--
-- Returns {allowed, then for each limit: allowed, remaining,
-- retry_after_us, reset_us}.
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local res = {1}
local olds, news = {}, {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  local v = redis.call('GET', KEYS[i])
  local stored = (v and tonumber(v)) or 0
  olds[i] = stored
  local tat = math.max(stored, now)
  local capacity = interval * burst
  local nxt = tat + interval
  local allow_at = nxt - capacity
  if now < allow_at then
    res[1] = 0
    local remaining = math.max(math.floor((now + capacity - tat) / interval), 0)
    table.insert(res, 0)
    table.insert(res, remaining)
    table.insert(res, allow_at - now)
    table.insert(res, tat - now)
  else
    news[i] = nxt
    table.insert(res, 1)
    table.insert(res, math.floor((now + capacity - nxt) / interval))
    table.insert(res, 0)
    table.insert(res, nxt - now)
  end
end
if res[1] == 1 then
  for i = 1, #KEYS do
    local ttl = math.max(math.ceil((news[i] - now) / 1000), 1)
    redis.call('SET', KEYS[i], string.format('%.0f', news[i]), 'PX', ttl)
  end
else
  -- Limits that would have admitted the request were not charged for it.
  for i = 1, #KEYS do
    local base = 1 + 4 * (i - 1)
    if res[base + 1] == 1 then
      res[base + 2] = res[base + 2] + 1
      res[base + 4] = math.max(olds[i] - now, 0)
    end
  end
end
return res
