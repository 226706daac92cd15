-- Give concurrency slots back. KEYS: each lease's counter key; ARGV[1]: now (prelude.lua),
-- then each lease's id. Returns how many were still held (counters.lua).

local plan, ids, fixes = '', table.concat(ARGV, ' ', 2), ''
