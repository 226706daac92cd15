-- The end of one response, or of several (a batch a flusher sends), in one call: give the
-- slots back and correct the reservations with the real usage (counters.lua).
-- KEYS: the leases' counter keys, then the corrected counters' keys. ARGV[1]: now
-- (prelude.lua). ARGV[2]: the lease ids, space-separated, in KEYS order. ARGV[3]: every
-- correction's 7 values (prelude.lua: SPEC). Returns how many slots were still held.

local plan, ids, fixes = '', ARGV[2], ARGV[3]
