"""Lua scripts of the task layer. Each touches the keys of ONE hash tag only (Redis Cluster).

Task scripts (`{t:<id>}`: task hash, steps hash, events stream, lease) keep a
task whole: every check happens before the first write, so a refused call
changes nothing. Queue scripts (`{q:<domain>:<shard>}`: stream, outbox, dead
letters) move entries atomically.

The task hash: `v` layout version, `rec` the Task record (memory.codec), the
hot fields scripts maintain themselves and readers overlay on `rec` (`state`,
`stop`, `msg`, `attempt`, `upd`, `last`), `rev` (bumped by every field change,
for compare-and-set), `cid` (the last commit id, so a commit re-sent after a
lost reply is applied once), `run` ("1" while an attempt is in progress),
`fails`/`err` (failed attempts, the last reason), `cancel`, `fp`, `ticket`,
`tp`, `ret`, `mode` and the resumption fields.
"""

from __future__ import annotations

# Scripts are not rolled back when a command fails half-way, so each script first checks that
# every key it writes holds the expected type (or nothing): foreign data is refused up front.
_FOREIGN = """
local function foreign(key, want)
  local found = redis.call('TYPE', key)['ok']
  return found ~= 'none' and found ~= want
end
"""

# KEYS: task, steps, events, lease
# ARGV[1] commit id       ARGV[2] guard: new | rev | fence      ARGV[3] guard value (rev / attempt)
# ARGV[4] lease op: '' | set | release                          ARGV[5] lease value  ARGV[6] lease ms
# ARGV[7] ttl ms: '' keep, '0' persist, n expire all task keys  ARGV[8] events maxlen
# ARGV[9] step index ('' none)  ARGV[10] step record
# ARGV[11] n fields to set, then name/value pairs; then n fields to delete, then names;
#          then n events, then event records.
# Returns {'ok', rev, last event id, cancel} or {refusal, ...}.
COMMIT = (
    _FOREIGN
    + """
local task = KEYS[1]
if foreign(task, 'hash') then return {'corrupt', 'record'} end
if foreign(KEYS[2], 'hash') then return {'corrupt', 'steps'} end
if foreign(KEYS[3], 'stream') then return {'corrupt', 'events'} end
if foreign(KEYS[4], 'string') then return {'corrupt', 'lease'} end
local exists = redis.call('EXISTS', task) == 1
if exists then
  if redis.call('HGET', task, 'cid') == ARGV[1] then
    return {'ok', redis.call('HGET', task, 'rev'), redis.call('HGET', task, 'last') or '',
            redis.call('HGET', task, 'cancel') or ''}
  end
  if redis.call('HGET', task, 'v') ~= '1' then return {'corrupt', 'record'} end
end
local guard = ARGV[2]
if guard == 'new' then
  if exists then return {'exists', redis.call('HGET', task, 'fp') or ''} end
elseif not exists then
  return {'missing'}
elseif guard == 'rev' then
  if redis.call('HGET', task, 'rev') ~= ARGV[3] then return {'stale'} end
elseif guard == 'fence' then
  if redis.call('HGET', task, 'attempt') ~= ARGV[3] or redis.call('HGET', task, 'run') ~= '1' then
    return {'fenced', redis.call('HGET', task, 'state') or '', redis.call('HGET', task, 'attempt') or ''}
  end
end
if ARGV[9] ~= '' then
  local old = redis.call('HGET', KEYS[2], ARGV[9])
  if old and old ~= ARGV[10] then return {'step_conflict'} end
end
-- Checks done; from here on everything is written.
if ARGV[9] ~= '' then redis.call('HSET', KEYS[2], ARGV[9], ARGV[10]) end
local pos = 11
local nset = tonumber(ARGV[pos]); pos = pos + 1
local sets = {}
for j = 1, 2 * nset do sets[j] = ARGV[pos]; pos = pos + 1 end
local ndel = tonumber(ARGV[pos]); pos = pos + 1
local dels = {}
for j = 1, ndel do dels[j] = ARGV[pos]; pos = pos + 1 end
local nev = tonumber(ARGV[pos]); pos = pos + 1
local last = false
for j = 1, nev do
  last = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', 'e', ARGV[pos]); pos = pos + 1
end
local rev = tonumber(redis.call('HGET', task, 'rev') or '0')
if nset > 0 or ndel > 0 then rev = rev + 1 end
if nset > 0 then redis.call('HSET', task, unpack(sets)) end
if ndel > 0 then redis.call('HDEL', task, unpack(dels)) end
-- A pure lease renewal (heartbeat) records no commit id: it must not hide a re-sent change.
if nset > 0 or ndel > 0 or nev > 0 or ARGV[9] ~= '' then
  redis.call('HSET', task, 'rev', rev, 'cid', ARGV[1])
end
if last then redis.call('HSET', task, 'last', last) end
if ARGV[4] == 'set' then
  redis.call('SET', KEYS[4], ARGV[5], 'PX', ARGV[6])
elseif ARGV[4] == 'release' then
  redis.call('DEL', KEYS[4])
end
if ARGV[7] == '0' then
  for k = 1, 3 do redis.call('PERSIST', KEYS[k]) end
elseif ARGV[7] ~= '' then
  for k = 1, 3 do redis.call('PEXPIRE', KEYS[k], ARGV[7]) end
end
return {'ok', tostring(rev), last or redis.call('HGET', task, 'last') or '',
        redis.call('HGET', task, 'cancel') or ''}
"""
)

