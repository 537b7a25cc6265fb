"""Lua scripts of the task layer. Each touches the keys of ONE queue shard's slot only.

A task lives in the slot of its queue shard (`{q:<domain>:<shard>}`: the task
hash and its event stream, next to the shard's stream, outbox, dead letters
and owner indexes; memory/keys.py). So a change of a task and what it means
for the queue — enqueue on creation, acknowledge on completion, move to the
dead letters, hand back — is one atomic script. Every script checks
everything (guard, step conflict, the types of the keys it writes) before its
first write: Redis does not roll a script back when a command fails half-way,
so a refused call changes nothing.

The task hash (layout `v` = 2): `rec` the Task record (memory.codec); the hot
fields scripts maintain themselves and readers overlay on `rec` (`state`,
`stop`, `msg`, `attempt`, `upd`, `last`); `rev` (bumped by every field change,
for compare-and-set); `cid` (the last commit id, so a commit re-sent after a
lost reply is applied once); `run` ("1" while an attempt is in progress);
`lease` (`<attempt>:<start id>`) and `until` (its expiry, ms on the Redis
clock): an attempt is alive while `until` is in the future; `fails`/`err`
(failed attempts, the last reason), `cancel`, `fp`, `tp`, `ret`, `mode`, the
resumption fields; and `s:<index>`, one field per checkpointed step. A field
that is empty counts as absent (scripts clear fields by writing '' in the same
HSET rather than issuing an HDEL).

Why this shape: on a shared machine each write command inside a script costs
several microseconds of server time (reads about one), so steps and the lease
live in the task hash (a checkpoint is one XADD and one HSET; a lease renewal
rides along) and each script reads the hash once and writes it once.

A queue entry has two fields: `t`, the task id (scripts find the task's keys
from it: `<task prefix><id>:task|events`, memory/keys.py), and `e`, the
versioned entry record (trace context, enqueue time).
"""

from __future__ import annotations

LAYOUT = "2"

# Keys a script reads anyway are read first with redis.pcall (another type is an error there,
# answered as 'corrupt'); keys it only writes are checked with TYPE, except its first write
# (when that fails, nothing has been written yet).
_COMMON = f"""
local LAYOUT = '{LAYOUT}'
local function foreign(key, want)
  local found = redis.call('TYPE', key)['ok']
  return found ~= 'none' and found ~= want
end
local function failed(reply)
  return type(reply) == 'table' and reply.err ~= nil
end
local function clock()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end
local function int(x)
  return string.format('%d', x)
end
local function alive(lease, expiry, now)
  return lease ~= nil and lease ~= false and lease ~= '' and tonumber(expiry or '0') > now
end
"""

# Beginning an attempt, shared by START (an entry already delivered) and CLAIM (read + start).
# Returns {'started', task fields, fields written over them, '1' if the previous attempt was lost}
#   | {'busy'} (a live attempt holds the lease) | {'idle', state, stop} (finished or paused)
#   | {'poison', task fields, fields written over them} | {'missing'} | {'corrupt'}
# Task fields are the hash as read before the writes (flat name/value list, steps included); the
# second list holds what this script wrote: readers apply it on top (reading the hash again after
# writing would move every field through Lua twice).
# p: start id, lease ms, failures allowed, events maxlen, started event, resumed event,
#    started message, resumed message.
_BEGIN = """
local function begin(task, events, p)
  local all = redis.pcall('HGETALL', task)
  if failed(all) then return {'corrupt'} end
  if #all == 0 then return {'missing'} end
  local h = {}
  for j = 1, #all, 2 do h[all[j]] = all[j + 1] end
  if h.v ~= LAYOUT then return {'corrupt'} end
  local now = clock()
  if alive(h.lease, h['until'], now) then
    local sep = string.find(h.lease, ':', 1, true)
    if sep and string.sub(h.lease, sep + 1) == p[1] then return {'started', all, {}, '0'} end
    return {'busy'}
  end
  local state = h.state
  if state ~= '1' and state ~= '2' then return {'idle', state or '', h.stop or '0'} end
  local attempt = tonumber(h.attempt or '0') or 0
  local fails = tonumber(h.fails or '0') or 0
  local lost = h.run == '1'
  local over = {'rev', int((tonumber(h.rev or '0') or 0) + 1)}
  if lost then
    fails = fails + 1
    over[#over + 1] = 'fails'; over[#over + 1] = int(fails)
    over[#over + 1] = 'err'
    over[#over + 1] = 'attempt ' .. attempt .. ' ended without finishing (its worker was lost)'
  end
  if fails >= tonumber(p[3]) then
    over[#over + 1] = 'run'; over[#over + 1] = ''
    redis.call('HSET', task, unpack(over))
    return {'poison', all, over}
  end
  attempt = attempt + 1
  local event, message = p[5], p[7]
  if lost then event, message = p[6], p[8] end
  local id = redis.pcall('XADD', events, 'MAXLEN', '~', p[4], '*', 'e', event)  -- the first write
  if failed(id) then return {'corrupt'} end
  local n = #over
  over[n + 1], over[n + 2], over[n + 3], over[n + 4] = 'state', '2', 'stop', '0'
  over[n + 5], over[n + 6], over[n + 7], over[n + 8] = 'msg', message, 'attempt', int(attempt)
  over[n + 9], over[n + 10], over[n + 11], over[n + 12] = 'run', '1', 'upd', int(now)
  over[n + 13], over[n + 14] = 'last', id
  over[n + 15], over[n + 16] = 'lease', int(attempt) .. ':' .. p[1]
  over[n + 17], over[n + 18] = 'until', int(now + tonumber(p[2]))
  redis.call('HSET', task, unpack(over))
  return {'started', all, over, lost and '1' or '0'}
end
"""

