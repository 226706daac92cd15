-- The body of every counter script, after prelude.lua and the script's own head (apply.lua,
-- settle.lua, release.lua, reconcile.lua), which names its inputs:
--   plan   the counters to charge, packed (apply.lua); '' for the others,
--   ids    the lease ids to give back, space-separated, their keys first in KEYS,
--   fixes  the corrections, packed, their keys next in KEYS.
-- Settles first, then the plan: a slot given back is free for the plan that carries it, and a
-- counter both corrected and charged is read and written once.
--
-- Every counter is one string key, so one MGET reads them all and one SET writes each: what
-- a script costs the server beyond its redis.calls is mostly the tables and functions it makes
-- on every call (allocation, the collector), so there is one function, one table per key and
-- the reply's.

-- 1. Read every key in one MGET (a key of another type, such as an older script's sorted set
-- of slots, reads as absent and is replaced when written).
local values = #KEYS > 0 and redis.call('MGET', unpack(KEYS)) or {}

-- A counter's state by key, made on first use, every field named at once (a field added later
-- grows the table: another allocation):
--   rate:  a, b = tat_us, tat_rem (tat = tat_us * limit + tat_rem, in units of 1/limit us,
--          like limits/gcra.py: two parts, as a Lua number is exact only up to 2^53, and
--          tat_us * limit is not), never before now (a tat that has passed reads as fresh);
--          x = until when the key lives (us; 0: unknown).
--   quota: a = units used (false: absent), b = the window's end (us), x = 1 when it exists.
--   slots: the leases, each its id and expiry (us) as two doubles, in one string (l), after a
--          head of three: the last id handed out (a), a time no lease expires before (b), and
--          the key's own expiry (x); n leases held. Leases that have ended (a crashed
--          replica's, a lost release) are dropped when read once b has passed.
--   put:   write a, b (the plan's); ka, kb: what a refused plan still writes (the settles').
--   For slots: put is the plan's leases (their string), ka marks the settles' changes, kb is
--   the last id handed out, e the key's expiry once the plan's leases are in (x: as read).
-- A rate key's value: tat_us, tat_rem and x as three little-endian doubles (struct: no text
-- to match or format); a key an older script wrote as text, 'tat_us tat_rem', still reads: its
-- 8th character is a digit or a space, where the 8th byte of a double holding a whole number
-- below 2^53 (sign and exponent) is 0 or above '9'.
local states = {}
local function state(i, kind)
  local key = KEYS[i]
  local s = states[key]
  if s then
    if kind == RATE and s.a < now then s.a, s.b = now, 0 end
    return s
  end
  local v = values[i]
  if kind == RATE then
    local t, r, x = now, 0, 0
    if v then
      local high = #v == 24 and string.byte(v, 8)
      if high and (high == 0 or high > 57) then
        t, r, x = struct.unpack('<ddd', v)
      else
        t, r = string.match(v, '^(%d+) (%d+)$')
        t, r = tonumber(t), tonumber(r)
      end
      if t < now then t, r = now, 0 end
    end
    s = {kind = RATE, a = t, b = r, x = x, e = 0, n = 0, l = false, put = false, ka = false,
         kb = 0}
  elseif kind == QUOTA then
    s = {kind = QUOTA, a = v and tonumber(v), b = 0, x = v and 1 or 0, e = 0, n = 0,
         l = false, put = false, ka = false, kb = 0}
  else
    local last, soon, ends, leases, n, pruned = 0, 0, 0, '', 0, false
    if v and #v >= 24 and (#v - 24) % 16 == 0 then
      last, soon, ends = struct.unpack('<ddd', v)
      leases = string.sub(v, 25)
      n = #leases / 16
      if n > 0 and soon <= now then
        local live, first = {}, 0
        for p = 1, #leases, 16 do
          local expiry = struct.unpack('<d', leases, p + 8)
          if expiry > now then
            live[#live + 1] = string.sub(leases, p, p + 15)
            if first == 0 or expiry < first then first = expiry end
          end
        end
        leases, soon, pruned = table.concat(live), first, true
        n = #leases / 16
      end
    end
    s = {kind = SLOTS, a = last, b = soon, x = ends, e = ends, n = n, l = leases, put = false,
         ka = pruned, kb = last}
  end
  states[key] = s
  return s
end

-- 2. Give slots back: remove each lease from its counter's string (an id is a double's 8
-- bytes, found where a lease starts; a lease id is never handed out twice, so a late release
-- of an expired one frees no other).
local released, nk = 0, 0
local at, size = 1, #ids
while at <= size do
  local stop = string.find(ids, ' ', at, true) or size + 1
  local id = tonumber(string.sub(ids, at, stop - 1))
  at, nk = stop + 1, nk + 1
  if id then
    local s = state(nk, SLOTS)
    local leases, find = s.l, struct.pack('<d', id)
    local p = string.find(leases, find, 1, true)
    while p and p % 16 ~= 1 do p = string.find(leases, find, p + 1, true) end
    if p then
      s.l = string.sub(leases, 1, p - 1) .. string.sub(leases, p + 16)
      s.n, s.ka, released = s.n - 1, true, released + 1
    end
  end
