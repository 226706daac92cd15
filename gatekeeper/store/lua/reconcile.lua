-- Correct one rate or quota counter by the real usage (counters.lua). KEYS[1]: the counter's
-- key. ARGV: now (prelude.lua), kind (RATE or QUOTA), limit, delta, delta_us, delta_rem,
-- ends_us, period_us.

local plan, ids = '', ''
local fixes = struct.pack(SPEC, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
                          tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]),
                          tonumber(ARGV[8]))
