-- Give concurrency slots back. KEYS: each lease's counter key; ARGV[1]: now (prelude.lua),
-- then each lease's id. Returns how many were still held: an expired lease is pruned first,
-- so its late release cannot free the slot of the request that took its place.

local released = 0
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '0', fmt(now))
  if ARGV[i + 1] ~= '#' then
    released = released + redis.call('ZREM', key, ARGV[i + 1])
  end
end
return released
