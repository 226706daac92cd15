-- Shared by every script (prepended when it is loaded): the clock and number formatting.
-- ARGV[1] is always now in whole microseconds, or '' to read the server's TIME (replicas
-- with skewed clocks then agree). Numbers go to Redis through '%d': tostring() would print
-- 14 significant digits only, and a time in microseconds has 16. Every number formatted is a
-- whole one below 2^53, which '%d' (a C long) prints exactly, and faster than '%.0f' (a
-- double's exact decimal expansion costs the server about a microsecond each).

local function fmt(x) return string.format('%d', x) end
local function ms(us) return fmt(math.ceil(us / 1000)) end
-- A rate key outlives its tat by a second. A tat that has passed reads as fresh (tat < now), so
-- this changes no answer; it only keeps Redis's own clock, which expires keys, from dropping a
-- key that a caller's time (a replica a little behind, replay's clock) still sees as live.
local RATE_SLACK_US = 1000000
local function window_end(now, period)  -- a window aligned to its period (hand-built counters)
  local r = now - math.floor(now / period) * period
  if r < 0 then r = r + period elseif r >= period then r = r - period end
  return now - r + period
end

-- A counter's kind (redis_counters._KIND).
local RATE, QUOTA, SLOTS = 1, 2, 3

-- Every counter's (apply.lua) or correction's (settling.lua) 7 values, packed by the caller
-- (redis_counters.SPEC: little-endian doubles), in one flat table: Redis's struct library
-- reads them in one call, where matching the same numbers in text costs microseconds. Each
-- value is a whole number below 2^53, exact in a double as in a Lua number.
local function specs(packed)
  local n = #packed / 56
  if n ~= math.floor(n) then
    error({err = 'ERR counter values must be 7 doubles each (redis_counters.SPEC)'})
  end
  if n == 0 then return {}, 0 end
  return {struct.unpack('<' .. string.rep('d', 7 * n), packed)}, n
end

local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
