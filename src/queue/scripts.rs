//! The queue's Lua scripts: each step that must not be split runs as one.
//!
//! Every script that ends an entry's handling frees memory (`XACK` and
//! `XDEL`) and is flagged `allow-oom`, so that a full Redis drains as soon
//! as workers run; the enqueue, which adds an event, is no script (a
//! transaction, in `RedisQueue::enqueue`) and is refused on a full Redis
//! (the receiver answers `503`). Every script that acts on a
//! stream entry for a worker first checks that the worker still owns it
//! (the entry is pending under its consumer name): a worker that lost an
//! entry to another never re-schedules or dead-letters what the other runs.

/// A script, hashed once.
macro_rules! script {
    ($source:expr) => {{
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new($source));
        &*SCRIPT
    }};
}
pub(super) use script;

/// `owned(deliveries)`: whether entry `ARGV[2]` of stream `KEYS[1]` is
/// pending in group `ARGV[1]` under consumer `ARGV[3]` with that delivery
/// count: the fencing token of one run. Every claim changes the count, so
/// a run whose hold was lost, to another worker or to this worker's own
/// claim, cannot end what the next run owns. False when the group is gone.
macro_rules! owned {
    () => {
        r"
local function owned(deliveries)
  local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[3])
  return type(p) == 'table' and #p == 1 and p[1][4] == tonumber(deliveries)
end
"
    };
}

/// `fields_of(id)`: the fields of entry `id` of stream `KEYS[1]` but
/// attempts and error, which the caller sets anew, and whether it was there.
macro_rules! fields_of {
    () => {
        r"
local function fields_of(id)
  local found = redis.call('XRANGE', KEYS[1], id, id)
  local kept = {}
  if #found == 1 then
    local f = found[1][2]
    for i = 1, #f, 2 do
      if f[i] ~= 'attempts' and f[i] ~= 'error' then
        table.insert(kept, f[i])
        table.insert(kept, f[i + 1])
      end
    end
  end
  return kept, #found == 1
end
"
    };
}

/// `now_ms()`: Redis's own clock, in milliseconds: every worker schedules
/// and promotes retries by the same clock, whatever their own say.
macro_rules! clock {
    () => {
        r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"
    };
}

/// KEYS: stream. ARGV: group. Creates the group (and the stream) when
/// missing, from the stream's start. 1 when created, 0 when it existed.
pub(super) const ENSURE_GROUP: &str = r"#!lua flags=allow-oom
local r = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if type(r) == 'table' and r.err then
  if string.find(r.err, 'BUSYGROUP') then return 0 end
  return r
end
return 1
";

/// KEYS: stream, dedupe key. ARGV: group, id, consumer, done TTL ms,
/// deliveries. Records the event done and, for its owner, acknowledges and
/// deletes the entry. 1 when the entry was this run's.
pub(super) const DONE: &str = concat!(
    "#!lua flags=allow-oom\n",
    owned!(),
    r"
local mine = owned(ARGV[5])
if mine then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
end
redis.call('SET', KEYS[2], 'done', 'PX', ARGV[4])
if mine then return 1 end
return 0
"
);

/// KEYS: stream. ARGV: group, id, consumer, deliveries. For its owner,
/// acknowledges and deletes an entry not to be run (a copy of an event
/// queued or done already), leaving its event's key as it is. 1 when owned.
pub(super) const DISCARD: &str = concat!(
    "#!lua flags=allow-oom\n",
    owned!(),
    r"
if not owned(ARGV[4]) then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"
);

/// KEYS: stream, retry set, the retry's hash. ARGV: group, id, consumer,
/// wait ms, attempts, error, deliveries. Copies the entry into the hash, schedules it
/// by Redis's clock, then acknowledges and deletes it. 1 when owned, 2
/// when owned but its entry was gone from the stream (deleted by hand).
pub(super) const RETRY: &str = concat!(
    "#!lua flags=allow-oom\n",
    owned!(),
    fields_of!(),
    clock!(),
    r"
if not owned(ARGV[7]) then return 0 end
local kept, found = fields_of(ARGV[2])
if found then
  redis.call('HSET', KEYS[3], 'attempts', ARGV[5], 'error', ARGV[6], unpack(kept))
  redis.call('ZADD', KEYS[2], string.format('%d', now_ms() + tonumber(ARGV[4])), ARGV[2])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if found then return 1 end
return 2
"
);

