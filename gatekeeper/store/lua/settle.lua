-- The end of one response in one call: give its slots back and correct its reservations
-- with the real usage (settling.lua). KEYS: the leases' counter keys, then the corrected
-- counters' keys. ARGV[1]: now (prelude.lua). ARGV[2]: the lease ids, space-separated, in
-- KEYS order. ARGV[3]: every correction's 7 values, space-separated, one after another:
--   kind ('r' rate, 'q' quota), limit, delta, d_us, d_rem, ends_us, period_us.
-- Returns how many slots were still held.

local released, i = 0, 0
for id in string.gmatch(ARGV[2], '%d+') do
  i = i + 1
  released = released + release_slot(KEYS[i], id)
end
for kind, limit, delta, d_us, d_rem, ends, period in
    string.gmatch(ARGV[3], '(%a) (%d+) (%-?%d+) (%d+) (%d+) (%d+) (%d+)') do
  i = i + 1
  correct(KEYS[i], kind, tonumber(limit), tonumber(delta), tonumber(d_us), tonumber(d_rem),
          tonumber(ends), tonumber(period))
end
return released
