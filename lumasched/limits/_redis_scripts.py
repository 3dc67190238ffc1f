"""The Lua scripts behind ``RedisLimiter``: one atomic step each, on Redis time.

Every family of every account has one key group, ``NS:{ACCOUNT:FAMILY}:*`` (the
``{...}`` hash tag keeps them on one Cluster slot):

=========  ======  ==========================================================
leases     ZSET    lease id -> deadline (ms); live slot holders
orphans    ZSET    lease id -> orphaned at; expired leases whose generation was
                   submitted: they still count until adopted or ``orphan_max``
gens       HASH    lease id -> generation id (``mark_submitted``)
owners     HASH    lease id -> worker that holds it (for ``lumasched limits``)
queue      ZSET    ticket -> sequence number: the FIFO of waiters
waiters    ZSET    ticket -> liveness deadline; dead waiters leave the queue
seq        STRING  counter for queue order
rlog       ZSET    grant ticket -> grant time (ms): the exact sliding log
meta       HASH    created_ms (absent: state lost), epoch (changes on loss or an
                   outage: workers then re-register leases and recent grants),
                   last_ms, hold_until, blocked_until, factor, counters, limits
=========  ======  ==========================================================

Time is always ``redis.call('TIME')`` in integer milliseconds; no client clock
is read. Numbers that are not integers travel as strings (a Lua number returned
to Redis is truncated).
"""

from __future__ import annotations

KEY_NAMES = ("leases", "orphans", "gens", "owners", "queue", "waiters", "seq", "rlog", "meta")

# ARGV[1..7]: lease_ttl_ms, gap_ms, hold_ms, waiter_ttl_ms, orphan_max_ms, channel,
# the epoch this client last saw ('' if none)
PRELUDE = """
local K_LEASES, K_ORPHANS, K_GENS, K_OWNERS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_QUEUE, K_WAITERS, K_SEQ, K_RLOG, K_META = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local lease_ttl = tonumber(ARGV[1])
local gap = tonumber(ARGV[2])
local hold = tonumber(ARGV[3])
local waiter_ttl = tonumber(ARGV[4])
local orphan_max = tonumber(ARGV[5])
local channel = ARGV[6]
local known_epoch = ARGV[7]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local meta = redis.call('HMGET', K_META, 'created_ms', 'last_ms', 'hold_until', 'epoch')
local event = ''
local epoch = meta[4] or meta[1]
if not meta[1] then
  epoch = tostring(now)
  redis.call('HSET', K_META, 'created_ms', now, 'epoch', epoch)
  if known_epoch ~= '' then
    -- this client saw state that is gone (restart without persistence, FLUSH,
    -- eviction): hold new grants until live workers re-register what they hold
    -- and what they were granted in the last window
    redis.call('HSET', K_META, 'hold_until', now + hold)
    redis.call('HINCRBY', K_META, 'lost_count', 1)
    event = 'lost'
  end
else
  local last = tonumber(meta[2]) or now
  if now < last then now = last end
  -- leases ran out while nothing reached Redis: their holders could not renew.
  -- (Only leases that ran out count: a silence shorter than a holder's own TTL,
  -- e.g. a worker with a longer lease TTL than this caller's, harmed nobody.)
  if now - last > gap and redis.call('ZCOUNT', K_LEASES, '(' .. last, now) > 0 then
    -- a new epoch makes every live worker re-register its leases and its recent
    -- grants, which a forward clock jump may have aged out of the log
    epoch = tostring(now)
    redis.call('HSET', K_META, 'epoch', epoch)
    if now - last > orphan_max then
      -- silent for longer than anything of an absent worker may count: these are
      -- the leftovers of workers that are gone (a crash), reaped below, no hold
      redis.call('HINCRBY', K_META, 'stale_count', 1)
      event = 'stale'
    else
      -- an outage, or the clock jumped: give holders a TTL and hold new grants
      for _, id in ipairs(redis.call('ZRANGE', K_LEASES, 0, -1)) do
        redis.call('ZADD', K_LEASES, 'GT', now + lease_ttl, id)
      end
      if now + hold > (tonumber(meta[3]) or 0) then
        redis.call('HSET', K_META, 'hold_until', now + hold)
      end
      redis.call('HINCRBY', K_META, 'gap_count', 1)
      event = 'gap'
    end
  end
end
redis.call('HSET', K_META, 'last_ms', now)
local freed = 0
local expired = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', now, 'WITHSCORES')
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', K_LEASES, '-inf', now)
  redis.call('HINCRBY', K_META, 'expired_count', #expired / 2)
  for i = 1, #expired, 2 do
    local id = expired[i]
    if redis.call('HEXISTS', K_GENS, id) == 1 then
      -- orphaned when its lease ran out (not now: after a long silence it is old)
      redis.call('ZADD', K_ORPHANS, expired[i + 1], id)
    else
      redis.call('HDEL', K_OWNERS, id)
      freed = freed + 1
    end
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_ORPHANS, '-inf', now - orphan_max)) do
  redis.call('ZREM', K_ORPHANS, id)
  redis.call('HDEL', K_GENS, id)
  redis.call('HDEL', K_OWNERS, id)
  freed = freed + 1
end
for _, w in ipairs(redis.call('ZRANGEBYSCORE', K_WAITERS, '-inf', now)) do
  redis.call('ZREM', K_WAITERS, w)
  if redis.call('ZREM', K_QUEUE, w) == 1 then freed = freed + 1 end
end
local function nudge(n)
  if n > 0 then redis.call('PUBLISH', channel, n) end
end
"""

