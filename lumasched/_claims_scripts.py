"""The Lua scripts behind ``ClaimStore``: one atomic step each, on Redis time.

Each script gets the manifest's keys in ``KEY_NAMES`` order (see the table in
``lumasched.claims``). The mutating ones (``CLAIM``, ``UPDATE``, ``RENEW``)
start with ``PRELUDE``: it reads Redis ``TIME`` (never a host clock) and
detects a lost claim state (``meta`` gone after this worker had seen it).
"""

from __future__ import annotations

__all__ = ["CLAIM", "KEY_NAMES", "PEEK", "RENEW", "SNAPSHOT", "UPDATE"]

KEY_NAMES = ("state", "items", "owner", "leases", "gens", "inflight", "meta")

# ARGV: seen (1: this worker used the state before), me, ttl_ms, item, ...
PRELUDE = """
local K_STATE, K_ITEMS, K_OWNER, K_LEASES = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_GENS, K_INFLIGHT, K_META = KEYS[5], KEYS[6], KEYS[7]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HEXISTS', K_META, 'created_ms') == 0 then
  if ARGV[1] == '1' then return {'state_lost'} end
  redis.call('HSET', K_META, 'created_ms', now)
end
local me, ttl, item = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local function live_owner(id)
  local owner = redis.call('HGET', K_OWNER, id)
  local deadline = tonumber(redis.call('ZSCORE', K_LEASES, id) or '0')
  if owner and deadline > now then return owner, deadline end
  return false, 0
end
"""

# ARGV: seen, me, ttl_ms, item
# -> {status, state, record json, ms left on the holder's lease, holder (or last holder)}
CLAIM = (
    PRELUDE
    + """
local state = redis.call('HGET', K_STATE, item)
local rec = redis.call('HGET', K_ITEMS, item) or ''
local prev = redis.call('HGET', K_OWNER, item)
if state == 'completed' or state == 'failed' then return {'done', state, rec, 0, prev or ''} end
local holder, deadline = live_owner(item)
if holder and holder ~= me then return {'taken', state or '', rec, deadline - now, holder} end
redis.call('ZADD', K_LEASES, now + ttl, item)
redis.call('HSET', K_OWNER, item, me)
if not state then
  state = 'claimed'
  redis.call('HSET', K_STATE, item, state)
end
local status = 'claimed'
if prev and prev ~= me then status = 'adopted' end
return {status, state, rec, ttl, prev or ''}
"""
)

# ARGV: seen, me, ttl_ms, item, mode, state, record json, generation id, fingerprint
# modes: intent (fenced: a live claim of ours), generation (an answered create: the
# id is a fact whoever holds the claim now), found (reconcile: refused if the
# generation is another item's or a twin's create is in flight), finish, release
# -> {'ok'} or {'lost'} / {'taken'} / {'twin'} / {'done'}
UPDATE = (
    PRELUDE
    + """
local mode, state, rec, gen, fp = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local holder = live_owner(item)
local owner = redis.call('HGET', K_OWNER, item)
local current = redis.call('HGET', K_STATE, item)
if current == 'completed' or (current == 'failed' and mode ~= 'finish') then return {'done'} end
if mode == 'release' then
  if owner == me then redis.call('ZREM', K_LEASES, item) end
  redis.call('HDEL', K_INFLIGHT, item)
  return {'ok'}
end
if mode == 'intent' then
  if holder ~= me then return {'lost'} end
  redis.call('HSET', K_INFLIGHT, item, fp)
elseif mode == 'found' then
  local other = redis.call('HGET', K_GENS, gen)
  if other and other ~= item then return {'taken'} end
  local flat = redis.call('HGETALL', K_INFLIGHT)
  for i = 1, #flat, 2 do
    if flat[i] ~= item and flat[i + 1] == fp and live_owner(flat[i]) then return {'twin'} end
  end
end
if gen ~= '' then
  redis.call('HSET', K_GENS, gen, item)
  redis.call('HDEL', K_INFLIGHT, item)
end
if mode == 'finish' then
  redis.call('HDEL', K_INFLIGHT, item)
  redis.call('HSET', K_STATE, item, state)
  redis.call('HSET', K_ITEMS, item, rec)
  if owner == me then redis.call('ZREM', K_LEASES, item) end
  return {'ok'}
end
if owner ~= me then return {'lost'} end
redis.call('HSET', K_STATE, item, state)
redis.call('HSET', K_ITEMS, item, rec)
redis.call('ZADD', K_LEASES, now + ttl, item)
return {'ok'}
"""
)

# ARGV: seen, me, ttl_ms, '', items... -> the items no longer ours
RENEW = (
    PRELUDE
    + """
local lost = {}
for i = 5, #ARGV do
  local id = ARGV[i]
  local state = redis.call('HGET', K_STATE, id)
  if redis.call('HGET', K_OWNER, id) == me and state ~= 'completed' and state ~= 'failed' then
    local holder = live_owner(id)
    if holder == me or not holder then redis.call('ZADD', K_LEASES, now + ttl, id) end
  else
    lost[#lost + 1] = id
  end
end
return lost
"""
)

# ARGV: items -> {now, state known (1|0), then per item: state, record, owner, deadline}
PEEK = """
local t = redis.call('TIME')
local out = {tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000),
             redis.call('HEXISTS', KEYS[7], 'created_ms')}
for i = 1, #ARGV do
  local id = ARGV[i]
  out[#out + 1] = redis.call('HGET', KEYS[1], id) or ''
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
  out[#out + 1] = redis.call('HGET', KEYS[3], id) or ''
  out[#out + 1] = redis.call('ZSCORE', KEYS[4], id) or '0'
end
return out
"""

# -> {now, state flat, items flat, owner flat, leases flat with scores, state known}
SNAPSHOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {now, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]),
        redis.call('HGETALL', KEYS[3]), redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES'),
        redis.call('HEXISTS', KEYS[7], 'created_ms')}
"""