/// `size(fields)`: the bytes of a stream entry's values, as the dead
/// letters' byte count keeps them. `drop_oldest(dead, bytes)`: deletes the
/// oldest dead letter and takes its size off the count.
macro_rules! dead_bytes {
    () => {
        r"
local function size(fields)
  local n = 0
  for i = 2, #fields, 2 do n = n + #fields[i] end
  return n
end
local function drop_oldest(dead, bytes)
  local oldest = redis.call('XRANGE', dead, '-', '+', 'COUNT', 1)
  if #oldest == 0 then return false end
  redis.call('XDEL', dead, oldest[1][1])
  if redis.call('DECRBY', bytes, size(oldest[1][2])) < 0 then redis.call('SET', bytes, 0) end
  return true
end
"
    };
}

/// KEYS: stream, dead-letter stream, the dead letters' byte count. ARGV:
/// group, id, consumer, the dead letters' cap, attempts, error, deliveries,
/// the dead letters' byte cap. Moves the entry to the dead letters, drops
/// the oldest while they are over either cap (never the one just added),
/// then acknowledges and deletes the entry. Returns the dead letter's id,
/// how many old dead letters the caps dropped, and 1 (0 when the entry was
/// gone from the stream, so the dead letter has no body); or false when the
/// entry is not this consumer's.
pub(super) const DEAD: &str = concat!(
    "#!lua flags=allow-oom\n",
    owned!(),
    fields_of!(),
    dead_bytes!(),
    r"
if not owned(ARGV[7]) then return false end
local kept, found = fields_of(ARGV[2])
local letter = {'attempts', ARGV[5], 'error', ARGV[6], unpack(kept)}
local dead = redis.call('XADD', KEYS[2], '*', unpack(letter))
local bytes = redis.call('INCRBY', KEYS[3], size(letter))
local dropped = 0
while redis.call('XLEN', KEYS[2]) > 1 and (redis.call('XLEN', KEYS[2]) > tonumber(ARGV[4])
    or bytes > tonumber(ARGV[8])) do
  if not drop_oldest(KEYS[2], KEYS[3]) then break end
  dropped = dropped + 1
  bytes = tonumber(redis.call('GET', KEYS[3]))
end
-- Alone in the stream, the letter is the whole count: a count that drifted
-- (dead letters deleted by hand, or kept before the count was) heals here.
if redis.call('XLEN', KEYS[2]) == 1 then redis.call('SET', KEYS[3], size(letter)) end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return {dead, dropped, found and 1 or 0}
"
);

/// KEYS: dead-letter stream, its byte count. ARGV: the first id to keep.
/// Deletes the dead letters before it, oldest first, keeping the byte
/// count. How many.
pub(super) const PURGE_DEAD: &str = concat!(
    "#!lua flags=allow-oom\n",
    dead_bytes!(),
    r"
local purged = 0
while true do
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  if #oldest == 0 then break end
  local ms, seq = string.match(oldest[1][1], '^(%d+)-(%d+)$')
  local kms, kseq = string.match(ARGV[1], '^(%d+)-(%d+)$')
  if tonumber(ms) > tonumber(kms) or (tonumber(ms) == tonumber(kms) and tonumber(seq) >= tonumber(kseq)) then
    break
  end
  drop_oldest(KEYS[1], KEYS[2])
  purged = purged + 1
end
if redis.call('XLEN', KEYS[1]) == 0 then redis.call('SET', KEYS[2], 0) end
return purged
"
);

/// KEYS: stream. ARGV: group, id, consumer, deliveries. Resets the entry's
/// idle time while its run holds it, so that no other worker claims it.
/// 1 when owned.
pub(super) const RENEW: &str = concat!(
    "#!lua flags=allow-oom\n",
    owned!(),
    r"
if not owned(ARGV[4]) then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"
);

/// KEYS: stream. ARGV: group, id, consumer, idle ms, the delivery count to
/// set, deliveries. For its run, makes the entry look idle for `idle` with its delivery count set
/// back, so that the next worker's claim takes it and this delivery is not
/// counted as an attempt. 1 when owned.
pub(super) const PASS_ON: &str = concat!(
    "#!lua flags=allow-oom\n",
    owned!(),
    r"
if not owned(ARGV[6]) then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'IDLE', ARGV[4],
  'RETRYCOUNT', ARGV[5], 'JUSTID')
return 1
"
);

/// KEYS: retry set, stream. ARGV: how many, the retry hashes' key prefix.
/// Appends the retries that are due (by Redis's clock) to the stream, then
/// removes them from the retry set: an error in between leaves a retry
/// scheduled, never lost. Returns {due, of which missing} (a retry whose
/// hash was deleted by hand).
pub(super) const PROMOTE: &str = concat!(
    "#!lua flags=allow-oom\n",
    clock!(),
    r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now_ms()),
  'LIMIT', 0, ARGV[1])
