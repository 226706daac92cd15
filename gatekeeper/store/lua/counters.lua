-- The body of every counter script, after prelude.lua and the script's own head (apply.lua,
-- settle.lua, release.lua, reconcile.lua), which names its inputs:
--   plan      the counters to charge, packed (apply.lua); '' for the others,
--   ids       the lease ids to give back, space-separated, their keys first in KEYS,
--   fixes     the corrections, packed, their keys next in KEYS,
--   counting  count the slots still held (an expired lease pruned first, so it counts
--             nothing); else the leases are only removed (a lease id is never handed out
--             twice, so a late release of an expired one frees no other).
-- Settles first, then the plan: a slot given back is free for the plan that carries it, and a
-- counter both corrected and charged is read and written once.
--
-- One body, mostly straight-line code: what a script costs the server beyond its redis.calls
-- is mostly the functions and tables it makes on every call (closures, upvalues, the
-- collector), which cost more than the arithmetic, so there are three functions.

-- 1. Give slots back: one ZREM per set (a batch names a set many times).
local released, nk, dropped = 0, 0, nil
if tonumber(ids) then  -- one lease (a response's end riding alone): no gmatch, no tables
  nk = 1
  local key = KEYS[1]
  local gone = counting and redis.call('ZREMRANGEBYSCORE', key, '0', fmt('%d', now)) or 0
  released = redis.call('ZREM', key, ids)
  gone = gone + released
  if gone > 0 then dropped = {[key] = gone} end
elseif ids ~= '' then
  local by, keys = {}, {}
  for id in string.gmatch(ids, '%S+') do
    nk = nk + 1
    local key = KEYS[nk]
    if tonumber(id) then  -- a lease id, never the set's bookkeeping ('#', '@', 'n', 's')
      local list = by[key]
      if not list then
        list = {}
        by[key] = list
        keys[#keys + 1] = key
      end
      list[#list + 1] = id
    end
  end
  dropped = {}
  for j = 1, #keys do
    local key = keys[j]
    local gone = counting and redis.call('ZREMRANGEBYSCORE', key, '0', fmt('%d', now)) or 0
    local freed = redis.call('ZREM', key, unpack(by[key]))
    released = released + freed
    gone = gone + freed
    if gone > 0 then dropped[key] = (dropped[key] or 0) + gone end
  end
end

-- 2. Read every rate and quota key in one MGET: every KEYS after the leases' (a concurrency
-- set among them reads as nil: cheaper than a list of the others).
local read, NONE = {}, {}
local last = #KEYS
if nk < last then
  local values = redis.call('MGET', unpack(KEYS, nk + 1))
  for i = nk + 1, last do read[KEYS[i]] = values[i - nk] end
end

-- Rate and quota counters by key: {rate?, a, b, x} with rate: a = tat_us, b = tat_rem
-- (tat = tat_us * limit + tat_rem, like limits/gcra.py), quota: a = units used (false:
-- absent), b = the window's end (us); x: until when the key lives (us; 0: unknown, quota: 1
-- when it exists). 'put' marks a key to write; ka and kb hold what a refused plan still
-- writes (the settles').
local staged = {}

-- A rate counter's state, tat never before now (a tat that has passed reads as fresh). Its
-- value: tat_us, tat_rem and the key's expiry (us) as three little-endian doubles (struct: no
-- text to match or format); a key an older script wrote as text, 'tat_us tat_rem', still
-- reads: its 8th character is a digit or a space, where the 8th byte of a double holding a
-- whole number below 2^53 (sign and exponent) is 0 or above '9'.
local function rate(key)
  local s = staged[key]
  if s then
    if s.a < now then s.a, s.b = now, 0 end
    return s
  end
  s = {rate = true, a = now, b = 0, x = 0}
  local v = read[key]
  if v == nil then v = redis.call('GET', key) end
  if v then
    local t, r, x
    local high = #v == 24 and string.byte(v, 8)
    if high and (high == 0 or high > 57) then
      t, r, x = struct.unpack('<ddd', v)
    else
      t, r = string.match(v, '^(%d+) (%d+)$')
      t, r, x = tonumber(t), tonumber(r), 0
    end
    s.x = x
    if t >= now then s.a, s.b = t, r end
  end
  staged[key] = s
  return s
end

-- A quota counter's state; ends: its window's end (0: aligned to period, hand-built counters),
-- returned with it. A quota's key is named by its window and expires when it ends (set when
-- it is made), so a key that exists already keeps its TTL.
local function quota(key, ends, period)
  if ends == 0 then
    local r = now - math.floor(now / period) * period
    if r < 0 then r = r + period elseif r >= period then r = r - period end
    ends = now - r + period
  end
  local s = staged[key]
  if not s then
    local v = read[key]
    if v == nil then v = redis.call('GET', key) end
    s = {rate = false, a = v and tonumber(v), b = ends, x = v and 1 or 0}
    staged[key] = s
  end
  return s, ends