# One guarded change of a task, with what it means for the queue, atomically.
# KEYS: 1 task, 2 events, 3 stream, 4 outbox, 5 dead letters, [6 owner index]
# ARGV: 1 commit id, 2 guard: new | rev | fence, 3 guard value (rev / attempt), 4 events maxlen,
#       5 n fields to set, then name/value pairs; n fields to clear, then names; n events, then
#       event records; then operations, each a name followed by its arguments:
#   lease <value> <ms>          hold the lease for ms more    unlease   release it
#   ttl <ms>                    expire the task's keys after ms ('0': persist them)
#   step <index> <record>       checkpoint a step (refused if it exists with other content)
#   ack <group> <entry id>      acknowledge and delete the attempt's queue entry
#   touch <group> <entry id> <consumer>   reset the entry's idle time (heartbeat)
#   enqueue <task id> <record>  add a queue entry for the task
#   dead <record> <maxlen>      add a dead letter       undead <entry id>   delete a dead letter
#   outbox <add|rem> <task id> <score>   (un)register an inline run for recovery
#   index <member> <ttl ms>     add the task to its owner's index of this shard
# Returns {'ok', rev, last event id, cancel, new entry id} or {refusal, ...}.
COMMIT = (
    _COMMON
    + """
local ARITY = {lease = 2, unlease = 0, ttl = 1, step = 2, ack = 2, touch = 3, enqueue = 2, dead = 2,
               undead = 1, outbox = 3, index = 2}
local task = KEYS[1]
local pos = 5
local nset = tonumber(ARGV[pos]); pos = pos + 1
local sets = {}
local cancel = nil
for j = 1, 2 * nset do sets[j] = ARGV[pos]; pos = pos + 1 end
for j = 1, 2 * nset, 2 do if sets[j] == 'cancel' then cancel = sets[j + 1] end end
local nclear = tonumber(ARGV[pos]); pos = pos + 1
for _ = 1, nclear do
  local name = ARGV[pos]; pos = pos + 1
  sets[#sets + 1] = name; sets[#sets + 1] = ''
  if name == 'cancel' then cancel = '' end
end
local nev = tonumber(ARGV[pos]); pos = pos + 1
local events = {}
for j = 1, nev do events[j] = ARGV[pos]; pos = pos + 1 end
local op = {}
while pos <= #ARGV do
  local name = ARGV[pos]
  local arity = ARITY[name]
  if not arity then return redis.error_reply('ERR unknown task operation ' .. tostring(name)) end
  op[name] = {unpack(ARGV, pos + 1, pos + arity)}
  pos = pos + 1 + arity
end

local step = op.step and ('s:' .. op.step[1]) or 'v'
local h = redis.pcall('HMGET', task, 'v', 'cid', 'rev', 'attempt', 'run', 'fp', 'last', 'cancel', 'state',
                      step)
if failed(h) then return {'corrupt', 'record'} end
local exists = h[1] and true or redis.call('EXISTS', task) == 1
if exists then
  if h[2] == ARGV[1] then return {'ok', h[3] or '0', h[7] or '', h[8] or '', ''} end
  if h[1] ~= LAYOUT then return {'corrupt', 'record'} end
end
local guard = ARGV[2]
if guard == 'new' then
  if exists then return {'exists', h[6] or ''} end
elseif not exists then
  return {'missing'}
elseif guard == 'rev' then
  if h[3] ~= ARGV[3] then return {'stale'} end
elseif guard == 'fence' then
  if h[4] ~= ARGV[3] or h[5] ~= '1' then return {'fenced', h[9] or '', h[4] or ''} end
end
if op.step and h[10] and h[10] ~= op.step[2] then return {'step_conflict'} end
if (op.ack or op.touch or op.enqueue) and foreign(KEYS[3], 'stream') then return {'corrupt', 'queue'} end
if op.outbox and foreign(KEYS[4], 'zset') then return {'corrupt', 'outbox'} end
if (op.dead or op.undead) and foreign(KEYS[5], 'stream') then return {'corrupt', 'dead letters'} end
if op.index and foreign(KEYS[6], 'zset') then return {'corrupt', 'owner index'} end
-- Checks done. The events come first: if that key holds foreign data, nothing is written yet.
local last = false
for j = 1, nev do
  local id = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'e', events[j])
  if failed(id) then
    if j == 1 then return {'corrupt', 'events'} end
    return id
  end
  last = id
end
if op.step then sets[#sets + 1] = step; sets[#sets + 1] = op.step[2] end
if op.lease then
  sets[#sets + 1] = 'lease'; sets[#sets + 1] = op.lease[1]
  sets[#sets + 1] = 'until'; sets[#sets + 1] = int(clock() + tonumber(op.lease[2]))
elseif op.unlease then
  sets[#sets + 1] = 'lease'; sets[#sets + 1] = ''
  sets[#sets + 1] = 'until'; sets[#sets + 1] = ''
end
local rev = tonumber(h[3] or '0') or 0
if nset > 0 or nclear > 0 then rev = rev + 1 end
-- A pure lease renewal (heartbeat) records no commit id: it must not hide a re-sent change.
if nset > 0 or nclear > 0 or nev > 0 or op.step then
  sets[#sets + 1] = 'rev'; sets[#sets + 1] = int(rev)
  sets[#sets + 1] = 'cid'; sets[#sets + 1] = ARGV[1]
end
if last then sets[#sets + 1] = 'last'; sets[#sets + 1] = last end
if #sets > 0 then redis.call('HSET', task, unpack(sets)) end
if op.ttl then
  for k = 1, 2 do
    if op.ttl[1] == '0' then redis.call('PERSIST', KEYS[k]) else redis.call('PEXPIRE', KEYS[k], op.ttl[1]) end
  end
end
if op.ack then
  redis.call('XACK', KEYS[3], op.ack[1], op.ack[2])
  redis.call('XDEL', KEYS[3], op.ack[2])
end
if op.touch then
  redis.call('XCLAIM', KEYS[3], op.touch[1], op.touch[3], 0, op.touch[2], 'JUSTID')
end
local entry = ''
if op.enqueue then entry = redis.call('XADD', KEYS[3], '*', 't', op.enqueue[1], 'e', op.enqueue[2]) end
if op.dead then redis.call('XADD', KEYS[5], 'MAXLEN', '~', op.dead[2], '*', 'e', op.dead[1]) end
if op.undead then redis.call('XDEL', KEYS[5], op.undead[1]) end
if op.outbox then
  if op.outbox[1] == 'add' then
    redis.call('ZADD', KEYS[4], op.outbox[3], op.outbox[2])
  else
    redis.call('ZREM', KEYS[4], op.outbox[2])
  end
end
if op.index then
  redis.call('ZADD', KEYS[6], 0, op.index[1])
  -- A sliding expiry, renewed only when less than half remains (one write fewer per creation).
  if redis.call('PTTL', KEYS[6]) < tonumber(op.index[2]) / 2 then
    redis.call('PEXPIRE', KEYS[6], op.index[2])
  end
end
if cancel == nil then cancel = h[8] or '' end
return {'ok', int(rev), last or h[7] or '', cancel, entry}
"""
)