end

-- 3. Correct each rate or quota counter by the real usage: kind (RATE or QUOTA), limit, delta
-- (units to charge more, negative to hand back), d_us, d_rem (rate: divmod(|delta| *
-- period_us, limit), computed exactly by the caller), ends (quota: the window's end; 0:
-- aligned to period), period_us. A rate never holds credit beyond its full burst (tat >= now);
-- a quota never goes below zero and a window that has ended is not reopened.
local nf = #fixes / 56
if nf % 1 ~= 0 then error({err = BAD_SPEC}) end
for j = 1, nf do
  local kind, limit, delta, d_us, d_rem, ends, period = struct.unpack(SPEC, fixes, 56 * j - 55)
  if kind == RATE then
    local s = state(nk + j, RATE)
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
    if ends == 0 then  -- aligned to its period (hand-built counters; as in step 4)
      local r = now - math.floor(now / period) * period
      if r < 0 then r = r + period elseif r >= period then r = r - period end
      ends = now - r + period
    end
    local s = state(nk + j, QUOTA)
    if ends > now and (s.a or delta > 0) then
      local used = (s.a or 0) + delta
      if used < 0 then used = 0 end
      s.a, s.b, s.put, s.ka, s.kb = used, ends, true, used, ends
    end
  end
end

-- 4. Charge the plan: every counter decided, nothing of it written unless all allow. The
-- reply: now, passed, then per counter allowed, a, b (apply.lua), o of them, in a table made
-- at its size for up to three counters.
local n = #plan / 56
if n % 1 ~= 0 then error({err = BAD_SPEC}) end
local base = nk + nf
local out = {now, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}
local o = 2
local passed = true
for i = 1, n do
  local kind, limit, period, cost, add_us, add_rem, ends = struct.unpack(SPEC, plan,
                                                                         56 * i - 55)
  local ok, a, b = 0, 0, 0
  if kind == RATE then
    local s = state(base + i, RATE)
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
    if ends == 0 then  -- aligned to its period (hand-built counters; as in step 3)
      local r = now - math.floor(now / period) * period
      if r < 0 then r = r + period elseif r >= period then r = r - period end
      ends = now - r + period
    end
    if ends <= now then
      passed = nil
      break
    end
    local s = state(base + i, QUOTA)
    a = s.a or 0
    if a + cost <= limit then
      ok = 1
      s.a, s.b, s.put = a + cost, ends, true
    end
  else
    -- a lease: the next id (never below now: an id is not handed out again after the key
    -- expired), expiring a period from now; the key lives a period past its last lease
    local s = state(base + i, SLOTS)
    a = s.n
    if a < limit then
      ok = 1
      local id, expiry = s.kb + 1, now + period
      if id < now then id = now end
      local lease = struct.pack('<dd', id, expiry)
      s.n, s.kb, s.put, b = a + 1, id, s.put and s.put .. lease or lease, id
      if a == 0 or expiry < s.b then s.b = expiry end
      if expiry > s.e then s.e = expiry + period end
    else
      -- refused: the soonest live lease (held, or one this plan just took)
      local leases = s.put and s.l .. s.put or s.l
      for p = 9, #leases, 16 do
        local expiry = struct.unpack('<d', leases, p)
        if b == 0 or expiry < b then b = expiry end
      end
      if b == 0 then b = now + period end
    end
  end
  if ok == 0 then passed = false end
  out[o + 1], out[o + 2], out[o + 3] = ok, a, b
  o = o + 3
end

-- 5. Write: what the plan staged, or (refused) only what the settles changed. A rate key
-- lives a second past its tat (RATE_SLACK_US); its TTL is moved (PX) only when that would
-- outlive it, then a second further: most writes keep the TTL (KEEPTTL), which costs the
-- server less than setting one. A slots key is written with a new TTL only when a lease would
-- outlive it (e past x).
for key, s in pairs(states) do
  local kind = s.kind
  if kind == SLOTS then
    if passed and s.put then
      local e = s.e
      local value = struct.pack('<ddd', s.kb, s.b, e) .. s.l .. s.put
      if e > s.x then
        redis.call('SET', key, value, 'PX', fmt('%d', math.ceil((e - now) / 1000)))
      else
        redis.call('SET', key, value, 'KEEPTTL')
      end
    elseif s.ka then
      redis.call('SET', key, struct.pack('<ddd', s.a, s.b, s.x) .. s.l, 'KEEPTTL')
    end
  else
    local a, b = s.a, s.b
    if not passed then
      a, b = s.ka, s.kb
    elseif not s.put then
      a = false
    end
    if a then
      if kind == RATE then
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
end

if passed == nil then
  return redis.error_reply('a quota counter applied after its window ended: build the plan '
    .. 'with the same now as apply (or the caller clock lags the server)')
end
if plan == '' then return released end
if not passed then out[2] = 0 end
-- one string of 8-byte integers (apply.lua): a table reply costs the server a dozen lookups of
-- reply types on top of the numbers, and the caller a Python int each
return struct.pack('<' .. string.rep('l', o), unpack(out, 1, o))
