-- Shared by every script after prelude.lua: counters staged in Lua, read at most once and
-- written at most once per call, so one response's end riding inside the next request's
-- apply costs no more Redis calls than the charge of the same keys alone. Each redis.call
-- costs the server a microsecond or more: these scripts make as few as the answer needs.

-- Rate and quota counters (strings), by key: {rate?, a, b} with rate: a = tat_us, b = tat_rem
-- (tat = tat_us * limit + tat_rem, like limits/gcra.py), quota: a = units used (false:
-- absent), b = the window's end (us). 'put' marks a key to write; 'kept' holds the values a
-- refused plan still writes (the settles'), set by keep().
local read, staged, order = {}, {}, {}

-- Read every key of ks not read yet in one MGET (a key read later alone costs a GET).
local function prefetch(ks)
  local want, seen = {}, {}
  for _, key in ipairs(ks) do
    if read[key] == nil and not seen[key] then
      seen[key] = true
      want[#want + 1] = key
    end
  end
  if #want > 0 then
    local values = redis.call('MGET', unpack(want))
    for i, key in ipairs(want) do read[key] = values[i] end
  end
end

local function value(key)
  local v = read[key]
  if v == nil then
    v = redis.call('GET', key)
    read[key] = v
  end
  return v
end

-- A rate counter's state, tat never before now (a tat that has passed reads as fresh).
local function rate(key)
  local s = staged[key]
  if s then
    if s.a < now then s.a, s.b = now, 0 end
    return s
  end
  s = {rate = true, a = now, b = 0}
  local v = value(key)
  if v then
    local t, r = string.match(v, '^(%d+) (%d+)$')
    t = tonumber(t)
    if t >= now then s.a, s.b = t, tonumber(r) end
  end
  staged[key] = s
  order[#order + 1] = key
  return s
end

local function quota(key, ends)
  local s = staged[key]
  if not s then
    local v = value(key)
    s = {rate = false, a = v and tonumber(v), b = ends}
    staged[key] = s
    order[#order + 1] = key
  end
  return s
end

-- Correct one rate or quota counter by the real usage: kind (RATE or QUOTA), limit, delta (units
-- to charge more, negative to hand back), d_us, d_rem (rate: divmod(|delta| * period_us,
-- limit), computed exactly by the caller), ends (quota: the window's end; 0: aligned to
-- period). A rate never holds credit beyond its full burst (tat >= now); a quota never goes
-- below zero and a window that has ended is not reopened.
local function correct(key, kind, limit, delta, d_us, d_rem, ends, period)
  if kind == RATE then
    local s = rate(key)
    local tat, rem = s.a, s.b
    if delta > 0 then
      tat, rem = tat + d_us, rem + d_rem
      if rem >= limit then tat, rem = tat + 1, rem - limit end
    else
      tat, rem = tat - d_us, rem - d_rem
      if rem < 0 then tat, rem = tat - 1, rem + limit end
      if tat < now then tat, rem = now, 0 end
    end
    s.a, s.b, s.put = tat, rem, true
  elseif kind == QUOTA then
    if ends == 0 then ends = window_end(now, period) end
    if ends <= now then return end
    local s = quota(key, ends)
    if s.a then
      s.a = math.max(0, s.a + delta)
    elseif delta > 0 then
      s.a = delta
    else
      return
    end
    s.b, s.put = ends, true
  end
end

-- What the settles wrote so far is written even if the plan that follows is refused.
local function keep()
  for _, key in ipairs(order) do
    local s = staged[key]
    if s.put then s.kept = {s.a, s.b} end
  end
end

-- Write every staged counter marked to write (refused: only what keep() kept).
local function flush(refused)
  for _, key in ipairs(order) do
    local s = staged[key]
    local a, b = s.a, s.b
    if refused then
      a, b = s.kept and s.kept[1], s.kept and s.kept[2]
    elseif not s.put then
      a = nil
    end
    if a then
      if s.rate then
        redis.call('SET', key, string.format('%d %d', a, b), 'PX', ms(a + 1 - now + RATE_SLACK_US))
      else
        redis.call('SET', key, fmt(a), 'PX', ms(b - now))
      end
    end
  end
end

-- Concurrency slots: a sorted set per counter, each lease id scored by its expiry (us), plus
-- two bookkeeping members with negative scores (outside every lease range): '#' at -(the
-- last id handed out) and '@' at -(the key's own expiry, us), so PEXPIRE is sent only when a
-- lease would outlive the key (then the key gets a further period, and expired leases whose
-- release was lost are pruned).

-- Give back the slots ids names (lease ids, space-separated) on KEYS[1], KEYS[2], ...; with
-- count, how many were still held (an expired lease is pruned first, so it counts nothing),
-- else nothing is read (apply.lua: a lease id is never handed out twice, so a late release
-- of an expired one frees no other). Returns that count and how many KEYS it used.
local function release(ids, count)
  local by, keys, i = {}, {}, 0
  for id in string.gmatch(ids, '%S+') do
    i = i + 1
    local key = KEYS[i]
    if id ~= '#' and id ~= '@' then  -- the set's bookkeeping, never a lease
      local list = by[key]
      if not list then
        list = {}
        by[key] = list
        keys[#keys + 1] = key
      end
      list[#list + 1] = id
    end
  end
  local released = 0
  for _, key in ipairs(keys) do
    if count then redis.call('ZREMRANGEBYSCORE', key, '0', fmt(now)) end
    released = released + redis.call('ZREM', key, unpack(by[key]))
  end
  return released, i
end

-- Settle what ids and packed name (settle.lua's ARGV[2] and ARGV[3]), their keys from
-- KEYS[1] on: the lease ids, space-separated, then every correction's 7 values (specs), one
-- after another: kind (RATE or QUOTA), limit, delta, d_us, d_rem, ends_us, period_us.
-- Corrections are staged (flush writes them), their keys read in one MGET with also's (the
-- plan's, in apply.lua). Returns how many slots were still held (with count), and how many
-- KEYS it used.
local function settle(ids, packed, count, also)
  local released, i = release(ids, count)
  local v, n = specs(packed)
  local ks = also or {}
  for j = 1, n do ks[#ks + 1] = KEYS[i + j] end
  if #ks > 1 then prefetch(ks) end
  for j = 0, n - 1 do
    local o = 7 * j
    correct(KEYS[i + j + 1], v[o + 1], v[o + 2], v[o + 3], v[o + 4], v[o + 5], v[o + 6],
            v[o + 7])
  end
  return released, i + n
end
