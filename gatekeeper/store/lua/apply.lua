-- Charge every counter of one request's plan, all or nothing, in one call (EVALSHA); first
-- settle the ends of earlier responses that ride along (settling.lua), so a slot one of them
-- gives back is free for this plan.
--
-- KEYS: the settled keys (when ARGV[3] is given: as settle.lua's KEYS), then the counters'
-- storage keys, in plan order.
-- ARGV[3], ARGV[4] (optional): the settles riding along, as settle.lua's ARGV[2] and ARGV[3].
-- ARGV[1]: now (prelude.lua). ARGV[2]: every counter's 7 values, space-separated, one
-- counter after another (one argument: each argument costs the client more than the parsing
-- here costs the server):
--   kind ('r' rate, 'q' quota, 'c' concurrency), limit, period_us, cost,
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

local base = 0
if ARGV[3] then
  local _
  _, base = settle(ARGV[3], ARGV[4])
end

local out = {now, 1}
local staged, order = {}, {}
local passed = true
local i = 0

for kind, limit, period, cost, add_us, add_rem, ends in
    string.gmatch(ARGV[2], '(%a) (%d+) (%d+) (%d+) (%-?%d+) (%d+) (%d+)') do
  i = i + 1
  local key = KEYS[base + i]
  limit, period, cost = tonumber(limit), tonumber(period), tonumber(cost)
  local s = staged[key]
  local ok, a, b = 0, 0, 0
  if kind == 'r' then
    if not s then
      local v = redis.call('GET', key)
      s = {kind = 'r', tat = 0, rem = 0}
      if v then
        local t, r = string.match(v, '^(%d+) (%d+)$')
        s.tat, s.rem = tonumber(t), tonumber(r)
      end
    end
    if s.tat < now then s.tat, s.rem = now, 0 end  -- tat < now * limit, in two parts
    a, b = s.tat, s.rem
    add_us, add_rem = tonumber(add_us), tonumber(add_rem)
    if add_us >= 0 then
      local t2, r2 = s.tat + add_us, s.rem + add_rem
      if r2 >= limit then t2, r2 = t2 + 1, r2 - limit end
      -- allowed iff new_tat - now <= tau = limit * period_us (r2 < limit)
      local d = t2 - now
      if d < period or (d == period and r2 == 0) then
        ok = 1
        s.tat, s.rem = t2, r2
      end
    end
  elseif kind == 'q' then
    ends = tonumber(ends)
    if ends == 0 then ends = window_end(now, period) end
    if ends <= now then
      return redis.error_reply('a quota counter applied after its window ended: build the '
        .. 'plan with the same now as apply (or the caller clock lags the server)')
    end
    if not s then
      s = {kind = 'q', used = tonumber(redis.call('GET', key) or '0'), ends = ends}
    end
    a = s.used
    if s.used + cost <= limit then
      ok = 1
      s.used = s.used + cost
    end
  else
    if not s then
      s = {kind = 'c', held = redis.call('ZCOUNT', key, '(' .. fmt(now), '+inf'), adds = {}}
    end
    a = s.held
    if s.held < limit then
      ok = 1
      s.held = s.held + 1
      table.insert(s.adds, {#out + 3, now + period})  -- where its lease id goes in out
    else
      -- read only when refused: the soonest live lease, else one this plan just staged
      local first = redis.call('ZRANGEBYSCORE', key, '(' .. fmt(now), '+inf', 'WITHSCORES',
                               'LIMIT', 0, 1)
      b = first[2] and tonumber(first[2]) or now + period
    end
  end
  if ok == 0 then passed = false end
  if not staged[key] then
    staged[key] = s
    table.insert(order, key)
  end
  table.insert(out, ok)
  table.insert(out, a)
  table.insert(out, b)
end

if not passed then
  out[2] = 0
  return out
end
for _, key in ipairs(order) do
  local s = staged[key]
  if s.kind == 'r' then
    redis.call('SET', key, fmt(s.tat) .. ' ' .. fmt(s.rem), 'PX', ms(s.tat + 1 - now + RATE_SLACK_US))
  elseif s.kind == 'q' then
    redis.call('SET', key, fmt(s.used), 'PX', ms(s.ends - now))
  elseif #s.adds > 0 then
    -- lease ids: one sequence per counter, kept in the set as member '#' (score: -last id),
    -- and never below now, so an id is not handed out again after the set expired
    prune(key)  -- settling.lua: once per key and call
    local last = redis.call('ZSCORE', key, '#')
    local id = last and -tonumber(last) or 0
    local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    local ends = top[2] and tonumber(top[2]) or 0
    local members = {}  -- the new leases and the sequence, in one ZADD
    for _, add in ipairs(s.adds) do
      id = math.max(id + 1, now)
      table.insert(members, fmt(add[2]))
      table.insert(members, fmt(id))
      out[add[1]] = id
      if add[2] > ends then ends = add[2] end
    end
    table.insert(members, fmt(-id))
    table.insert(members, '#')
    redis.call('ZADD', key, unpack(members))
    redis.call('PEXPIRE', key, ms(ends - now))
  end
end
return out
