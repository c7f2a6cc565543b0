-- Applies one partition's batch of clickstream/release entries atomically, together with
-- the partition's offset mark. Redis runs a script to completion without interleaving, so
-- the state and the mark always move together: that is the exactly-once effect.
--
-- KEYS[1]  the offsets hash (declared so the script is routable; all keys share a prefix)
-- ARGV[1]  key prefix            ARGV[2] "topic:partition" of the batch ("" for none)
-- ARGV[3]  max clicks/session    ARGV[4] max events/session
-- ARGV[5]  auto-release at N sessions (0: off)   ARGV[6] default fine_tuning_method
-- ARGV[7]  source topic          ARGV[8] source partition (for dead letters it queues)
-- ARGV[9]  JSON array of entries [offset, kind, event_id, key, time_ms (string), data]
--          data: search {q, u?, r: JSON text of [[item, rank]...], t?: {item: text}};
--          click: item id;
--          item: text; release {m, b?, k?, md, raw, key}; irrelevant, skip: "".
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
local entries = cjson.decode(ARGV[9])

local mark = -1
if tpkey ~= '' then
  mark = tonumber(redis.call('HGET', KEYS[1], tpkey) or '-1')
end

local outcomes = {}
local releases = {}
local batch_state = {}  -- per-call cache: batch id -> 'open' | 'frozen'

local function batch_key(bid) return P .. 'batch:' .. bid end

local function state_of(bid)
  local s = batch_state[bid]
  if not s then
    s = redis.call('HGET', batch_key(bid), 'state')
    batch_state[bid] = s
  end
  return s
end

