"""The Lua scripts behind ``ClaimStore``: one atomic step each, on Redis time.

Each script gets the batch's keys in ``KEY_NAMES`` order (see the table in
``lumasched.claims``). The mutating ones (``CLAIM``, ``UPDATE``, ``RENEW``,
``RESEED``) start with ``PRELUDE``: it reads Redis ``TIME`` (never a host
clock) and refuses to act on a state whose *epoch* is not the one the caller
knows: the state was lost (restart without persistence, failover to a replica
that missed writes, FLUSH, eviction) and the caller must re-seed what it knows
(``HELLO`` then ``RESEED``) before it may claim or record anything again.
"""

from __future__ import annotations

__all__ = ["CLAIM", "HELLO", "KEY_NAMES", "PEEK", "RENEW", "RESEED", "SETTLE", "SNAPSHOT", "UPDATE"]

KEY_NAMES = ("state", "items", "owner", "leases", "gens", "inflight", "meta", "sites", "recovery")

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_KEYS = """
local K_STATE, K_ITEMS, K_OWNER, K_LEASES = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_GENS, K_INFLIGHT, K_META, K_SITES, K_RECOVERY = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
"""

# ARGV: epoch the caller knows, me, ttl_ms, item, ...
PRELUDE = (
    _KEYS
    + _NOW
    + """
local epoch = redis.call('HGET', K_META, 'epoch') or redis.call('HGET', K_META, 'created_ms')
if not epoch or epoch ~= ARGV[1] then return {'state_lost'} end
local me, ttl, item = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local function live_owner(id)
  local owner = redis.call('HGET', K_OWNER, id)
  local deadline = tonumber(redis.call('ZSCORE', K_LEASES, id) or '0')
  if owner and deadline > now then return owner, deadline end
  return false, 0
end
"""
)

# ARGV: the epoch this site knew ('' if none: a site new to the batch), site, site
# label, grace_ms, reseed_max_ms, then known sites as (site, label) pairs
# -> {epoch, lost (1: this epoch began with a loss and is not settled), sites flat,
#     reseed (1: put back what this site knows)}
# A worker joins (or re-joins after a loss) here. A site that knew another epoch
# than the current one (or none exists) saw the state lost: the first one back
# opens a recovery window, in which items nobody re-seeds are not claimable until
# every site that worked the batch re-seeded (or ``SETTLE``).
HELLO = (
    _KEYS
    + _NOW
    + """
local known, site, label = ARGV[1], ARGV[2], ARGV[3]
local grace, reseed_max = tonumber(ARGV[4]), tonumber(ARGV[5])
local epoch = redis.call('HGET', K_META, 'epoch') or redis.call('HGET', K_META, 'created_ms')
if not epoch then
  epoch = tostring(now)
  redis.call('HSET', K_META, 'created_ms', now, 'epoch', epoch)
end
local missed = known ~= '' and known ~= epoch
local others = 0
for i = 6, #ARGV, 2 do
  redis.call('HSETNX', K_SITES, ARGV[i], ARGV[i + 1])
  if ARGV[i] ~= site then others = others + 1 end
end
if site == '' then return {epoch, '0', {}, '0'} end  -- an importer: not a site
redis.call('HSET', K_SITES, site, label)
if missed and redis.call('HGET', K_META, 'lost') ~= '1' then
  -- the first site back after the loss: open the recovery window
  redis.call('HSET', K_META, 'lost', '1', 'lost_ms', now, 'recover_until', now)
end
local lost = redis.call('HGET', K_META, 'lost') == '1'
  and redis.call('HGET', K_META, 'settled') ~= '1'
if lost then
  -- other sites worked the batch: give every live one a grace to re-seed
  if others > 0 or redis.call('HLEN', K_SITES) > 1 then
    local recover_until = tonumber(redis.call('HGET', K_META, 'recover_until') or '0')
    if now + grace > recover_until then redis.call('HSET', K_META, 'recover_until', now + grace) end
  end
  if redis.call('HGET', K_RECOVERY, site) ~= 'done' then
    redis.call('HSET', K_RECOVERY, site, 'reseeding:' .. (now + reseed_max))
  end
end
local reseed = (lost or missed) and '1' or '0'
return {epoch, lost and '1' or '0', redis.call('HGETALL', K_SITES), reseed}
"""
)

