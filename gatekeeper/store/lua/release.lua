-- Give concurrency slots back. KEYS: each lease's counter key; ARGV[1]: now (prelude.lua),
-- then each lease's id. Returns how many were still held (settling.lua: release_slot).

local released = 0
for i, key in ipairs(KEYS) do
  released = released + release_slot(key, ARGV[i + 1])
end
return released