# ARGV[8..14]: ticket, lease_id, owner, concurrency, requests, window_ms, rate (1|0;
# 0: a slot only, for a generation created earlier: no token, no 429 pause)
# -> {granted 1|0, hint_ms (-1: none), 'ok'|'slot'|'dup'|reason, factor, event, rank, epoch}
ACQUIRE = (
    PRELUDE
    + """
local ticket, lease_id, owner = ARGV[8], ARGV[9], ARGV[10]
local n_limit, r_limit, window = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local rate = ARGV[14] ~= '0'
nudge(freed)
local m = redis.call('HMGET', K_META, 'hold_until', 'blocked_until', 'factor')
local factor_s = m[3] or '1'
if redis.call('ZSCORE', K_LEASES, lease_id) or redis.call('ZSCORE', K_ORPHANS, lease_id) then
  redis.call('ZREM', K_ORPHANS, lease_id)
  redis.call('ZADD', K_LEASES, 'GT', now + lease_ttl, lease_id)
  redis.call('HSET', K_OWNERS, lease_id, owner)
  redis.call('ZREM', K_QUEUE, ticket)
  redis.call('ZREM', K_WAITERS, ticket)
  return {1, 0, 'dup', factor_s, event, 0, epoch}
end
redis.call('HSET', K_META, 'limit_n', n_limit, 'limit_r', r_limit, 'window_ms', window)
if not redis.call('ZSCORE', K_QUEUE, ticket) then
  redis.call('ZADD', K_QUEUE, redis.call('INCR', K_SEQ), ticket)
end
redis.call('ZADD', K_WAITERS, now + waiter_ttl, ticket)
local rank = redis.call('ZRANK', K_QUEUE, ticket)
local hold_until = tonumber(m[1]) or 0
if now < hold_until then return {0, hold_until - now, 'hold', factor_s, event, rank, epoch} end
local blocked = tonumber(m[2]) or 0
if rate and now < blocked then
  return {0, blocked - now, 'blocked', factor_s, event, rank, epoch}
end
local factor = tonumber(factor_s)
local eff_n = math.max(1, math.floor(n_limit * factor + 1e-9))
local eff_r = math.max(1, math.floor(r_limit * factor + 1e-9))
local free = eff_n - redis.call('ZCARD', K_LEASES) - redis.call('ZCARD', K_ORPHANS)
if free <= 0 then
  local first = redis.call('ZRANGE', K_LEASES, 0, 0, 'WITHSCORES')
  local hint = -1
  if first[2] then hint = tonumber(first[2]) - now end
  return {0, hint, 'full', factor_s, event, rank, epoch}
end
if rank >= free then return {0, -1, 'queued', factor_s, event, rank, epoch} end
if rate then
  redis.call('ZREMRANGEBYSCORE', K_RLOG, '-inf', now - window)
  local used = redis.call('ZCARD', K_RLOG)
  if rank >= eff_r - used then
    -- strict FIFO for tokens too: this ticket goes when entry idx leaves the window
    local idx = used - eff_r + rank
    local hint = -1
    if idx >= 0 and idx < used then
      local e = redis.call('ZRANGE', K_RLOG, idx, idx, 'WITHSCORES')
      hint = tonumber(e[2]) + window - now
    end
    return {0, hint, 'rate', factor_s, event, rank, epoch}
  end
  redis.call('ZADD', K_RLOG, now, ticket)  -- the ticket names this grant (re-registration)
  redis.call('PEXPIRE', K_RLOG, 2 * window)
  redis.call('HINCRBY', K_META, 'granted', 1)
end
redis.call('ZADD', K_LEASES, now + lease_ttl, lease_id)
redis.call('HSET', K_OWNERS, lease_id, owner)
redis.call('ZREM', K_QUEUE, ticket)
redis.call('ZREM', K_WAITERS, ticket)
if not rate then return {1, 0, 'slot', factor_s, event, 0, epoch} end
return {1, 0, 'ok', factor_s, event, 0, epoch}
"""
)