# Claim the next task of a shard: read one new entry (non-blocking XREADGROUP) and begin an
# attempt on its task, in one step. Entries of finished, paused or vanished tasks are
# acknowledged on the way (up to 16 per call).
# KEYS: 1 stream, 2 this consumer's claim memo.
# ARGV: 1 group, 2 consumer, 3 start id, 4-10 as `begin` p[2..8] (lease ms, failures allowed,
#       events maxlen, started event, resumed event, started message, resumed message),
#       11 task key prefix of the shard, 12 the shard as it appears in task ids (2 hex digits).
# Returns {'empty'} | {'settled'} (16 stale entries acknowledged; call again)
#   | {status, entry id, task id, entry record, ...begin's reply after its status}
#   | {'unreadable', entry id, entry record} (no task id of this shard in the entry).
CLAIM = (
    _COMMON
    + _BEGIN
    + """
local p = {ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]}
local HEX = '[0-9a-f]'
local TASK_ID = '^' .. string.rep(HEX, 8) .. '%-' .. string.rep(HEX, 4) .. '%-' .. string.rep(HEX, 4)
  .. '%-' .. string.rep(HEX, 4) .. '%-' .. string.rep(HEX, 12) .. '$'
local function begin_on(id)
  return begin(ARGV[11] .. id .. ':task', ARGV[11] .. id .. ':events', p)
end
local function reply(status, id, tid, record, r)
  return {status, id, tid, record, r[2] or '', r[3] or '', r[4] or ''}
end
local memo = redis.call('GET', KEYS[2])
if memo then
  local sid, id, tid = string.match(memo, '^(%S+) (%S+) (%S+)$')
  if sid == ARGV[3] then  -- this very claim was applied before; its reply was lost
    local found = redis.call('XRANGE', KEYS[1], id, id)
    local record = ''
    if found[1] then
      for j = 1, #found[1][2], 2 do if found[1][2][j] == 'e' then record = found[1][2][j + 1] end end
    end
    local r = begin_on(tid)
    return reply(r[1], id, tid, record, r)
  end
end
for _ = 1, 16 do
  local got = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
  if not got then return {'empty'} end
  local id, fields = got[1][2][1][1], got[1][2][1][2]
  local tid, record = nil, ''
  for j = 1, #fields, 2 do
    if fields[j] == 't' then tid = fields[j + 1] elseif fields[j] == 'e' then record = fields[j + 1] end
  end
  if not tid or string.sub(tid, 35) ~= ARGV[12] or not string.match(tid, TASK_ID) then
    return {'unreadable', id, record}
  end
  local r = begin_on(tid)
  if r[1] == 'missing' or r[1] == 'idle' then
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
  else
    if r[1] == 'started' then
      redis.call('SET', KEYS[2], ARGV[3] .. ' ' .. id .. ' ' .. tid, 'PX', ARGV[4])
    end
    return reply(r[1], id, tid, record, r)
  end
end
return {'settled'}
"""
)

