-- Charge every counter of one request's plan, all or nothing, in one call (EVALSHA); first
-- settle the ends of earlier responses that ride along (settling.lua), so a slot one of them
-- gives back is free for this plan, and a counter both corrected and charged is read and
-- written once.
--
-- KEYS: the settled keys (when ARGV[3] is given: as settle.lua's KEYS), then the counters'
-- storage keys, in plan order.
-- ARGV[3], ARGV[4] (optional): the settles riding along, as settle.lua's ARGV[2] and ARGV[3].
-- ARGV[1]: now (prelude.lua). ARGV[2]: every counter's 7 values packed (prelude.lua: specs),
-- one counter after another (one argument: each argument costs the client more than the
-- unpacking here costs the server):
--   kind (RATE, QUOTA or SLOTS), limit, period_us, cost,
--   add_us, add_rem   rate: divmod(cost * period_us, limit), computed exactly by the caller
--                     (-1 when cost > limit: it can never pass),
--   ends_us           quota: the window's end (0: aligned to its period).
-- Returns {now_us, passed, then per counter: allowed, a, b}:
--   rate: the tat before this charge, as tat_us and tat_rem (tat = tat_us * limit + tat_rem,
--         in units of 1/limit us, like limits/gcra.py: kept in two parts because a Lua number
--         is a double, exact only up to 2^53, and tat_us * limit is not);
--   quota: the units used before this charge, and 0;
--   concurrency: the slots held before this charge, and the soonest lease expiry (us) when
--         refused or the new lease id when the plan passed.
-- Nothing of the plan is written unless every counter allows (the settles are, either way).
-- Redis calls: one MGET for every rate and quota key, one SET each written, and per
-- concurrency counter a ZCOUNT, then (passed) a ZMSCORE and a ZADD.

local v, n = specs(ARGV[2])
local base = #KEYS - n
local strings = {}
for i = 1, n do
  if v[7 * i - 6] ~= SLOTS then strings[#strings + 1] = KEYS[base + i] end
end
if ARGV[3] then
  settle(ARGV[3], ARGV[4], false, strings)
  keep()
elseif #strings > 1 then
  prefetch(strings)
end

local out = {now, 1}
local slots, slot_order = {}, {}
local passed = true
for i = 1, n do
  local o = 7 * i - 7
  local kind, limit, period, cost = v[o + 1], v[o + 2], v[o + 3], v[o + 4]
  local key = KEYS[base + i]
  local ok, a, b = 0, 0, 0
  if kind == RATE then
    local s = rate(key)
    a, b = s.a, s.b
    if v[o + 5] >= 0 then
      local t2, r2 = a + v[o + 5], b + v[o + 6]
      if r2 >= limit then t2, r2 = t2 + 1, r2 - limit end
      -- allowed iff new_tat - now <= tau = limit * period_us (r2 < limit)
      local d = t2 - now
      if d < period or (d == period and r2 == 0) then
        ok = 1
        s.a, s.b, s.put = t2, r2, true
      end
    end
  elseif kind == QUOTA then
    local ends = v[o + 7]
    if ends == 0 then ends = window_end(now, period) end
    if ends <= now then
      flush(true)
      return redis.error_reply('a quota counter applied after its window ended: build the '
        .. 'plan with the same now as apply (or the caller clock lags the server)')
    end
    local s = quota(key, ends)
    a = s.a or 0
    if a + cost <= limit then
      ok = 1
      s.a, s.b, s.put = a + cost, ends, true
    end
  else
    local s = slots[key]
    if not s then
      s = {held = redis.call('ZCOUNT', key, '(' .. fmt(now), '+inf'), adds = {}}
      slots[key] = s
      slot_order[#slot_order + 1] = key
    end
    a = s.held
    if a < limit then
      ok = 1
      s.held = a + 1
      s.adds[#s.adds + 1] = {#out + 3, now + period, period}  -- where its lease id goes in out
    else
      -- read only when refused: the soonest live lease, else one this plan just staged
      local first = redis.call('ZRANGEBYSCORE', key, '(' .. fmt(now), '+inf', 'WITHSCORES',
                               'LIMIT', 0, 1)
      b = first[2] and tonumber(first[2]) or now + period
    end
  end
  if ok == 0 then passed = false end
  out[#out + 1] = ok
  out[#out + 1] = a
  out[#out + 1] = b
end

if not passed then
  out[2] = 0
  flush(true)
  return out
end
flush(false)
for _, key in ipairs(slot_order) do
  local adds = slots[key].adds
  if #adds > 0 then
    -- lease ids: one sequence per counter ('#'), never below now, so an id is not handed
    -- out again after the set expired
    local seen = redis.call('ZMSCORE', key, '#', '@')
    local id = seen[1] and -tonumber(seen[1]) or 0
    local lives = seen[2] and -tonumber(seen[2]) or 0
    local members, ends, period = {}, 0, 0
    for _, add in ipairs(adds) do
      id = math.max(id + 1, now)
      members[#members + 1] = fmt(add[2])
      members[#members + 1] = fmt(id)
      out[add[1]] = id
      if add[2] > ends then ends, period = add[2], add[3] end
    end
    members[#members + 1] = fmt(-id)
    members[#members + 1] = '#'
    local extend = ends > lives
    if extend then  -- the key lives a period past its last lease
      lives = ends + period
      members[#members + 1] = fmt(-lives)
      members[#members + 1] = '@'
      redis.call('ZREMRANGEBYSCORE', key, '0', fmt(now))
    end
    redis.call('ZADD', key, unpack(members))
    if extend then redis.call('PEXPIRE', key, ms(lives - now)) end
  end
end
return out