# Begin an attempt on a task (a worker took its queue entry).
# KEYS: task, steps, events, lease
# ARGV[1] start id  ARGV[2] now ms  ARGV[3] lease ms  ARGV[4] failed attempts allowed  ARGV[5] events maxlen
# ARGV[6] event: started   ARGV[7] event: resumed after a lost attempt
# ARGV[8] status message: started   ARGV[9] status message: resumed
# Returns {'started', task fields, steps, '1' if the previous attempt was lost}
#   | {'busy'} (a live attempt holds the lease)
#   | {'idle', state, stop} (nothing to run: finished, paused)
#   | {'poison', task fields} | {'missing'} | {'corrupt'}
START = (
    _FOREIGN
    + """
local task = KEYS[1]
if foreign(task, 'hash') or foreign(KEYS[2], 'hash') or foreign(KEYS[3], 'stream')
   or foreign(KEYS[4], 'string') then
  return {'corrupt'}
end
if redis.call('EXISTS', task) == 0 then return {'missing'} end
if redis.call('HGET', task, 'v') ~= '1' then return {'corrupt'} end
local lease = redis.call('GET', KEYS[4])
if lease then
  local sep = string.find(lease, ':', 1, true)
  if sep and string.sub(lease, sep + 1) == ARGV[1] then
    return {'started', redis.call('HGETALL', task), redis.call('HGETALL', KEYS[2]), '0'}
  end
  return {'busy'}
end
local state = redis.call('HGET', task, 'state')
if state ~= '1' and state ~= '2' then
  return {'idle', state or '', redis.call('HGET', task, 'stop') or '0'}
end
local attempt = tonumber(redis.call('HGET', task, 'attempt') or '0')
local fails = tonumber(redis.call('HGET', task, 'fails') or '0')
local lost = redis.call('HGET', task, 'run') == '1'
local rev = tonumber(redis.call('HGET', task, 'rev') or '0') + 1
if lost then
  fails = fails + 1
  redis.call('HSET', task, 'fails', fails,
    'err', 'attempt ' .. attempt .. ' ended without finishing (its worker was lost)')
end
if fails >= tonumber(ARGV[4]) then
  redis.call('HDEL', task, 'run')
  redis.call('HSET', task, 'rev', rev)
  return {'poison', redis.call('HGETALL', task)}
end
attempt = attempt + 1
local event = ARGV[6]
local message = ARGV[8]
if lost then event = ARGV[7]; message = ARGV[9] end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'e', event)
redis.call('HSET', task, 'state', '2', 'stop', '0', 'msg', message, 'attempt', attempt, 'run', '1',
  'upd', ARGV[2], 'rev', rev, 'last', id)
redis.call('SET', KEYS[4], attempt .. ':' .. ARGV[1], 'PX', ARGV[3])
return {'started', redis.call('HGETALL', task), redis.call('HGETALL', KEYS[2]), lost and '1' or '0'}
"""
)

# One consistent read of a task. KEYS: task, steps, lease. ARGV[1] '1' to include the steps.
READ = """
local steps = {}
if ARGV[1] == '1' then steps = redis.call('HGETALL', KEYS[2]) end
return {redis.call('HGETALL', KEYS[1]), steps, redis.call('PTTL', KEYS[3])}
"""

# Queue: remove the ticket from the outbox and add the entry, atomically; nothing if the ticket is
# gone (someone else enqueued it). KEYS: outbox, stream, dead letters.
# ARGV[1] ticket  ARGV[2] entry record  ARGV[3] dead-letter entry to drop ('' none)
ENQUEUE = (
    _FOREIGN
    + """
if foreign(KEYS[1], 'zset') or foreign(KEYS[2], 'stream') or foreign(KEYS[3], 'stream') then
  return redis.error_reply('WRONGTYPE foreign data under a queue key')
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return false end
local id = redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
if ARGV[3] ~= '' then redis.call('XDEL', KEYS[3], ARGV[3]) end
return id
"""
)

# Queue: acknowledge and delete an entry. KEYS: stream. ARGV[1] group  ARGV[2] entry id.
ACK = """
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return acked
"""

# Queue: hand an entry back (graceful drain): ack it and add a fresh copy other workers read at once.
# KEYS: stream. ARGV[1] group  ARGV[2] entry id  ARGV[3] entry record.
REQUEUE = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return false end
redis.call('XDEL', KEYS[1], ARGV[2])
return redis.call('XADD', KEYS[1], '*', 'e', ARGV[3])
"""

# Queue: move a pending entry to the shard's dead letters. KEYS: stream, dead letters.
# ARGV[1] group  ARGV[2] entry id  ARGV[3] dead-letter record  ARGV[4] maxlen.
DEAD_LETTER = (
    _FOREIGN
    + """
if foreign(KEYS[2], 'stream') then return redis.error_reply('WRONGTYPE foreign data under a queue key') end
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return false end
redis.call('XDEL', KEYS[1], ARGV[2])
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'e', ARGV[3])
"""
)