-- Catalog texts arrive from several partitions (search results, item events). A text
-- replaces the stored one when it differs and is newer than the stored text's last change,
-- ties broken by the text. Unchanged texts (the common case: results repeat the catalog)
-- cost one HMGET for the whole result list.
local function upsert_items(items, texts, ts)
  local stored = redis.call('HMGET', P .. 'catalog', unpack(items))
  local changed, changed_texts = {}, {}
  for i, item in ipairs(items) do
    if stored[i] ~= texts[i] then
      changed[#changed + 1] = item
      changed_texts[#changed_texts + 1] = texts[i]
    end
  end
  if #changed == 0 then return end
  local times = redis.call('HMGET', P .. 'catalog:t', unpack(changed))
  local t = tonumber(ts)
  local text_args, time_args = {}, {}
  for i, item in ipairs(changed) do
    local k = times[i] and tonumber(times[i])
    if (not k) or t > k or (t == k and changed_texts[i] > (redis.call('HGET', P .. 'catalog', item) or '')) then
      text_args[#text_args + 1] = item
      text_args[#text_args + 1] = changed_texts[i]
      time_args[#time_args + 1] = item
      time_args[#time_args + 1] = ts
    end
  end
  if #text_args > 0 then
    redis.call('HSET', P .. 'catalog', unpack(text_args))
    redis.call('HSET', P .. 'catalog:t', unpack(time_args))
  end
end

-- Per-call caches. Every redis.call costs more than the command itself (arguments become
-- Redis objects, the reply is written as RESP and parsed back into Lua), so what one call of
-- the script can know it reads once: the open batch, each batch's opened_at. New sessions'
-- batch memberships and counts are written once per batch at the end (and before anything
-- reads them: a freeze, the automatic release).
local open_known, open_bid = false, false
local opened = {}        -- batch id -> opened_at (number)
local new_sessions = {}  -- batch id -> list of new session ids
local new_order = {}     -- batch ids in first-seen order

local function current_open()
  if not open_known then
    open_bid = redis.call('GET', P .. 'batch:open')
    open_known = true
  end
  return open_bid
end

local function flush_sessions()
  for _, bid in ipairs(new_order) do
    local sids = new_sessions[bid]
    for i = 1, #sids, 1000 do
      redis.call('SADD', batch_key(bid) .. ':sessions', unpack(sids, i, math.min(i + 999, #sids)))
    end
    redis.call('HINCRBY', batch_key(bid), 'sessions', #sids)
  end
  new_sessions, new_order = {}, {}
end

local function open_batch(ts)
  local bid = current_open()
  if bid then return bid end
  local seq = redis.call('INCR', P .. 'batch:seq')
  bid = string.format('b%06d', seq)
  redis.call('HSET', batch_key(bid), 'batch_id', bid, 'state', 'open', 'opened_at', ts,
    'sessions', 0, 'late', 0)
  redis.call('SET', P .. 'batch:open', bid)
  redis.call('ZADD', P .. 'batches', seq, bid)
  batch_state[bid] = 'open'
  opened[bid] = tonumber(ts)
  open_bid = bid
  return bid
end

local function freeze(bid, eid, ts, method, idem, metadata)
  flush_sessions()
  local bkey = batch_key(bid)
  local tid = 'task-' .. bid
  local sessions = redis.call('HGET', bkey, 'sessions') or '0'
  redis.call('HSET', bkey, 'state', 'frozen', 'frozen_at', ts, 'release_event_id', eid,
    'fine_tuning_method', method, 'idempotency_key', idem, 'task_id', tid)
  batch_state[bid] = 'frozen'
  if current_open() == bid then
    redis.call('DEL', P .. 'batch:open')
    open_bid = false
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
local function release(offset, eid, ts, r)
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
    -- Batch ids are made here ('b' and digits). Anything else names no batch, and must not
    -- reach a key: 'open' or 'b000001:sessions' would name another kind of key.
    local state = nil
    if string.find(want, '^b%d+$') then state = state_of(want) end
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
    bid = current_open()
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

-- A session's keys: 'session:ID', 'session-eids:ID', 'session-clicks:ID'. Ids are client-made
-- and may contain ':', so no key of one session may be the hash key with a suffix: session
-- 'x:eids' must not be the dedupe set of session 'x'.
--
-- The session hash is read once (HMGET) and written once (HSET of every field that changed);
-- the script runs atomically, so counters computed here are what HINCRBY would have made.
local function session_event(kind, eid, sid, ts, data)
  local skey = P .. 'session:' .. sid
  local h = redis.call('HMGET', skey, 'batch_id', 'events', 'first_at', 'last_at', 'clicks',
    'searches')
  local bid = h[1]
  local t = tonumber(ts)
  local out = {}  -- field, value, field, value ... for the one HSET
  local events, first, last, clicks, searches
  if not bid then
    -- A session belongs to the batch that is open when its first event arrives.
    bid = open_batch(ts)
    out = {'session_id', sid, 'batch_id', bid, 'first_at', ts, 'last_at', ts, 'events', 0,
      'clicks', 0, 'cut', 0, 'irrelevant', 0}
    events, first, last, clicks, searches = 0, t, t, 0, 0
    local list = new_sessions[bid]
    if not list then
      list = {}
      new_sessions[bid] = list
      new_order[#new_order + 1] = bid
    end
    list[#list + 1] = sid
    -- The batch's earliest event time, not its first-applied one: partitions interleave
    -- differently from run to run, and the state must not depend on that.
    local o = opened[bid]
    if not o then
      o = tonumber(redis.call('HGET', batch_key(bid), 'opened_at'))
      opened[bid] = o
    end
    if t < o then
      redis.call('HSET', batch_key(bid), 'opened_at', ts)
      opened[bid] = t
    end
  else
    events, first, last = tonumber(h[2]), tonumber(h[3]), tonumber(h[4])
    clicks, searches = tonumber(h[5] or '0'), tonumber(h[6] or '0')
  end
  -- The cap comes first so that neither the dedupe set nor the late list grows unbounded.
  if events >= max_events then
    if #out > 0 then redis.call('HSET', skey, unpack(out)) end
    redis.call('HINCRBY', skey, 'cut', 1)
    return 4
  end
  if redis.call('SADD', P .. 'session-eids:' .. sid, eid) == 0 then
    if #out > 0 then redis.call('HSET', skey, unpack(out)) end
    return 2
  end
  if state_of(bid) ~= 'open' then
    -- Only a session seen before can be in a frozen batch: nothing of ``out`` to write.
    redis.call('HINCRBY', skey, 'events', 1)
    redis.call('HINCRBY', batch_key(bid), 'late', 1)
    redis.call('RPUSH', batch_key(bid) .. ':late',
      cjson.encode({type = kind, event_id = eid, session_id = sid, t = ts, data = data}))
    return 3
  end
  local n = #out
  out[n + 1], out[n + 2] = 'events', events + 1
  n = n + 2
  if t < first then out[n + 1], out[n + 2] = 'first_at', ts; n = n + 2 end
  if t > last then out[n + 1], out[n + 2] = 'last_at', ts; n = n + 2 end
  local code = 0
  if kind == 'search' then
    out[n + 1], out[n + 2] = 'query', data.q
    out[n + 3], out[n + 4] = 'results', data.r
    out[n + 5], out[n + 6] = 'search_at', ts
    out[n + 7], out[n + 8] = 'user_id', data.u or ''
    out[n + 9], out[n + 10] = 'searches', searches + 1
    redis.call('HSET', skey, unpack(out))
    if data.t then
      local items, texts = {}, {}
      for item, text in pairs(data.t) do
        items[#items + 1] = item
        texts[#texts + 1] = text
      end
      if #items > 0 then upsert_items(items, texts, ts) end
    end
    return 0
  elseif kind == 'click' then
    if clicks + 1 > max_clicks then
      redis.call('HSET', skey, unpack(out))
      redis.call('HINCRBY', skey, 'cut', 1)
      return 4
    end
    out[n + 1], out[n + 2] = 'clicks', clicks + 1
    redis.call('HSET', skey, unpack(out))
    redis.call('RPUSH', P .. 'session-clicks:' .. sid, cjson.encode({item_id = data, t = ts}))
    return 0
  elseif kind == 'irrelevant' then
    out[n + 1], out[n + 2] = 'irrelevant', 1
  end
  redis.call('HSET', skey, unpack(out))
  return code
end

local last = mark
for _, e in ipairs(entries) do
  local offset, kind, eid, key, ts, data = e[1], e[2], e[3], e[4], e[5], e[6]
  local code = 0
  if tpkey ~= '' and offset <= mark then
    code = 1
  elseif kind == 'skip' then
    code = 5
  elseif kind == 'item' then
    upsert_items({key}, {data}, ts)
  elseif kind == 'release' then
    releases[#releases + 1] = release(offset, eid, ts, data)
  else
    code = session_event(kind, eid, key, ts, data)
  end
  outcomes[#outcomes + 1] = code
  if offset > last then last = offset end
  if auto_release > 0 and code == 0 then
    flush_sessions()
    local open = current_open()
    if open and tonumber(redis.call('HGET', batch_key(open), 'sessions')) >= auto_release then
      local auto_eid = 'auto-' .. open
      local tid = freeze(open, auto_eid, ts, default_method, auto_eid,
        '{"auto_release":"sessions"}')
      redis.call('HSET', P .. 'releases', auto_eid, open)
      releases[#releases + 1] = {outcome = 'created', batch_id = open, task_id = tid,
        event_id = auto_eid}
    end
  end
end
if tpkey ~= '' and last > mark then
  redis.call('HSET', KEYS[1], tpkey, string.format('%d', last))
end

flush_sessions()
local open = current_open()
local open_sessions = 0
if open then open_sessions = tonumber(redis.call('HGET', batch_key(open), 'sessions')) end
return cjson.encode({outcomes = outcomes, releases = releases, open_batch = open or '',
  open_sessions = open_sessions, mark = last})
