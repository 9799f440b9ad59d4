"""The Redis side of admission: three Lua scripts, each one atomic round trip.

Key layout under a namespace ``ns`` (default ``aigw:adm:``), one base per scope,
``ns<kind>:{<id>}`` (the braces keep a scope's keys in one cluster slot and stop ids from
running into the suffixes):

=========================  ======================================================
``<base>:r:<window>``      requests in a 60 s bucket (string int, expires after 2)
``<base>:t:<window>``      tokens in a 60 s bucket
``<base>:inflight``        ZSET ``<request id>|<reserved nanos>`` -> expiry (ms)
``<base>:held``            sum of the reserved nanos in ``inflight``
``<base>:sd:<YYYYMMDD>``   spend of the UTC day, nano-dollars
``<base>:sm:<YYYYMM>``     spend of the UTC month
``<base>:al:<d|m>:<period>:<pct>``  an alert already fired
``ns rsv:{<request id>}``  the reservation marker: settle-by time (ms); deleted on settle
=========================  ======================================================

Scope keys are derived inside the scripts from the base passed in ``KEYS``: a scope has
up to a dozen of them and the window and period parts are only known in the script. That
is fine on one Redis node or a replicated primary; Redis Cluster is not supported, since
one admission must change several scopes atomically, and they live in different slots.

Numbers are Lua doubles: exact for integers below 2^53, about $9M in nano-dollars. Values
written back to Redis go through ``ARGV`` strings or ``%d`` so no exponent form leaks.
The checks mirror :func:`ingress.admission.outcome.refused_limit`; change both together.

Per-scope arguments, five each: rpm, tpm, max parallel, daily budget, monthly budget in
nano-dollars; -1 where the scope has no such limit.
"""

from __future__ import annotations

_COMMON = r"""
local function num(v)
  if v then return tonumber(v) end
  return 0
end

local function scope_args(first, i)
  local a = first + (i - 1) * 5
  return tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]),
         tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
end

-- One comma-separated string instead of an array: a client without hiredis parses an
-- array reply element by element in Python, several times slower than one split.
local function joined(values)
  local parts = {}
  for i, v in ipairs(values) do parts[i] = string.format('%d', v) end
  return table.concat(parts, ',')
end

local function reserved_of(member)
  return tonumber(string.match(member, '|(%d+)$'))
end

-- Release ``amount`` from a held sum; an emptied or inconsistent sum is removed, which
-- reads as zero.
local function release(key, amount)
  if amount <= 0 then return end
  local left = redis.call('DECRBY', key, string.format('%d', amount))
  if left <= 0 then redis.call('DEL', key) end
end
"""

_ALERTS = r"""
local alerts = {}
-- Fire each threshold once per scope and period: SET NX is the "once".
local function check_alerts(i, base, period_code, period_key, spend, limit, ttl)
  if limit <= 0 then return end
  for t = 1, nthr do
    local pct = tonumber(ARGV[thr_at + t - 1])
    if spend * 100 >= limit * pct then
      local key = base .. ':al:' .. period_key .. ':' .. ARGV[thr_at + t - 1]
      if redis.call('SET', key, '1', 'NX', 'PX', ttl) then
        alerts[#alerts + 1] = i - 1
        alerts[#alerts + 1] = period_code
        alerts[#alerts + 1] = pct
        alerts[#alerts + 1] = spend
      end
    end
  end
end
"""