# Begin an attempt on the task of an entry already delivered to this consumer (a blocking read,
# or reclaimed from a lost worker). Entries of finished, paused or vanished tasks are acknowledged.
# KEYS: task, events, stream. ARGV: 1-8 as `begin` p[1..8], 9 group, 10 entry id.
START = (
    _COMMON
    + _BEGIN
    + """
local r = begin(KEYS[1], KEYS[2], {unpack(ARGV, 1, 8)})
if r[1] == 'missing' or r[1] == 'idle' then
  redis.call('XACK', KEYS[3], ARGV[9], ARGV[10])
  redis.call('XDEL', KEYS[3], ARGV[10])
end
return r
"""
)

# One consistent read of a task, with the Redis clock (for the lease).
# KEYS: task. ARGV: the fields to read; none: all of them (steps included).
# Returns {fields (name/value list), now ms}.
READ = (
    _COMMON
    + """
if #ARGV == 0 then return {redis.call('HGETALL', KEYS[1]), clock()} end
local values = redis.call('HMGET', KEYS[1], unpack(ARGV))
local out = {}
for j = 1, #ARGV do
  if values[j] then out[#out + 1] = ARGV[j]; out[#out + 1] = values[j] end
end
return {out, clock()}
"""
)

# The sweeper's look at an inline run (Run) registered in the outbox: queue the task if its
# process died (lease expired) before it finished, paused or handed the task over.
# KEYS: outbox, stream, task. ARGV: 1 task id, 2 now ms, 3 entry record.
# Returns 'gone' (not registered any more) | 'dropped' | 'kept' (lease alive) | 'enqueued'.
RECOVER = (
    _COMMON
    + """
if foreign(KEYS[1], 'zset') or foreign(KEYS[2], 'stream') then
  return redis.error_reply('WRONGTYPE foreign data under a queue key')
end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 'gone' end
local h = redis.pcall('HMGET', KEYS[3], 'state', 'lease', 'until')
if failed(h) or (h[1] ~= '1' and h[1] ~= '2') then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 'dropped'
end
if alive(h[2], h[3], clock()) then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
  return 'kept'
end
redis.call('XADD', KEYS[2], '*', 't', ARGV[1], 'e', ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[1])
return 'enqueued'
"""
)

# Queue: hand an entry back untouched (read while the worker began to drain): acknowledge it and
# add a copy other workers read at once. KEYS: stream. ARGV[1] group  ARGV[2] entry id
# ARGV[3] task id  ARGV[4] entry record. Returns the new entry id, or false if it was not pending.
REQUEUE = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return false end
redis.call('XDEL', KEYS[1], ARGV[2])
return redis.call('XADD', KEYS[1], '*', 't', ARGV[3], 'e', ARGV[4])
"""

# Queue: move a pending entry that names no readable task to the shard's dead letters.
# KEYS: stream, dead letters. ARGV[1] group  ARGV[2] entry id  ARGV[3] dead-letter record  ARGV[4] maxlen.
DEAD_LETTER = (
    _COMMON
    + """
if foreign(KEYS[2], 'stream') then return redis.error_reply('WRONGTYPE foreign data under a queue key') end
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return false end
redis.call('XDEL', KEYS[1], ARGV[2])
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'e', ARGV[3])
"""
)