# ARGV[8..9]: lease_id, ticket ('' for none) -> slots freed (0 or 1)
RELEASE = (
    PRELUDE
    + """
local lease_id, ticket = ARGV[8], ARGV[9]
local removed = redis.call('ZREM', K_LEASES, lease_id) + redis.call('ZREM', K_ORPHANS, lease_id)
redis.call('HDEL', K_GENS, lease_id)
redis.call('HDEL', K_OWNERS, lease_id)
if ticket ~= '' then
  redis.call('ZREM', K_WAITERS, ticket)
  freed = freed + redis.call('ZREM', K_QUEUE, ticket)
end
nudge(freed + removed)
return removed
"""
)

# ARGV[8..10]: owner, window_ms, number of leases L; then L pairs (lease_id,
# generation_id or ''); then pairs (grant ticket, age_ms) to put back in the log
# -> {statuses, event, epoch}; status 1 renewed, 2 re-registered (was gone), 3 taken
# back from the orphans (we were late)
RENEW = (
    PRELUDE
    + """
local owner, window, n_leases = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10])
local out = {}
local grants_from = 11 + 2 * n_leases
for i = 11, grants_from - 1, 2 do
  local id, gen = ARGV[i], ARGV[i + 1]
  local status = 1
  if redis.call('ZSCORE', K_LEASES, id) then
    redis.call('ZADD', K_LEASES, 'XX', 'GT', now + lease_ttl, id)
  elseif redis.call('ZSCORE', K_ORPHANS, id) then
    redis.call('ZREM', K_ORPHANS, id)
    redis.call('ZADD', K_LEASES, now + lease_ttl, id)
    redis.call('HINCRBY', K_META, 'late_count', 1)
    status = 3
  else
    -- the generation is really in flight: mirror reality, even above the cap
    redis.call('ZADD', K_LEASES, now + lease_ttl, id)
    redis.call('HINCRBY', K_META, 'reinsert_count', 1)
    status = 2
  end
  redis.call('HSET', K_OWNERS, id, owner)
  if gen ~= '' then redis.call('HSET', K_GENS, id, gen) end
  out[#out + 1] = status
end
local readded = 0
for i = grants_from, #ARGV, 2 do
  local age = tonumber(ARGV[i + 1])
  if age < window then
    readded = readded + redis.call('ZADD', K_RLOG, 'NX', now - age, ARGV[i])
  end
end
if readded > 0 then
  redis.call('PEXPIRE', K_RLOG, 2 * window)
  redis.call('HINCRBY', K_META, 'regranted_count', readded)
end
nudge(freed)
return {out, event, epoch}
"""
)