# KEYS: marker, then one base per scope.
# ARGV: now_ms, request_id, tokens, reserve_nanos, hold_ms, settle_ms, day, month,
#       window_ms, day_ttl_ms, month_ttl_ms, n_thresholds, thresholds..., scope args...
# Returns "-1" for a duplicate request id, else, comma-separated:
#   allowed 0|1, refused scope (1-based) or 0, limit code 1..5 or 0, #alerts,
#   4 numbers per alert (scope index, period 0|1, percent, spend), 8 counters per scope.
ADMIT = _COMMON + r"""
local now_s = ARGV[1]
local now = tonumber(now_s)
local rid = ARGV[2]
local tokens_s = ARGV[3]
local tokens = tonumber(tokens_s)
local reserve_s = ARGV[4]
local reserve = tonumber(reserve_s)
local hold_ms = tonumber(ARGV[5])
local settle_ms = tonumber(ARGV[6])
local day, month = ARGV[7], ARGV[8]
local W = tonumber(ARGV[9])
local day_ttl, month_ttl = ARGV[10], ARGV[11]
local nthr = tonumber(ARGV[12])
local thr_at = 13
local first = thr_at + nthr
local n = #KEYS - 1
local w = math.floor(now / W)
local e = now - w * W
""" + _ALERTS + r"""
local marker = redis.call('GET', KEYS[1])
if marker and tonumber(marker) > now then return '-1' end

local function fits(prev, curr, cost, limit)
  return prev * (W - e) + (curr + cost) * W <= limit * W
end

local function budget_fits(spend, held, limit)
  local committed = spend + held
  return committed < limit and committed + reserve <= limit
end

-- Expired entries are requests whose settle never came: drop them, and return how
-- much they held so the caller can release it.
local function purge(base)
  local key = base .. ':inflight'
  local gone = redis.call('ZRANGEBYSCORE', key, '-inf', now_s)
  if #gone == 0 then return 0 end
  local freed = 0
  for _, member in ipairs(gone) do freed = freed + reserved_of(member) end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_s)
  release(base .. ':held', freed)
  return freed
end

-- Every counter the checks read, in one MGET: the per-scope "where is what" list
-- maps counter slots 1..8 to positions in the reply.
local wanted, where = {}, {}
for i = 1, n do
  local base = KEYS[i + 1]
  local rpm, tpm, par, bd, bm = scope_args(first, i)
  local at = {}
  local function want(slot, key)
    wanted[#wanted + 1] = key
    at[slot] = #wanted
  end
  if rpm >= 0 then want(1, base .. ':r:' .. (w - 1)); want(2, base .. ':r:' .. w) end
  if tpm >= 0 then want(3, base .. ':t:' .. (w - 1)); want(4, base .. ':t:' .. w) end
  if bd >= 0 then want(6, base .. ':sd:' .. day) end
  if bm >= 0 then want(7, base .. ':sm:' .. month) end
  if bd >= 0 or bm >= 0 then want(8, base .. ':held') end
  where[i] = at
end
local values = {}
if #wanted > 0 then values = redis.call('MGET', unpack(wanted)) end

local snaps, refused, code = {}, 0, 0
for i = 1, n do
  local base = KEYS[i + 1]
  local rpm, tpm, par, bd, bm = scope_args(first, i)
  local s = {0, 0, 0, 0, 0, 0, 0, 0}
  for slot, pos in pairs(where[i]) do s[slot] = num(values[pos]) end
  local budgeted = bd >= 0 or bm >= 0
  if par >= 0 or budgeted then
    local freed = purge(base)
    s[5] = redis.call('ZCARD', base .. ':inflight')
    s[8] = math.max(0, s[8] - freed)
  end
  if refused == 0 then
    if rpm >= 0 and not fits(s[1], s[2], 1, rpm) then code = 1
    elseif tpm >= 0 and not fits(s[3], s[4], tokens, tpm) then code = 2
    elseif par >= 0 and s[5] + 1 > par then code = 3
    elseif bd >= 0 and not budget_fits(s[6], s[8], bd) then code = 4
    elseif bm >= 0 and not budget_fits(s[7], s[8], bm) then code = 5
    end
    if code > 0 then refused = i end
  end
  snaps[i] = s
end

if refused == 0 then
  -- A bucket is read as "previous" through the next window: keep it two, plus slack
  -- for clock skew between replicas.
  local bucket_ttl = 2 * W + 5000
  local expiry = string.format('%d', now + hold_ms)
  for i = 1, n do
    local base = KEYS[i + 1]
    local rpm, tpm, par, bd, bm = scope_args(first, i)
    local s = snaps[i]
    if rpm >= 0 then
      local key = base .. ':r:' .. w
      s[2] = redis.call('INCR', key)
      if s[2] == 1 then redis.call('PEXPIRE', key, bucket_ttl) end
    end
    if tpm >= 0 then
      local key = base .. ':t:' .. w
      s[4] = redis.call('INCRBY', key, tokens_s)
      if s[4] == tokens then redis.call('PEXPIRE', key, bucket_ttl) end
    end
    local budgeted = bd >= 0 or bm >= 0
    if par >= 0 or budgeted then
      local key = base .. ':inflight'
      local member = rid .. '|' .. (budgeted and reserve_s or '0')
      redis.call('ZADD', key, expiry, member)
      -- Every entry expires within hold_ms, so an idle scope's set and sum go together.
      redis.call('PEXPIRE', key, hold_ms)
      s[5] = s[5] + 1
      if budgeted and reserve > 0 then
        s[8] = redis.call('INCRBY', base .. ':held', reserve_s)
        redis.call('PEXPIRE', base .. ':held', hold_ms)
      end
    end
  end
  redis.call('SET', KEYS[1], string.format('%d', now + settle_ms), 'PX', settle_ms)
end

for i = 1, n do
  local _, _, _, bd, bm = scope_args(first, i)
  if bd >= 0 then check_alerts(i, KEYS[i + 1], 0, 'd:' .. day, snaps[i][6], bd, day_ttl) end
  if bm >= 0 then
    check_alerts(i, KEYS[i + 1], 1, 'm:' .. month, snaps[i][7], bm, month_ttl)
  end
end

local out = {refused == 0 and 1 or 0, refused, code, #alerts / 4}
for _, v in ipairs(alerts) do out[#out + 1] = v end
for i = 1, n do
  for _, v in ipairs(snaps[i]) do out[#out + 1] = v end
end
return joined(out)
"""