local missing = 0
for _, id in ipairs(due) do
  local key = ARGV[2] .. id
  local fields = redis.call('HGETALL', key)
  if #fields > 0 then
    redis.call('XADD', KEYS[2], '*', unpack(fields))
  else
    missing = missing + 1
  end
  redis.call('ZREM', KEYS[1], id)
  redis.call('DEL', key)
end
return {#due, missing}
"
);

/// KEYS: stream. ARGV: group, consumer. Removes the consumer when it holds
/// no entry. 1 when removed.
pub(super) const LEAVE: &str = r"#!lua flags=allow-oom
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if type(p) == 'table' and not p.err and #p == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
";

/// KEYS: stream. ARGV: group, idle ms after which a consumer holding
/// nothing is removed. The safety cap: trims entries below both the
/// group's last delivered id and its oldest pending one (acknowledged
/// entries a delete missed; never an unread or pending one), and removes
/// consumers that crashed workers left. Returns {trimmed, removed}.
pub(super) const TIDY: &str = r"#!lua flags=allow-oom
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function older(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local function map(flat)
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  return f
end
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if groups.err then return {0, 0} end
local last
for _, g in ipairs(groups) do
  local f = map(g)
  if f['name'] == ARGV[1] then last = f['last-delivered-id'] end
end
if not last then return {0, 0} end
local floor = last
local summary = redis.call('XPENDING', KEYS[1], ARGV[1])
if summary[1] > 0 and older(summary[2], floor) then floor = summary[2] end
local trimmed = redis.call('XTRIM', KEYS[1], 'MINID', floor)
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = map(c)
  if f['pending'] == 0 and f['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    removed = removed + 1
  end
end
return {trimmed, removed}
";

/// KEYS: stream, retry set, dead-letter stream. ARGV: group. Read only:
/// {entries, age of the oldest in ms by Redis's clock (-1: none), pending,
/// scheduled retries, dead letters, consumers}.
pub(super) const STATS: &str = concat!(
    "#!lua flags=no-writes\n",
    clock!(),
    r"
local entries = redis.call('XLEN', KEYS[1])
local oldest = -1
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #first == 1 then
  oldest = now_ms() - tonumber(string.match(first[1][1], '^(%d+)-'))
end
local pending, consumers = 0, 0
local summary = redis.pcall('XPENDING', KEYS[1], ARGV[1])
if type(summary) == 'table' and not summary.err then pending = summary[1] end
local list = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(list) == 'table' and not list.err then consumers = #list end
return {entries, oldest, pending, redis.call('ZCARD', KEYS[2]), redis.call('XLEN', KEYS[3]),
  consumers}
"
);

/// KEYS: stream. `INFO replication` of the node that holds it.
pub(super) const INFO: &str = r"#!lua flags=no-writes
return redis.call('INFO', 'replication')
";

/// KEYS: dead-letter stream, stream, the dead letters' byte count. ARGV:
/// the dead letter's id. Moves it back onto the stream with its attempts
/// reset, and takes its size off the count. 1 when there was one.
pub(super) const REQUEUE: &str = concat!(
    "#!lua\n",
    dead_bytes!(),
    r"
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1], 'COUNT', 1)
if #found == 0 then return 0 end
local fields = found[1][2]
local entry = {}
for i = 1, #fields, 2 do
  local name = fields[i]
  if name ~= 'attempts' and name ~= 'error' and name ~= 'requeued' then
    table.insert(entry, name)
    table.insert(entry, fields[i + 1])
  end
end
redis.call('XADD', KEYS[2], '*', 'attempts', '0', 'requeued', '1', unpack(entry))
-- The entry found, by its own id: an id given without its sequence number
-- ('1764700000000') ranges over every entry of that millisecond.
redis.call('XDEL', KEYS[1], found[1][1])
if redis.call('DECRBY', KEYS[3], size(fields)) < 0 then redis.call('SET', KEYS[3], 0) end
return 1
"
);

/// KEYS: the maintenance lease. ARGV: consumer, lease ms. Takes the lease
/// when free, renews it when this consumer holds it. 1 when it holds it.
pub(super) const LEASE: &str = r"#!lua flags=allow-oom
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// KEYS: the maintenance lease. ARGV: consumer. Gives the lease up when
/// this consumer holds it.
pub(super) const RELEASE: &str = r"#!lua flags=allow-oom
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";
