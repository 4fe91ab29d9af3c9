//! The Lua scripts that make each broker operation one atomic round trip, and the keys they use.
//!
//! Every key of a channel carries the channel's name as a hash tag (`{name}`), so in a Redis
//! Cluster they all live in the channel's slot, and so does its sharded pub/sub channel: a script
//! touches one slot, as Cluster requires.
//!
//! - `hf:{name}:m`: a hash with the channel's `epoch` and last `seq`;
//! - `hf:{name}:s`: the stream of its messages, entry id `<seq>-0`, fields `e` (event, `*` for
//!   none), `d` (data), `j` (`1` for JSON), `t` (Redis time of the publish, ms);
//! - `hf:{name}:n`: a hash of subscriber counts, one field per node: `"<count> <expires_ms>"`;
//! - `hf:{name}`: the pub/sub channel every publish and delete is announced on;
//! - `hf:{name}:d`: the tokens of the channel's last [`DEDUPE_WINDOW`] publishes, scored by their
//!   sequence numbers: a publish the Redis client sends again after a reconnect (its answer was
//!   lost with the connection) is recognised and not appended twice.
//!
//! Times come from Redis (`TIME`), never from a node's clock, so nodes need no synced clocks.

/// The keys of one channel, in the order the scripts take them.
pub(crate) fn keys(name: &str) -> Vec<String> {
    vec![
        format!("hf:{{{name}}}:m"),
        format!("hf:{{{name}}}:s"),
        format!("hf:{{{name}}}:n"),
        topic(name),
        format!("hf:{{{name}}}:d"),
    ]
}

/// The pub/sub channel of a channel.
pub(crate) fn topic(name: &str) -> String {
    format!("hf:{{{name}}}")
}

/// The channel a pub/sub topic announces, if it is one of ours.
pub(crate) fn channel_of(topic: &str) -> Option<&str> {
    topic.strip_prefix("hf:{")?.strip_suffix('}')
}

/// Publishes per channel whose tokens are remembered (see `hf:{name}:d`).
pub(crate) const DEDUPE_WINDOW: usize = 1024;

/// Shared by the scripts: Redis time in ms, the live subscriber count (dropping the counts of
/// nodes that stopped refreshing theirs), and publishing a note (sharded in a cluster).
const COMMON: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function subscribers(key, now)
  local total = 0
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local count, expires = string.match(fields[i + 1], '(%d+) (%d+)')
    if count and tonumber(expires) > now then
      total = total + tonumber(count)
    else
      redis.call('HDEL', key, fields[i])
    end
  end
  return total
end
local function announce(topic, note, sharded)
  if sharded == '1' then redis.call('SPUBLISH', topic, note) else redis.call('PUBLISH', topic, note) end
end
"#;

/// Publish. KEYS: meta, stream, counts, topic, tokens. ARGV: epoch if new, maxlen, event (`*`:
/// none), data, json (`0`/`1`), sharded (`0`/`1`), ttl ms, the publish's token. Returns {epoch,
/// seq, subscribers}; for a token already applied, its position again (nothing is appended).
///
/// The sequence number comes from the meta hash (`HINCRBY`), the entry goes into the stream
/// trimmed to about `history_messages`, and the note to every node, all in one atomic step:
/// subscribers on every node see the same order.
pub(crate) fn publish() -> String {
    format!(
        "{COMMON}{}",
        r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local applied = redis.call('ZSCORE', KEYS[5], ARGV[8])
if epoch and applied then
  return {epoch, tonumber(applied), subscribers(KEYS[3], now_ms())}
end
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('ZADD', KEYS[5], seq, ARGV[8])
redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -(tonumber(ARGV[9]) + 1))
redis.call('PEXPIRE', KEYS[5], ARGV[7])
local now = now_ms()
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], seq .. '-0', 'e', ARGV[3], 'd', ARGV[4], 'j', ARGV[5], 't', now)
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
announce(KEYS[4], 'M ' .. epoch .. ' ' .. seq .. ' ' .. ARGV[5] .. ' ' .. ARGV[3] .. '\n' .. ARGV[4], ARGV[6])
return {epoch, seq, subscribers(KEYS[3], now)}
"#
    )
}

/// Open or catch up. KEYS: meta, stream. ARGV: epoch if new, ttl ms, the epoch the node holds
/// (`0`: none), the last seq it holds, max entries. Returns {epoch, seq, now_ms, entries}: the
/// newest `max` entries, only those after the node's seq when its epoch is current (a ring holds
/// `max` at most: older ones would be trimmed at once), oldest first. A node ahead of Redis (a
/// failover lost acknowledged writes) moves the channel to a new epoch.
pub(crate) fn open() -> String {
    format!(
        "{COMMON}{}",
        r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local seq = 0
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
  if ARGV[3] == epoch and tonumber(ARGV[4]) > seq then
    -- The node saw newer messages than Redis has: writes were lost (a replica promoted before
    -- it had them). Positions would be handed out twice; a new epoch makes every node reset,
    -- and the stream of the old one goes (resuming subscribers get a gap notice).
    epoch = ARGV[1]
    redis.call('HSET', KEYS[1], 'epoch', epoch)
    redis.call('DEL', KEYS[2])
  end
end
local oldest = '-'
if ARGV[3] == epoch then oldest = '(' .. ARGV[4] .. '-0' end
local entries = redis.call('XREVRANGE', KEYS[2], '+', oldest, 'COUNT', ARGV[5])
local n = #entries
for i = 1, math.floor(n / 2) do entries[i], entries[n - i + 1] = entries[n - i + 1], entries[i] end
return {epoch, seq, now_ms(), entries}
"#
    )
}

/// Channel info. KEYS: meta, stream, counts. Returns {} when the channel does not exist, else
/// {epoch, seq, messages, first id, subscribers}.
pub(crate) fn info() -> String {
    format!(
        "{COMMON}{}",
        r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {} end
local seq = redis.call('HGET', KEYS[1], 'seq') or '0'
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local first_id = '0-0'
if #first > 0 then first_id = first[1][1] end
return {epoch, seq, redis.call('XLEN', KEYS[2]), first_id, subscribers(KEYS[3], now_ms())}
"#
    )
}

/// Delete. KEYS: meta, stream, counts, topic, tokens. ARGV: sharded. Returns -1 when the channel did not
/// exist, else the subscribers it had; every node is told (`D`) and closes its subscribers.
pub(crate) fn delete() -> String {
    format!(
        "{COMMON}{}",
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local count = subscribers(KEYS[3], now_ms())
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[5])
announce(KEYS[4], 'D', ARGV[1])
return count
"#
    )
}

/// Reports one node's subscriber count, and keeps a channel the node holds from expiring (its
/// epoch must outlive quiet spells while anyone listens). KEYS: meta, stream, counts. ARGV:
/// node, count, count ttl ms, channel ttl ms.
pub(crate) fn report() -> String {
    format!(
        "{COMMON}{}",
        r#"
local now = now_ms()
if ARGV[2] == '0' then
  redis.call('HDEL', KEYS[3], ARGV[1])
else
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2] .. ' ' .. (now + tonumber(ARGV[3])))
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return 1
"#
    )
}