# KEYS: marker, then one base per scope (the reservation's).
# ARGV: now_ms, request_id, reserve_nanos, cost_nanos, token_delta, admitted window,
#       day, month, window_ms, day_ttl_ms, month_ttl_ms, n_thresholds, thresholds...,
#       scope args...
# Returns "0" when already settled or expired, else "1,#alerts,alerts...".
SETTLE = _COMMON + r"""
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local reserve_s = ARGV[3]
local reserve = tonumber(reserve_s)
local cost_s = ARGV[4]
local cost = tonumber(cost_s)
local delta_s = ARGV[5]
local delta = tonumber(delta_s)
local admitted_s = ARGV[6]
local admitted = tonumber(admitted_s)
local day, month = ARGV[7], ARGV[8]
local W = tonumber(ARGV[9])
local day_ttl, month_ttl = ARGV[10], ARGV[11]
local nthr = tonumber(ARGV[12])
local thr_at = 13
local first = thr_at + nthr
local n = #KEYS - 1
local w = math.floor(now / W)
""" + _ALERTS + r"""
-- The marker makes settling idempotent: whoever deletes it settles.
local marker = redis.call('GET', KEYS[1])
if not marker then return '0' end
redis.call('DEL', KEYS[1])
if tonumber(marker) <= now then return '0' end

for i = 1, n do
  local base = KEYS[i + 1]
  local rpm, tpm, par, bd, bm = scope_args(first, i)
  local budgeted = bd >= 0 or bm >= 0
  if par >= 0 or budgeted then
    local member = rid .. '|' .. (budgeted and reserve_s or '0')
    -- Zero when a purge already dropped the expired entry and released its hold.
    local removed = redis.call('ZREM', base .. ':inflight', member)
    if removed == 1 and budgeted then release(base .. ':held', reserve) end
  end
  -- Correct the bucket the estimate went into, while it still counts.
  if tpm >= 0 and delta ~= 0 and admitted >= w - 1 then
    local key = base .. ':t:' .. admitted_s
    if redis.call('EXISTS', key) == 1 then
      local v = redis.call('INCRBY', key, delta_s)
      if v < 0 then redis.call('INCRBY', key, string.format('%d', -v)) end
    end
  end
  if budgeted and cost > 0 then
    local dkey, mkey = base .. ':sd:' .. day, base .. ':sm:' .. month
    local dv = redis.call('INCRBY', dkey, cost_s)
    if dv == cost then redis.call('PEXPIRE', dkey, day_ttl) end
    local mv = redis.call('INCRBY', mkey, cost_s)
    if mv == cost then redis.call('PEXPIRE', mkey, month_ttl) end
    if bd >= 0 then check_alerts(i, base, 0, 'd:' .. day, dv, bd, day_ttl) end
    if bm >= 0 then check_alerts(i, base, 1, 'm:' .. month, mv, bm, month_ttl) end
  end
end

local out = {1, #alerts / 4}
for _, v in ipairs(alerts) do out[#out + 1] = v end
return joined(out)
"""

# Read-only: expired in-flight entries are skipped, not purged.
# KEYS: one base per scope. ARGV: now_ms, day, month, window_ms, scope args...
# Returns 8 counters per scope, comma-separated.
STATUS = _COMMON + r"""
local now_s = ARGV[1]
local now = tonumber(now_s)
local day, month = ARGV[2], ARGV[3]
local W = tonumber(ARGV[4])
local first = 5
local w = math.floor(now / W)
local out = {}
for i = 1, #KEYS do
  local base = KEYS[i]
  local rpm, tpm, par, bd, bm = scope_args(first, i)
  local s = {0, 0, 0, 0, 0, 0, 0, 0}
  if rpm >= 0 then
    s[1] = num(redis.call('GET', base .. ':r:' .. (w - 1)))
    s[2] = num(redis.call('GET', base .. ':r:' .. w))
  end
  if tpm >= 0 then
    s[3] = num(redis.call('GET', base .. ':t:' .. (w - 1)))
    s[4] = num(redis.call('GET', base .. ':t:' .. w))
  end
  if par >= 0 or bd >= 0 or bm >= 0 then
    local live = redis.call('ZRANGEBYSCORE', base .. ':inflight', '(' .. now_s, '+inf')
    s[5] = #live
    for _, member in ipairs(live) do s[8] = s[8] + reserved_of(member) end
  end
  if bd >= 0 then s[6] = num(redis.call('GET', base .. ':sd:' .. day)) end
  if bm >= 0 then s[7] = num(redis.call('GET', base .. ':sm:' .. month)) end
  for _, v in ipairs(s) do out[#out + 1] = v end
end
return joined(out)
"""


# Raise one spend counter to ClickHouse's figure when that is higher (spend the live
# counters never saw: batch items, a counter lost with Redis). Never lowers it: the counter
# may hold settles ClickHouse has not ingested yet. KEYS[1] the counter; ARGV: nanos, ttl ms.
RAISE_SPEND = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return '1'
end
return '0'
"""