# ARGV: epoch, me, ttl_ms, '', site, done (1: this site finished re-seeding), then
# records as (field, state, record json, generation id, held 1|0, fingerprint, owner)
# -> records written. A fact already on record is kept (first writer wins), except
# that a finished record replaces an unfinished one.
RESEED = (
    PRELUDE
    + """
local site, done = ARGV[5], ARGV[6]
local written = 0
for i = 7, #ARGV, 7 do
  local id, state, rec, gen, held, fp, owner = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
    ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local current = redis.call('HGET', K_STATE, id)
  local finished = state == 'completed' or state == 'failed'
  if not current or (finished and current ~= 'completed' and current ~= 'failed') then
    redis.call('HSET', K_STATE, id, state)
    redis.call('HSET', K_ITEMS, id, rec)
    if held == '1' then
      redis.call('HSET', K_OWNER, id, me)
      redis.call('ZADD', K_LEASES, now + ttl, id)
      if state == 'creating' and fp ~= '' then redis.call('HSET', K_INFLIGHT, id, fp) end
    else
      redis.call('HSET', K_OWNER, id, owner)
      if finished then redis.call('ZREM', K_LEASES, id) end
    end
    if gen ~= '' then redis.call('HSET', K_GENS, gen, id) end
    written = written + 1
  end
end
if done == '1' then redis.call('HSET', K_RECOVERY, site, 'done') end
return written
"""
)

# ARGV: epoch, me, ttl_ms, item
# -> {status, state, record json, ms left on the holder's lease (or to wait), holder
#     (or last holder; for 'unknown': the labels of the sites gone, one per line)}
CLAIM = (
    PRELUDE
    + """
local state = redis.call('HGET', K_STATE, item)
local rec = redis.call('HGET', K_ITEMS, item) or ''
local prev = redis.call('HGET', K_OWNER, item)
if state == 'completed' or state == 'failed' then return {'done', state, rec, 0, prev or ''} end
local holder, deadline = live_owner(item)
if holder and holder ~= me then return {'taken', state or '', rec, deadline - now, holder} end
if not state and redis.call('HGET', K_META, 'lost') == '1'
    and redis.call('HGET', K_META, 'settled') ~= '1' then
  -- nothing on record for this item since the state was lost: a site that worked
  -- the batch and has not re-seeded may have made it
  local recover_until = tonumber(redis.call('HGET', K_META, 'recover_until') or '0')
  if now < recover_until then return {'recovering', '', '', recover_until - now, ''} end
  local gone, pending = {}, 0
  local sites = redis.call('HGETALL', K_SITES)
  for i = 1, #sites, 2 do
    local status = redis.call('HGET', K_RECOVERY, sites[i]) or ''
    if status ~= 'done' then
      local limit = tonumber(string.match(status, '^reseeding:(%d+)$') or '0')
      if limit > now then pending = pending + 1 else gone[#gone + 1] = sites[i + 1] end
    end
  end
  if pending > 0 then return {'recovering', '', '', 200, ''} end
  if #gone > 0 then return {'unknown', '', '', 0, table.concat(gone, '\\n')} end
  redis.call('HSET', K_META, 'settled', '1')
end
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

# ARGV: epoch, me, ttl_ms, item, mode, state, record json, generation id, fingerprint
# modes: intent (fenced: a live claim of ours), generation (an answered create: the
# id is a fact whoever holds the claim now), found (reconcile: refused if the
# generation is another item's or a twin's create is in flight), finish, release;
# any other mode (``unsent``: an intent cleared) writes the record of a claim we hold
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
  -- our lease may have run out during an outage: still ours if nobody took it
  if holder ~= me and (holder or owner ~= me) then return {'lost'} end
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

# ARGV: epoch, me, ttl_ms, '', items... -> {the items no longer ours, sites flat}
# Sent by every worker's heartbeat, holding items or not: a lost state is noticed
# within a heartbeat by every live worker.
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
return {lost, redis.call('HGETALL', K_SITES)}
"""
)

# No epoch check: ``lumasched claims import`` after it imported what the gone sites
# did. -> 1
SETTLE = (
    _KEYS
    + """
redis.call('HSET', K_META, 'settled', '1')
return 1
"""
)

# ARGV: items -> {now, epoch ('' if none), then per item: state, record, owner, deadline}
PEEK = (
    _NOW
    + """
local epoch = redis.call('HGET', KEYS[7], 'epoch') or redis.call('HGET', KEYS[7], 'created_ms')
local out = {now, epoch or ''}
for i = 1, #ARGV do
  local id = ARGV[i]
  out[#out + 1] = redis.call('HGET', KEYS[1], id) or ''
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
  out[#out + 1] = redis.call('HGET', KEYS[3], id) or ''
  out[#out + 1] = redis.call('ZSCORE', KEYS[4], id) or '0'
end
return out
"""
)

# -> {now, state flat, items flat, owner flat, leases flat with scores, meta flat,
#     sites flat, recovery flat}
SNAPSHOT = (
    _NOW
    + """
return {now, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]),
        redis.call('HGETALL', KEYS[3]), redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES'),
        redis.call('HGETALL', KEYS[7]), redis.call('HGETALL', KEYS[8]),
        redis.call('HGETALL', KEYS[9])}
"""
)
