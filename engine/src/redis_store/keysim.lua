-- keysim's quota store on Redis: every operation on one bucket is one call of this code,
-- run atomically by the server. Loaded as the function library `keysim_v1` (FCALL), or sent
-- with EVALSHA/EVAL where functions are not allowed; both share this text.
--
-- KEYS[1]: the bucket's minute window, a sorted set of "seq:tokens" scored by admission time (ms)
-- KEYS[2]: the bucket's counters, one string of 15 little-endian doubles (every count below
--          2^53 is exact): layout, mt (minute tokens), day (when the current Pacific day ends,
--          ms), dr/dt (day requests/tokens), c1..c4 (cooling until, per dimension), now (latest
--          server time seen), x (when the keys expire), seq, last (newest entry's time),
--          n (entries in the window), head (oldest entry's time, 0 if none). One string, not a
--          hash: reading and writing fifteen hash fields cost more than the rest of a call.
-- ARGV[1]: operation; ARGV[2]: now in ms, or "server" for the server's TIME; then its arguments
-- (reserve: tokens, four ceilings (-1: none), requests; reconcile: seq, reserved tokens, the
-- day it was counted in, actual tokens, its time; refund: seq, tokens, day, requests).
-- Keys expire (on the server's clock) once nothing in them matters; with the caller's clock,
-- which may be virtual, they do not expire.
-- Both keys carry the hash tag {owner|model}, so a bucket lives in one Cluster slot.

local LAYOUT = 3
local PACKING = '<ddddddddddddddd'
local MINUTE = 60000
local HOUR = 3600000
local DAY = 86400000

-- Numbers go to redis.call as they are: Redis writes integers below 2^53 exactly, and
-- formatting them here cost more than every command of a call together. Members are made
-- with %.0f: Lua's own number-to-string conversion turns 1e14 into "1e+14".
local function member(seq, tokens)
  return string.format('%.0f:%.0f', seq, tokens)
end

-- Days since 1970-01-01 of a proleptic Gregorian date, and the year of such a day.
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function year_of(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local y = yoe + era * 400
  if mp >= 10 then y = y + 1 end
  return y
end

-- The n-th Sunday of month m of year y, as a day number.
local function nth_sunday(y, m, n)
  local first = days_from_civil(y, m, 1)
  return first + (7 - (first + 4) % 7) % 7 + 7 * (n - 1)
end

-- Pacific time's offset from UTC at instant t (US rule: daylight time from the second Sunday
-- of March, 2:00 PST, to the first Sunday of November, 2:00 PDT).
local function pacific_offset(t)
  local y = year_of(math.floor((t - 8 * HOUR) / DAY))
  local starts = nth_sunday(y, 3, 2) * DAY + 10 * HOUR
  local ends = nth_sunday(y, 11, 1) * DAY + 9 * HOUR
  if t >= starts and t < ends then return -7 * HOUR end
  return -8 * HOUR
end

-- The first midnight in Pacific time after t, when Gemini's daily quotas reset.
local function next_pacific_midnight(t)
  local midnight = (math.floor((t + pacific_offset(t)) / DAY) + 1) * DAY
  return midnight - pacific_offset(midnight + 8 * HOUR)
end

local function tokens_of(member)
  return tonumber(string.match(member, ':(%d+)$'))
end

-- Each redis.call costs a few microseconds of the server's one thread, more than the work
-- it does: a call reads the counters once (GET), the window's head only when an entry is due
-- to leave, writes the counters once (SET, only if they changed), and touches expiries only
-- when they move.

-- The bucket's counters at `now` (nil: the server's clock, never earlier than the bucket has
-- seen): entries that left the window are dropped, a new Pacific day starts with zero.
-- Returns nil and a message if another layout wrote this bucket.
local function open(w, m, now)
  local raw = redis.call('GET', m)
  local f
  if raw then
    if #raw ~= 120 then
      return nil, 'keysim: bucket ' .. m .. ' has counters of another layout, this library knows v' .. LAYOUT
    end
    f = { struct.unpack(PACKING, raw) }
    if f[1] ~= LAYOUT then
      return nil, 'keysim: bucket ' .. m .. ' has layout v' .. f[1] .. ', this library knows v' .. LAYOUT
    end
  else
    f = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }
  end
  local s = {
    mt = f[2], day = f[3], dr = f[4], dt = f[5], c = { f[6], f[7], f[8], f[9] }, seen = f[10], x = f[11],
    seq = f[12], last = f[13], n = f[14], head = f[15], new = not raw, dirty = not raw,
    -- Expiries are set on the server's clock only: a caller's clock may be virtual.
    expires = now == nil,
  }
  if s.new then
    -- Counters that expired (or were evicted) before their window: nothing in it is
    -- accounted for any more, so it must not be counted against either.
    redis.call('DEL', w)
  end
  if now == nil then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    -- A server clock stepped backwards never moves a bucket's time back.
    if now < s.seen then now = s.seen end
  end
  s.now = now
  -- Kept with the next write; a read alone need not remember its time.
  if now > s.seen then s.seen = now end
  -- The oldest entries, enough to see what left the window and what is next to leave; read
  -- only when the oldest is due to leave.
  if s.n == 0 then s.head = 0 end
  if s.n > 0 and s.head <= now - MINUTE then
    s.head = 0
    local cutoff = now - MINUTE
    local peek = 8
    while true do
      local first = redis.call('ZRANGE', w, 0, peek - 1, 'WITHSCORES')
      local gone = 0
      for i = 1, #first, 2 do
        local at = tonumber(first[i + 1])
        if at > cutoff then
          s.head = at
          break
        end
        s.mt = s.mt - tokens_of(first[i])
        gone = gone + 1
      end
      if gone > 0 then
        redis.call('ZREMRANGEBYRANK', w, 0, gone - 1)
        s.n = s.n - gone
        s.dirty = true
      end
      if s.head > 0 or gone < peek or s.n == 0 then break end
    end
  end
  if now >= s.day then
    s.day = next_pacific_midnight(now)
    s.dr = 0
    s.dt = 0
    s.dirty = true
  end
  return s
end

-- Writes the counters back, if they changed. The keys live until nothing in them matters
-- any more (a minute past the day's end, a cool-down's end or the window's last entry);
-- their expiry moves only when that moves later, or when the window was made anew.
local function save(w, m, s, now)
  if not s.dirty then return end
  local keep = math.max(s.day, s.c[1], s.c[2], s.c[3], s.c[4], s.last + MINUTE) + MINUTE
  local moved = keep > s.x
  if moved then s.x = keep end
  redis.call('SET', m, struct.pack(PACKING, LAYOUT, s.mt, s.day, s.dr, s.dt, s.c[1], s.c[2], s.c[3], s.c[4], s.seen,
    s.x, s.seq, s.last, s.n, s.head))
  if not s.expires then return end
  if moved or s.new then
    redis.call('PEXPIRE', m, s.x - now)
  end
  if moved or s.remade then
    redis.call('PEXPIRE', w, s.x - now)
  end
end

local function usage(w, s, now)
  local frees = 0
  if s.head > 0 then frees = s.head + MINUTE end
  local cooling = 0
  for d = 1, 4 do
    if s.c[d] > now and s.c[d] > cooling then cooling = s.c[d] end
  end
  return { s.n, s.mt, s.dr, s.dt, frees, s.day, cooling }
end

-- When enough of the window's tokens have left for `tokens` more to fit under `tpm`; -1: never.
local function tokens_free_at(w, s, tokens, tpm)
  if tokens > tpm then return -1 end
  local excess = s.mt + tokens - tpm
  local entries = redis.call('ZRANGE', w, 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    local t = tokens_of(entries[i])
    if t >= excess then return tonumber(entries[i + 1]) + MINUTE end
    excess = excess - t
  end
  return -1
end

-- Why `requests` more requests of `tokens` tokens in all do not fit under ceilings c
-- (-1 = unlimited): the dimension that frees last, whether it cools down, and when
-- (-1 = never). nil if they fit.
local function shortfall(w, s, requests, tokens, c, now)
  local worst = nil
  local function consider(d, cooling, retry)
    local later
    if worst == nil then
      later = true
    elseif retry < 0 then
      later = worst[3] >= 0
    else
      later = worst[3] >= 0 and retry > worst[3]
    end
    if later then worst = { d, cooling, retry } end
  end
  for d = 1, 4 do
    if s.c[d] > now then consider(d, 1, s.c[d]) end
  end
  local rpm, tpm, rpd, tpd = c[1], c[2], c[3], c[4]
  if rpm >= 0 then
    local n = s.n
    if n + requests > rpm then
      -- The entry whose leaving makes room for `requests` more; never, if they alone are too many.
      local retry = -1
      if requests <= rpm then
        local at = n + requests - rpm - 1
        retry = tonumber(redis.call('ZRANGE', w, at, at, 'WITHSCORES')[2]) + MINUTE
      end
      consider(1, 0, retry)
    end
  end
  if tpm >= 0 and s.mt + tokens > tpm then consider(2, 0, tokens_free_at(w, s, tokens, tpm)) end
  if rpd >= 0 and s.dr + requests > rpd then
    local retry = -1
    if requests <= rpd then retry = s.day end
    consider(3, 0, retry)
  end
  if tpd >= 0 and s.dt + tokens > tpd then
    local retry = -1
    if tokens <= tpd then retry = s.day end
    consider(4, 0, retry)
  end
  return worst
end

-- Counts `requests` requests of `tokens` tokens in all at `now` (or at the newest time seen,
-- to keep the window ordered): one window entry each, the first carrying every token, in one
-- command. Returns the first one's sequence number, and their time.
local function push(w, m, s, requests, tokens, now)
  local at = math.max(now, s.last)
  s.last = at
  local seq = s.seq + 1
  s.seq = s.seq + requests
  redis.call('ZADD', w, at, member(seq, tokens))
  -- The rest of a batch, a thousand entries a command (Lua unpacks at most a few thousand).
  local i = 1
  while i < requests do
    local args = {}
    local last = math.min(i + 999, requests - 1)
    for j = i, last do
      args[#args + 1] = at
      args[#args + 1] = member(seq + j, 0)
    end
    redis.call('ZADD', w, unpack(args))
    i = last + 1
  end
  -- An empty window is no key: this one is new and needs its expiry.
  s.remade = s.n == 0
  if s.n == 0 then s.head = at end
  s.n = s.n + requests
  s.dirty = true
  s.mt = s.mt + tokens
  s.dr = s.dr + requests
  s.dt = s.dt + tokens
  return seq, at
end

local function append(out, xs)
  for _, x in ipairs(xs) do out[#out + 1] = x end
  return out
end

local function keysim(keys, args)
  local w, m = keys[1], keys[2]
  local op = args[1]
  local s, err = open(w, m, args[2] ~= 'server' and tonumber(args[2]) or nil)
  if s == nil then return redis.error_reply(err) end
  local now = s.now
  if op == 'reserve' then
    local tokens = tonumber(args[3])
    local c = { tonumber(args[4]), tonumber(args[5]), tonumber(args[6]), tonumber(args[7]) }
    local requests = tonumber(args[8]) or 1
    local short = shortfall(w, s, requests, tokens, c, now)
    if short ~= nil then
      save(w, m, s, now)
      return append({ 0, short[1], short[2], short[3] }, usage(w, s, now))
    end
    local seq, at = push(w, m, s, requests, tokens, now)
    save(w, m, s, now)
    return append({ 1, seq, at, s.day }, usage(w, s, now))
  elseif op == 'reconcile' or op == 'refund' then
    local seq, reserved, day = args[3], tonumber(args[4]), tonumber(args[5])
    local old = member(tonumber(seq), reserved)
    if op == 'reconcile' then
      local actual, at = tonumber(args[6]), tonumber(args[7])
      -- The entry (at the time admission answered) with its new count, if it is still in
      -- the window; a window that was this entry alone is made again and needs its expiry.
      if actual ~= reserved and redis.call('ZREM', w, old) == 1 then
        redis.call('ZADD', w, at, member(tonumber(seq), actual))
        s.remade = s.n == 1
        s.mt = s.mt - reserved + actual
      end
      if s.day == day then s.dt = math.max(s.dt + actual - reserved, 0) end
      s.dirty = true
    else
      -- A batch's entries go together: the first carries its tokens, the others none.
      local requests = tonumber(args[6]) or 1
      local first = redis.call('ZREM', w, old)
      local gone = first
      local i = 1
      while i < requests do
        local rest = {}
        local last = math.min(i + 999, requests - 1)
        for j = i, last do rest[#rest + 1] = member(tonumber(seq) + j, 0) end
        gone = gone + redis.call('ZREM', w, unpack(rest))
        i = last + 1
      end
      if first == 1 then s.mt = s.mt - reserved end
      if gone > 0 then
        s.n = s.n - gone
        local head = redis.call('ZRANGE', w, 0, 0, 'WITHSCORES')
        s.head = tonumber(head[2]) or 0
      end
      s.dirty = true
      if s.day == day then
        s.dr = math.max(s.dr - requests, 0)
        s.dt = math.max(s.dt - reserved, 0)
      end
    end
    save(w, m, s, now)
    return usage(w, s, now)
  elseif op == 'cool' then
    local d, cool_until = tonumber(args[3]), tonumber(args[4])
    if cool_until > s.c[d] then s.c[d] = cool_until end
    s.dirty = true
    save(w, m, s, now)
    return usage(w, s, now)
  elseif op == 'usage' then
    save(w, m, s, now)
    return usage(w, s, now)
  elseif op == 'midnight' then
    return next_pacific_midnight(now)
  end
  return redis.error_reply('keysim: unknown operation ' .. tostring(op))
end
