-- Shared by release.lua, reconcile.lua, settle.lua and apply.lua (after prelude.lua): giving a
-- slot back and correcting a reservation, so one response's end can do both in one script, or
-- ride inside the next request's apply.

-- Remove a concurrency set's expired leases, once per key and call (a release riding inside
-- an apply and that apply's charge of the same counter share one).
local pruned = {}
local function prune(key)
  if not pruned[key] then
    redis.call('ZREMRANGEBYSCORE', key, '0', fmt(now))
    pruned[key] = true
  end
end

-- Give one concurrency slot back; 1 if it was still held. An expired lease is pruned first,
-- so its late release cannot free the slot of the request that took its place.
local function release_slot(key, id)
  prune(key)
  if id == '#' then return 0 end  -- the set's id sequence, never a lease
  return redis.call('ZREM', key, id)
end

-- Correct one rate or quota counter by the real usage: kind ('r' or 'q'), limit, delta (units
-- to charge more, negative to hand back), d_us, d_rem (rate: divmod(|delta| * period_us,
-- limit), computed exactly by the caller), ends (quota: the window's end; 0: aligned to
-- period). A rate never holds credit beyond its full burst (tat >= now); a quota never goes
-- below zero and a window that has ended is not reopened.
local function correct(key, kind, limit, delta, d_us, d_rem, ends, period)
  if kind == 'r' then
    local tat, rem = now, 0
    local v = redis.call('GET', key)
    if v then
      local t, r = string.match(v, '^(%d+) (%d+)$')
      tat, rem = tonumber(t), tonumber(r)
      if tat < now then tat, rem = now, 0 end
    end
    if delta > 0 then
      tat, rem = tat + d_us, rem + d_rem
      if rem >= limit then tat, rem = tat + 1, rem - limit end
    else
      tat, rem = tat - d_us, rem - d_rem
      if rem < 0 then tat, rem = tat - 1, rem + limit end
      if tat < now then tat, rem = now, 0 end
    end
    redis.call('SET', key, fmt(tat) .. ' ' .. fmt(rem), 'PX', ms(tat + 1 - now + RATE_SLACK_US))
  elseif kind == 'q' then
    if ends == 0 then ends = window_end(now, period) end
    if ends <= now then return end
    local v = redis.call('GET', key)
    local used
    if v then
      used = math.max(0, tonumber(v) + delta)
    elseif delta > 0 then
      used = delta
    else
      return
    end
    redis.call('SET', key, fmt(used), 'PX', ms(ends - now))
  end
end

-- Settle what ids and specs name (settle.lua's ARGV[2] and ARGV[3]), their keys from KEYS[1]
-- on: the lease ids, space-separated, then every correction's 7 values, one after another:
--   kind ('r' rate, 'q' quota), limit, delta, d_us, d_rem, ends_us, period_us.
-- Returns how many slots were still held, and how many KEYS it used.
local function settle(ids, specs)
  local released, i = 0, 0
  for id in string.gmatch(ids, '%d+') do
    i = i + 1
    released = released + release_slot(KEYS[i], id)
  end
  for kind, limit, delta, d_us, d_rem, ends, period in
      string.gmatch(specs, '(%a) (%d+) (%-?%d+) (%d+) (%d+) (%d+) (%d+)') do
    i = i + 1
    correct(KEYS[i], kind, tonumber(limit), tonumber(delta), tonumber(d_us), tonumber(d_rem),
            tonumber(ends), tonumber(period))
  end
  return released, i
end
