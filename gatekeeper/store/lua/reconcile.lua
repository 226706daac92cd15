-- Correct one rate or quota counter by the real usage. KEYS[1]: the counter's key.
-- ARGV: now (prelude.lua), kind ('r' or 'q'), limit, delta (units to charge more, negative
-- to hand back), delta_us, delta_rem (rate: divmod(|delta| * period_us, limit), computed
-- exactly by the caller), ends_us (quota: the window's end; 0: aligned to period_us, ARGV[8]).
-- A rate never holds credit beyond its full burst (tat >= now); a quota never goes below zero
-- and a window that has ended is not reopened.

local key, kind, limit, delta = KEYS[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if kind == 'r' then
  local tat, rem = now, 0
  local v = redis.call('GET', key)
  if v then
    local t, r = string.match(v, '^(%d+) (%d+)$')
    tat, rem = tonumber(t), tonumber(r)
    if tat < now then tat, rem = now, 0 end
  end
  local d_us, d_rem = tonumber(ARGV[5]), tonumber(ARGV[6])
  if delta > 0 then
    tat, rem = tat + d_us, rem + d_rem
    if rem >= limit then tat, rem = tat + 1, rem - limit end
  else
    tat, rem = tat - d_us, rem - d_rem
    if rem < 0 then tat, rem = tat - 1, rem + limit end
    if tat < now then tat, rem = now, 0 end
  end
  redis.call('SET', key, fmt(tat) .. ' ' .. fmt(rem), 'PX', ms(tat + 1 - now))
elseif kind == 'q' then
  local ends = tonumber(ARGV[7])
  if ends == 0 then ends = window_end(now, tonumber(ARGV[8])) end
  if ends <= now then return 0 end
  local v = redis.call('GET', key)
  local used
  if v then
    used = math.max(0, tonumber(v) + delta)
  elseif delta > 0 then
    used = delta
  else
    return 0
  end
  redis.call('SET', key, fmt(used), 'PX', ms(ends - now))
end
return 1
