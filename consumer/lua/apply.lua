-- Applies one partition's batch of clickstream/release entries atomically, together with
-- the partition's offset mark. Redis runs a script to completion without interleaving, so
-- the state and the mark always move together: that is the exactly-once effect.
--
-- KEYS[1]  the offsets hash (declared so the script is routable; all keys share a prefix)
-- ARGV[1]  key prefix            ARGV[2] "topic:partition" of the batch ("" for none)
-- ARGV[3]  max clicks/session    ARGV[4] max events/session
-- ARGV[5]  auto-release at N sessions (0: off)   ARGV[6] default fine_tuning_method
-- ARGV[7]  source topic, ARGV[8] source partition (for dead letters the script emits)
-- then 6 values per entry: offset, kind, event_id, key, time (epoch ms), data
--
-- Outcome codes, one per entry: 0 applied, 1 replay (offset at or below the mark),
-- 2 duplicate event_id, 3 late (session of a frozen batch), 4 cut (session caps), 5 skipped
-- (an invalid record already dead-lettered).

local P = ARGV[1]
local tpkey = ARGV[2]
local max_clicks = tonumber(ARGV[3])
local max_events = tonumber(ARGV[4])
local auto_release = tonumber(ARGV[5])
local default_method = ARGV[6]
local src_topic = ARGV[7]
local src_partition = ARGV[8]
local FIRST = 9
local WIDTH = 6

local mark = -1
if tpkey ~= '' then
  mark = tonumber(redis.call('HGET', KEYS[1], tpkey) or '-1')
end

local outcomes = {}
local releases = {}

local function batch_key(bid) return P .. 'batch:' .. bid end

-- Catalog texts arrive from several partitions (search results, item events), so the
-- newest text wins by event time, ties broken by the text: the same under any interleaving.
local function upsert_item(item, text, ts)
  local known = redis.call('HGET', P .. 'catalog:t', item)
  if known then
    local k = tonumber(known)
    local t = tonumber(ts)
    if t < k then return end
    if t == k and text <= (redis.call('HGET', P .. 'catalog', item) or '') then return end
  end
  redis.call('HSET', P .. 'catalog', item, text)
  redis.call('HSET', P .. 'catalog:t', item, ts)
end

local function open_batch(ts)
  local bid = redis.call('GET', P .. 'batch:open')
  if bid then return bid end
  local seq = redis.call('INCR', P .. 'batch:seq')
  bid = string.format('b%06d', seq)
  redis.call('HSET', batch_key(bid), 'batch_id', bid, 'state', 'open', 'opened_at', ts,
    'sessions', 0, 'late', 0)
  redis.call('SET', P .. 'batch:open', bid)
  redis.call('ZADD', P .. 'batches', seq, bid)
  return bid
end

local function freeze(bid, eid, ts, method, idem, metadata)
  local bkey = batch_key(bid)
  local tid = 'task-' .. bid
  local sessions = redis.call('HGET', bkey, 'sessions') or '0'
  redis.call('HSET', bkey, 'state', 'frozen', 'frozen_at', ts, 'release_event_id', eid,
    'fine_tuning_method', method, 'idempotency_key', idem, 'task_id', tid)
  if redis.call('GET', P .. 'batch:open') == bid then
    redis.call('DEL', P .. 'batch:open')
  end
  redis.call('HSET', P .. 'task:' .. tid, 'task_id', tid, 'batch_id', bid,
    'fine_tuning_method', method, 'metadata', metadata, 'idempotency_key', idem,
    'session_count', sessions, 'created_at', ts, 'updated_at', ts, 'status', 'pending',
    'detail', 'batch ' .. bid .. ' frozen with ' .. sessions .. ' sessions')
  redis.call('ZADD', P .. 'tasks', ts, tid)
  redis.call('RPUSH', P .. 'outbox', cjson.encode({kind = 'task', task_id = tid}))
  return tid
end

-- A release: freeze the open batch (or the named one) once, whatever the replays.
local function release(offset, eid, ts, data)
  local r = cjson.decode(data)
  local idem = r.k or ''
  local method = r.m or default_method
  local want = r.b or ''
  local seen = redis.call('HGET', P .. 'releases', eid)
  if seen then
    return {outcome = 'duplicate', batch_id = seen, event_id = eid}
  end
  if idem ~= '' then
    local prior = redis.call('HGET', P .. 'release:idem', idem)
    if prior then
      redis.call('HSET', P .. 'releases', eid, prior)
      return {outcome = 'duplicate', batch_id = prior, event_id = eid}
    end
  end
  local bid
  if want ~= '' then
    local state = redis.call('HGET', batch_key(want), 'state')
    if not state then
      redis.call('RPUSH', P .. 'outbox', cjson.encode({kind = 'dlq', reason = 'unknown_batch',
        detail = 'release names batch ' .. want .. ', which does not exist',
        topic = src_topic, partition = src_partition, offset = offset, key = r.key or '',
        value = r.raw}))
      return {outcome = 'unknown_batch', batch_id = want, event_id = eid}
    end
    if state ~= 'open' then
      redis.call('HSET', P .. 'releases', eid, want)
      if idem ~= '' then redis.call('HSET', P .. 'release:idem', idem, want) end
      return {outcome = 'duplicate', batch_id = want, event_id = eid}
    end
    bid = want
  else
    bid = redis.call('GET', P .. 'batch:open')
    if not bid then
      redis.call('HSET', P .. 'releases', eid, '')
      return {outcome = 'empty', batch_id = '', event_id = eid}
    end
  end
  local tid = freeze(bid, eid, ts, method, idem, r.md or '{}')
  redis.call('HSET', P .. 'releases', eid, bid)
  if idem ~= '' then redis.call('HSET', P .. 'release:idem', idem, bid) end
  return {outcome = 'created', batch_id = bid, task_id = tid, event_id = eid}
