-- One atomic step of a shared circuit breaker (see breaker.SharedStore).
-- KEYS[1]: the breaker's hash.
-- ARGV: gen, successes, failures, trailing failures, probe (0/1),
--       consecutive (0 off), ratio (0 off), min requests, bucket ms, buckets,
--       open ms, max requests, state TTL ms.
-- Fields: st (0 closed, 1 half-open, 2 open), gen, until (ms, Redis clock),
-- consec, oks, probes, and per bucket i: n<i> (bucket number), s<i>, f<i>.
-- Each change of state is published on the channel named KEYS[1] (channels
-- and keys are apart) as "state gen ms-left-open".
-- Returns {state, gen, ms left open, probe granted}.
local k = KEYS[1]
local rgen = tonumber(ARGV[1])
local succ, fail, trail = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local probe = ARGV[5] == '1'
local consecMax, ratio, minReq = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local bucketMs, buckets = tonumber(ARGV[9]), tonumber(ARGV[10])
local openMs, maxReq, ttl = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local v = redis.call('HMGET', k, 'st', 'gen', 'until', 'consec', 'oks', 'probes')
local st, gen, untl = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0
local consec, oks, probes = tonumber(v[4]) or 0, tonumber(v[5]) or 0, tonumber(v[6]) or 0
local dirty = false
local changed = false

local function clearBuckets()
	for i = 0, buckets - 1 do
		redis.call('HDEL', k, 'n' .. i, 's' .. i, 'f' .. i)
	end
end

local function to(s)
	st, gen, consec, oks, probes, untl = s, gen + 1, 0, 0, 0, now + openMs
	clearBuckets()
	dirty = true
	changed = true
end

-- A caller that knows a newer generation than the store's means the store
-- lost the state (the key expired or was evicted, Redis restarted or
-- failed over without it): the generation goes on from the caller's, as a
-- closed breaker with no counts, and the caller's outcomes count. Without
-- this every replica's batches would be dropped as "older" for good.
if rgen > gen then
	st, gen, untl, consec, oks, probes = 0, rgen, 0, 0, 0, 0
	clearBuckets()
	dirty = true
end

-- Open past its period, or half-open with probes that never decided.
if st ~= 0 and now >= untl then
	to(1)
end

if rgen == gen and succ + fail > 0 then
	if st == 0 then
		if succ > 0 then consec = trail else consec = consec + fail end
		local cur = math.floor(now / bucketMs)
		local i = cur % buckets
		if tonumber(redis.call('HGET', k, 'n' .. i)) ~= cur then
			redis.call('HSET', k, 'n' .. i, cur, 's' .. i, succ, 'f' .. i, fail)
		else
			redis.call('HINCRBY', k, 's' .. i, succ)
			redis.call('HINCRBY', k, 'f' .. i, fail)
		end
		dirty = true
		local trip = consecMax > 0 and consec >= consecMax
		if not trip and ratio > 0 then
			local ts, tf = 0, 0
			for j = 0, buckets - 1 do
				local b = redis.call('HMGET', k, 'n' .. j, 's' .. j, 'f' .. j)
				local n = tonumber(b[1])
				if n and n > cur - buckets then
					ts = ts + tonumber(b[2])
					tf = tf + tonumber(b[3])
				end
			end
			trip = ts + tf >= minReq and tf >= ratio * (ts + tf)
		end
		if trip then to(2) end
	elseif st == 1 then
		oks = oks + succ
		dirty = true
		if fail > 0 then
			to(2)
		elseif oks >= maxReq then
			to(0)
		end
	end
end

local granted = 0
if probe and st == 1 and probes < maxReq then
	probes = probes + 1
	granted = 1
	dirty = true
end

if dirty then
	redis.call('HSET', k, 'st', st, 'gen', gen, 'until', untl, 'consec', consec, 'oks', oks, 'probes', probes)
	redis.call('PEXPIRE', k, ttl)
end

local left = 0
if st == 2 then left = untl - now end
if changed then
	redis.call('PUBLISH', k, st .. ' ' .. gen .. ' ' .. left)
end
return {st, gen, left, granted}