# ARGV[8..]: lease ids -> how many became orphans at once (a clean shutdown)
ABANDON = (
    PRELUDE
    + """
local n = 0
for i = 8, #ARGV do
  local id = ARGV[i]
  if redis.call('HEXISTS', K_GENS, id) == 1 and redis.call('ZREM', K_LEASES, id) == 1 then
    redis.call('ZADD', K_ORPHANS, now, id)
    n = n + 1
  end
end
nudge(freed)
return n
"""
)

# ARGV[8..9]: owner, max -> {lease_id, generation_id, ...}
ADOPT = (
    PRELUDE
    + """
nudge(freed)
local popped = redis.call('ZPOPMIN', K_ORPHANS, tonumber(ARGV[9]))
local out = {}
for i = 1, #popped, 2 do
  local id = popped[i]
  redis.call('ZADD', K_LEASES, now + lease_ttl, id)
  redis.call('HSET', K_OWNERS, id, ARGV[8])
  redis.call('HINCRBY', K_META, 'adopted_count', 1)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', K_GENS, id) or ''
end
return out
"""
)

# ARGV[8..15]: retry_after_ms (-1: none), backoff_base_ms, backoff_cap_ms,
# max_penalty_ms, min_factor, concurrency, requests, window_ms -> {pause_ms, factor}
PENALTY = (
    PRELUDE
    + """
nudge(freed)
redis.call('HSET', K_META, 'limit_n', ARGV[13], 'limit_r', ARGV[14], 'window_ms', ARGV[15])
local consecutive = redis.call('HINCRBY', K_META, 'consecutive_429', 1)
redis.call('HINCRBY', K_META, 'rate_limited', 1)
local pause = tonumber(ARGV[8])
if pause < 0 then
  pause = math.min(tonumber(ARGV[10]), tonumber(ARGV[9]) * 2 ^ (consecutive - 1))
else
  pause = math.min(pause, tonumber(ARGV[11]))
end
pause = math.floor(pause)
local m = redis.call('HMGET', K_META, 'blocked_until', 'decrease_after', 'factor')
local blocked = math.max(tonumber(m[1]) or 0, now + pause)
redis.call('HSET', K_META, 'blocked_until', blocked)
local factor = tonumber(m[3] or '1')
-- 429s answering requests sent before this pause began do not cut again
if now >= (tonumber(m[2]) or 0) then
  factor = math.max(tonumber(ARGV[12]), factor * 0.5)
  redis.call('HSET', K_META, 'factor', tostring(factor), 'decrease_after', blocked)
end
return {blocked - now, tostring(factor)}
"""
)

# ARGV[8]: recovery step -> factor
SUCCESS = (
    PRELUDE
    + """
nudge(freed)
redis.call('HSET', K_META, 'consecutive_429', 0)
local factor = tonumber(redis.call('HGET', K_META, 'factor') or '1')
if factor < 1 then
  factor = math.min(1, factor + tonumber(ARGV[8]))
  redis.call('HSET', K_META, 'factor', tostring(factor))
  nudge(1)
end
return tostring(factor)
"""
)

# No prelude: create the state of a brand-new key group. -> 1 if created
BOOTSTRAP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HEXISTS', KEYS[9], 'created_ms') == 1 then return 0 end
if redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) > 0 then return 0 end
redis.call('HSET', KEYS[9], 'created_ms', now, 'last_ms', now, 'hold_until', 0, 'epoch', now)
return 1
"""

# Read only. ARGV[1]: window_ms when meta does not say
# -> {now, meta (flat), leases (flat, with scores), orphans (flat), gens (flat),
#     owners (flat), queue length, grants in the window}
INSPECT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(redis.call('HGET', KEYS[9], 'window_ms') or ARGV[1])
return {
  now,
  redis.call('HGETALL', KEYS[9]),
  redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES'),
  redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES'),
  redis.call('HGETALL', KEYS[3]),
  redis.call('HGETALL', KEYS[4]),
  redis.call('ZCARD', KEYS[5]),
  redis.call('ZCOUNT', KEYS[8], '(' .. (now - window), '+inf'),
}
"""