end

-- The session an event belongs to, created in the open batch on its first event.
local function session(sid, ts)
  local skey = P .. 'session:' .. sid
  local bid = redis.call('HGET', skey, 'batch_id')
  if bid then return skey, bid end
  bid = open_batch(ts)
  redis.call('HSET', skey, 'session_id', sid, 'batch_id', bid, 'first_at', ts, 'last_at', ts,
    'events', 0, 'clicks', 0, 'cut', 0, 'irrelevant', 0)
  redis.call('SADD', batch_key(bid) .. ':sessions', sid)
  redis.call('HINCRBY', batch_key(bid), 'sessions', 1)
  -- The batch's earliest event time, not its first-applied one: partitions interleave
  -- differently from run to run, and the state must not depend on that.
  if tonumber(ts) < tonumber(redis.call('HGET', batch_key(bid), 'opened_at')) then
    redis.call('HSET', batch_key(bid), 'opened_at', ts)
  end
  return skey, bid
end

local function touch(skey, ts)
  local first = tonumber(redis.call('HGET', skey, 'first_at'))
  local last = tonumber(redis.call('HGET', skey, 'last_at'))
  local t = tonumber(ts)
  if t < first then redis.call('HSET', skey, 'first_at', ts) end
  if t > last then redis.call('HSET', skey, 'last_at', ts) end
end

local function session_event(kind, eid, sid, ts, data)
  local skey, bid = session(sid, ts)
  -- The cap comes first so that neither the dedupe set nor the late list grows unbounded.
  if tonumber(redis.call('HGET', skey, 'events')) >= max_events then
    redis.call('HINCRBY', skey, 'cut', 1)
    return 4
  end
  if redis.call('SADD', skey .. ':eids', eid) == 0 then return 2 end
  redis.call('HINCRBY', skey, 'events', 1)
  if redis.call('HGET', batch_key(bid), 'state') ~= 'open' then
    redis.call('HINCRBY', batch_key(bid), 'late', 1)
    redis.call('RPUSH', batch_key(bid) .. ':late',
      cjson.encode({type = kind, event_id = eid, session_id = sid, t = ts, data = data}))
    return 3
  end
  touch(skey, ts)
  if kind == 'search' then
    local s = cjson.decode(data)
    redis.call('HSET', skey, 'query', s.q, 'results', cjson.encode(s.r), 'search_at', ts,
      'user_id', s.u or '')
    redis.call('HINCRBY', skey, 'searches', 1)
    if s.t then
      for item, text in pairs(s.t) do upsert_item(item, text, ts) end
    end
  elseif kind == 'click' then
    if redis.call('HINCRBY', skey, 'clicks', 1) > max_clicks then
      redis.call('HINCRBY', skey, 'clicks', -1)
      redis.call('HINCRBY', skey, 'cut', 1)
      return 4
    end
    redis.call('RPUSH', skey .. ':clicks', cjson.encode({item_id = data, t = ts}))
  elseif kind == 'irrelevant' then
    redis.call('HSET', skey, 'irrelevant', 1)
  end
  return 0
end

local last = mark
for i = FIRST, #ARGV, WIDTH do
  local offset = tonumber(ARGV[i])
  local kind, eid, key, ts, data = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local code = 0
  if tpkey ~= '' and offset <= mark then
    code = 1
  elseif kind == 'skip' then
    code = 5
  elseif kind == 'item' then
    upsert_item(key, data, ts)
  elseif kind == 'release' then
    releases[#releases + 1] = release(offset, eid, ts, data)
  else
    code = session_event(kind, eid, key, ts, data)
  end
  outcomes[#outcomes + 1] = code
  if offset > last then last = offset end
  if auto_release > 0 and code == 0 then
    local open = redis.call('GET', P .. 'batch:open')
    if open and tonumber(redis.call('HGET', batch_key(open), 'sessions')) >= auto_release then
      local auto_eid = 'auto-' .. open
      local tid = freeze(open, auto_eid, ts, default_method, auto_eid, '{"auto_release":"sessions"}')
      redis.call('HSET', P .. 'releases', auto_eid, open)
      releases[#releases + 1] = {outcome = 'created', batch_id = open, task_id = tid,
        event_id = auto_eid}
    end
  end
end
if tpkey ~= '' and last > mark then
  redis.call('HSET', KEYS[1], tpkey, last)
end

local open = redis.call('GET', P .. 'batch:open')
local open_sessions = 0
if open then open_sessions = tonumber(redis.call('HGET', batch_key(open), 'sessions')) end
return cjson.encode({outcomes = outcomes, releases = releases, open_batch = open or '',
  open_sessions = open_sessions, mark = last})