end

-- 3. Correct each rate or quota counter by the real usage: kind (RATE or QUOTA), limit, delta
-- (units to charge more, negative to hand back), d_us, d_rem (rate: divmod(|delta| *
-- period_us, limit), computed exactly by the caller), ends (quota: the window's end; 0:
-- aligned to period), period_us. A rate never holds credit beyond its full burst (tat >= now);
-- a quota never goes below zero and a window that has ended is not reopened.
local nf = count(fixes)
for j = 1, nf do
  local kind, limit, delta, d_us, d_rem, ends, period = struct.unpack(SPEC, fixes, 56 * j - 55)
  local key = KEYS[nk + j]
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
    s.a, s.b, s.put, s.ka, s.kb = tat, rem, true, tat, rem
  elseif kind == QUOTA then
    local s
    s, ends = quota(key, ends, period)
    if ends > now and (s.a or delta > 0) then
      s.a = s.a and math.max(0, s.a + delta) or delta
      s.b, s.put, s.ka, s.kb = ends, true, s.a, ends
    end
  end
end

-- 4. Charge the plan: every counter decided, nothing of it written unless all allow.
-- Concurrency slots: a sorted set per counter, each lease id scored by its expiry (us), plus
-- bookkeeping members with negative scores (outside every lease range, never pruned):
--   '#' at -(the last id handed out),
--   '@' at -(the key's own expiry, us): PEXPIRE is sent only when a lease would outlive the
--       key, and then the key gets a further period;
--   'n' at -(1 + the leases in the set), so a charge reads its count with the rest in one
--       ZMSCORE instead of counting them (ZCOUNT);
--   's' at -(a time no lease in the set expires before): while it is ahead of now every
--       lease counted is live; once it is not, the expired leases (a crashed replica's, a
--       lost release) are pruned and the rest counted again, which also heals a count that
--       a set written by an older script never kept.
-- By key: {n (leases held), last, ends, soon, exists, dirty (n or soon to write), adds}.
local n = count(plan)
local base = nk + nf
local out = {now, 1}
local passed = true
local held
for i = 1, n do
  local kind, limit, period, cost, add_us, add_rem, ends = struct.unpack(SPEC, plan,
                                                                         56 * i - 55)
  local key = KEYS[base + i]
  local ok, a, b = 0, 0, 0
  if kind == RATE then
    local s = rate(key)
    a, b = s.a, s.b
    if add_us >= 0 then
      local t2, r2 = a + add_us, b + add_rem
      if r2 >= limit then t2, r2 = t2 + 1, r2 - limit end
      -- allowed iff new_tat - now <= tau = limit * period_us (r2 < limit)
      local d = t2 - now
      if d < period or (d == period and r2 == 0) then
        ok = 1
        s.a, s.b, s.put = t2, r2, true
      end
    end
  elseif kind == QUOTA then
    local s
    s, ends = quota(key, ends, period)
    if ends <= now then
      passed = nil
      break
    end
    a = s.a or 0
    if a + cost <= limit then
      ok = 1
      s.a, s.b, s.put = a + cost, ends, true
    end
  else
    held = held or {}
    local s = held[key]
    if not s then
      local h = redis.call('ZMSCORE', key, 'n', '#', '@', 's')
      s = {n = 0, last = 0, ends = 0, soon = 0, exists = false, dirty = false}
      if h[2] then
        local gone = dropped and dropped[key]
        s.exists, s.last, s.ends = true, -h[2], h[3] and -h[3] or 0
        s.soon = h[4] and -h[4] or 0
        s.n = (h[1] and -h[1] - 1 or -1) - (gone or 0)
        s.dirty = gone ~= nil
        if s.n < 0 or (s.n > 0 and s.soon <= now) then
          redis.call('ZREMRANGEBYSCORE', key, '0', fmt('%d', now))
          s.n = redis.call('ZCOUNT', key, '(0', '+inf')
          local first = redis.call('ZRANGEBYSCORE', key, '(0', '+inf', 'WITHSCORES', 'LIMIT',
                                   '0', '1')
          s.soon = first[2] and tonumber(first[2]) or 0
          s.dirty = true
        end
      end
      if dropped then dropped[key] = nil end  -- counted in s.n from here on
      held[key] = s
    end
    a = s.n
    if a < limit then
      ok = 1
      s.n = a + 1
      local adds = s.adds  -- flat: where its lease id goes in out, its expiry, its period
      if not adds then
        adds = {}
        s.adds = adds
      end
      local k = #adds
      adds[k + 1], adds[k + 2], adds[k + 3] = #out + 3, now + period, period
    else
      -- read only when refused: the soonest live lease, else one this plan just staged
      local first = redis.call('ZRANGEBYSCORE', key, '(' .. fmt('%d', now), '+inf',
                               'WITHSCORES', 'LIMIT', '0', '1')
      b = first[2] and tonumber(first[2]) or now + period
    end
  end
  if ok == 0 then passed = false end
  out[#out + 1] = ok
  out[#out + 1] = a
  out[#out + 1] = b
end

-- 5. Write. Rate and quota counters: what was staged, or (refused) only what the settles
-- wrote. A rate key lives a second past its tat (RATE_SLACK_US); its TTL is moved (PX) only
-- when that would outlive it, then a second further: most writes keep the TTL (KEEPTTL), which
-- costs the server less than setting one.
for key, s in pairs(staged) do
  local a, b = s.a, s.b
  if not passed then
    a, b = s.ka, s.kb
  elseif not s.put then
    a = nil
  end
  if a then
    if s.rate then
      local x = s.x
      if a + 1 + RATE_SLACK_US <= x then
        redis.call('SET', key, struct.pack('<ddd', a, b, x), 'KEEPTTL')
      else
        x = a + 1 + 2 * RATE_SLACK_US
        redis.call('SET', key, struct.pack('<ddd', a, b, x), 'PX',
                   fmt('%d', math.ceil((x - now) / 1000)))
      end
    elseif s.x == 1 then
      redis.call('SET', key, fmt('%d', a), 'KEEPTTL')
    else
      redis.call('SET', key, fmt('%d', a), 'PX', fmt('%d', math.ceil((b - now) / 1000)))
    end
  end
end

-- Concurrency sets: with the plan passed, the leases staged (their ids put where out's index
-- says) with the bookkeeping in one ZADD; a count moved by releases or a prune alone in one
-- ZADD, or in one ZINCRBY for a set the plan did not read.
for key, s in pairs(held or NONE) do
  local adds = passed and s.adds
  local held_n = s.n - (s.adds and #s.adds / 3 or 0)
  local soon = s.soon
  if adds then
    if held_n == 0 then soon = adds[2] end
    local id, ends, period = s.last, 0, 0
    local members = {}
    for j = 1, #adds, 3 do
      local expiry = adds[j + 1]
      id = math.max(id + 1, now)  -- never below now: an id is not handed out again after
      out[adds[j]] = id           -- the set expired
      members[#members + 1] = fmt('%d', expiry)
      members[#members + 1] = fmt('%d', id)
      if expiry > ends then ends, period = expiry, adds[j + 2] end
      if expiry < soon then soon = expiry end
    end
    local extend = ends > s.ends
    if extend then ends = ends + period end  -- the key lives a period past its last lease
    redis.call('ZADD', key, fmt('%d', -id), '#', fmt('%d', -1 - s.n), 'n', fmt('%d', -soon), 's',
               fmt('%d', -math.max(ends, s.ends)), '@', unpack(members))
    if extend then redis.call('PEXPIRE', key, fmt('%d', math.ceil((ends - now) / 1000))) end
  elseif s.dirty and s.exists then
    redis.call('ZADD', key, fmt('%d', -1 - held_n), 'n', fmt('%d', -math.max(soon, 1)), 's')
  end
end
for key, gone in pairs(dropped or NONE) do
  -- an older script's set has no 'n': made here above zero, it reads as lost and is counted
  -- again (above)
  redis.call('ZINCRBY', key, fmt('%d', gone), 'n')
end

if passed == nil then
  return redis.error_reply('a quota counter applied after its window ended: build the plan '
    .. 'with the same now as apply (or the caller clock lags the server)')
end
if plan == '' then return released end
if not passed then out[2] = 0 end
return out
