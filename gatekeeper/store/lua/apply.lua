-- Charge every counter of one request's plan, all or nothing, in one call (EVALSHA); first
-- settle the ends of earlier responses that ride along (counters.lua, which does the work),
-- so a slot one of them gives back is free for this plan, and a counter both corrected and
-- charged is read and written once.
--
-- KEYS: the settled keys (when ARGV[3] is given: as settle.lua's KEYS), then the counters'
-- storage keys, in plan order.
-- ARGV[3], ARGV[4] (optional): the settles riding along, as settle.lua's ARGV[2] and ARGV[3].
-- ARGV[1]: now (prelude.lua). ARGV[2]: every counter's 7 values packed (prelude.lua: SPEC),
-- one counter after another (one argument: each argument costs the client more than the
-- unpacking here costs the server):
--   kind (RATE, QUOTA or SLOTS), limit, period_us, cost,
--   add_us, add_rem   rate: divmod(cost * period_us, limit), computed exactly by the caller
--                     (-1 when cost > limit: it can never pass),
--   ends_us           quota: the window's end (0: aligned to its period).
-- Returns now_us, passed, then per counter allowed, a, b, as little-endian 8-byte integers
-- in one string (redis_counters.reply_numbers):
--   rate: the tat before this charge, as tat_us and tat_rem (tat = tat_us * limit + tat_rem,
--         in units of 1/limit us, like limits/gcra.py: kept in two parts because a Lua number
--         is a double, exact only up to 2^53, and tat_us * limit is not);
--   quota: the units used before this charge, and 0;
--   concurrency: the slots held before this charge, and the soonest lease expiry (us) when
--         refused or the new lease id when the plan passed.
-- Nothing of the plan is written unless every counter allows (the settles are, either way).
-- Redis calls: one MGET of every key, and one SET per key written.

local plan, ids, fixes = ARGV[2], ARGV[3] or '', ARGV[4] or ''

