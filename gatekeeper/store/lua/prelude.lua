-- Shared by every script (prepended when it is loaded): the clock and number formatting.
-- ARGV[1] is always now in whole microseconds, or '' to read the server's TIME (replicas
-- with skewed clocks then agree).
--
-- What a script costs the server is its redis.call()s (a microsecond or more each, measured)
-- and, about as much, whatever Lua makes per call: every local function is a closure made
-- again on every call, and so is every table (then collected). These scripts keep both few.
--
-- Numbers go to Redis as strings formatted with '%d': a Lua number handed to redis.call is
-- printed with '%.17g' by the server, which costs about a microsecond more per argument, and
-- tostring() prints 14 significant digits only, where a time in microseconds has 16. Every
-- number formatted is a whole one below 2^53, which '%d' (a C long) prints exactly.

local fmt = string.format

-- A rate key outlives its tat by a second. A tat that has passed reads as fresh (tat < now), so
-- this changes no answer; it only keeps Redis's own clock, which expires keys, from dropping a
-- key that a caller's time (a replica a little behind, replay's clock) still sees as live.
local RATE_SLACK_US = 1000000

-- A counter's kind (redis_counters._KIND).
local RATE, QUOTA, SLOTS = 1, 2, 3

-- Every counter's (apply.lua) or correction's (counters.lua) 7 values, packed by the caller
-- (redis_counters.SPEC: little-endian doubles), one after another: read with Redis's struct
-- library, one counter's at a time straight into locals (SPEC: the format; unpacking them all
-- into one table first costs the server several microseconds more, measured), where matching
-- the same numbers in text costs microseconds. Each value is a whole number below 2^53, exact
-- in a double as in a Lua number.
local SPEC = '<ddddddd'
local BAD_SPEC = 'ERR counter values must be 7 doubles each (redis_counters.SPEC)'

local now = ARGV[1]
if now == '' then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
else
  now = tonumber(now)
end
