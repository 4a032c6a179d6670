"""History in Redis Streams, shared by every instance: offsets, storage and live broadcast in one atomic step.

Each channel is a stream whose entry IDs are `<offset>-0`, so reading "everything after offset N" is one
XRANGE. Offsets come from HINCRBY on one hash inside the same Lua script that appends, trims (by count with
MAXLEN, by age with MINID) and, when a broadcast target is configured, PUBLISHes the message to
python-socketio's Redis channel as an ordinary `emit` for the channel's room. Doing the PUBLISH inside the
script is what keeps delivery in offset order across instances: Redis runs scripts one at a time, so the
pub/sub stream every instance reads carries each channel's messages in exactly the order of their offsets,
whichever instance or external process published them.

The same script decides idempotency: a publish with an idempotency key first looks for the key's record (a
string key per channel and idempotency key, expiring with the window) and, when it is there, answers from it and
stores nothing; otherwise it stores the message and writes the record. One script, so two retries racing on two
instances cannot both miss the record. A publish to several channels is one script over all of their keys.

A failover can lose the last writes (replication is asynchronous): the promoted replica's counters may end below
offsets that were already handed out and delivered live. Every store remembers the highest offset it saw per
channel (HighWater: its own appends and every live packet its instance's listener reads) and sends it with each
append; the script, finding its counter below one of them, counts on above it (no offset is ever handed out twice)
and starts a new epoch, so clients that recover get `recovered: false` and resync. An instance whose listener
reconnects sends all it knows the same way (reconcile) before catching up.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from hub.errors import Unavailable
from hub.history import DEFAULT_IDEMPOTENCY_WINDOW, HistoryStore, Message, new_message_id
from hub.redis_client import RedisKeys, text, unavailable_on_outage, warn_outage
from utils.redis_urls import default_min_replicas

# Shared Lua helpers, prepended to each script. Entry fields: e (event), d (data as JSON), i (id), t (ms).
_LUA_HELPERS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function get_epoch(key, candidate)
  local epoch = redis.call('GET', key)
  if not epoch then
    redis.call('SET', key, candidate)
    epoch = candidate
  end
  return epoch
end
-- Offsets a caller saw handed out that this Redis no longer counts up to: it lost writes (a failover to a replica
-- that had not copied them). Count on above them; a new epoch if they were seen in this very epoch.
local function raise_to_seen(epoch_key, offsets_key, epoch, seen_in, candidate, channels, seen)
  local lost = false
  for i, channel in ipairs(channels) do
    local known = tonumber(seen[i])
    if known > 0 and tonumber(redis.call('HGET', offsets_key, channel) or '0') < known then
      redis.call('HSET', offsets_key, channel, known)
      lost = true
    end
  end
  if lost and seen_in == epoch then
    redis.call('SET', epoch_key, candidate)
    return candidate
  end
  return epoch
end
local function field(entry, name)
  local f = entry[2]
  for i = 1, #f, 2 do
    if f[i] == name then return f[i + 1] end
  end
end
local function offset_of(id)
  return tonumber(string.match(id, '^(%d+)'))
end
local function trim_old(key, horizon)
  -- Usually nothing has expired: one entry tells, without reading a whole batch on every append.
  local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
  if #first == 0 or tonumber(field(first[1], 't')) > horizon then return end
  while true do
    local batch = redis.call('XRANGE', key, '-', '+', 'COUNT', 100)
    if #batch == 0 then return end
    for _, entry in ipairs(batch) do
      if tonumber(field(entry, 't')) > horizon then
        redis.call('XTRIM', key, 'MINID', entry[1])
        return
      end
    end
    redis.call('XTRIM', key, 'MINID', (offset_of(batch[#batch][1]) + 1) .. '-0')
    if #batch < 100 then return end
  end
end
-- python-socketio's message-queue format for an emit; `data` is spliced in as stored, never re-encoded,
-- so numbers keep their exact JSON spelling.
-- `skip` is the JSON of python-socketio's skip_sid: null, or the sid every instance leaves out of the emit.
-- python-socketio's emit packet; its keys, in this order, are integration/pubsub_packets.py EMIT_KEYS (pins check).
-- The arguments a client gets with a message: its data, as stored, then its meta.
local function message_args(channel, entry)
  return field(entry, 'd') .. ',{"channel":' .. cjson.encode(channel) .. ',"offset":' .. offset_of(entry[1])
    .. ',"id":' .. cjson.encode(field(entry, 'i')) .. ',"ts":' .. field(entry, 't') .. '}'
end
local function emit_packet(room, channel, entry, host, extra, skip)
  return '{"method":"emit","event":' .. cjson.encode(field(entry, 'e')) .. ',"data":[' .. message_args(channel, entry)
    .. '],"binary":false,"namespace":"/","room":' .. cjson.encode(room)
    .. ',"skip_sid":' .. skip .. ',"callback":null,"host_id":' .. cjson.encode(host) .. extra .. '}'
end
"""

# KEYS: epoch, offsets, channels, then the n streams, then (only with an idempotency key) the n key records.
# ARGV: event, data, id, max_messages, max_age_ms, epoch candidate, pubsub channel ('' = none), host,
#       window_ms, skip_sid JSON, n, keyed ('1' or '0'), then the n channel names, then their n rooms, then the
#       epoch the high-water marks were seen in, then the n marks (0: none).
# Returns: epoch, then per channel: offset, ts, id, duplicate (1 or 0).
_APPEND = _LUA_HELPERS + """
local n = tonumber(ARGV[11])
local keyed = ARGV[12] == '1'
local now = now_ms()
local channels, seen = {}, {}
for i = 1, n do
  channels[i] = ARGV[12 + i]
  seen[i] = ARGV[13 + 2 * n + i]
end
local epoch = raise_to_seen(KEYS[1], KEYS[2], get_epoch(KEYS[1], ARGV[6]), ARGV[13 + 2 * n], ARGV[6], channels, seen)
local out = {epoch}
for i = 1, n do
  local channel = ARGV[12 + i]
  local seen = keyed and redis.call('GET', KEYS[3 + n + i])
  if seen then
    -- A write of the same value: WAIT after this script then also covers the first publish's replication.
    redis.call('SET', KEYS[3 + n + i], seen, 'KEEPTTL')
    local offset, ts, id = string.match(seen, '^(%d+) (%d+) (.+)$')
    for _, v in ipairs({tonumber(offset), tonumber(ts), id, 1}) do out[#out + 1] = v end
  else
    local stream = KEYS[3 + i]
    local offset = redis.call('HINCRBY', KEYS[2], channel, 1)
    local id = offset .. '-0'
    redis.call('XADD', stream, 'MAXLEN', '=', ARGV[4], id, 'e', ARGV[1], 'd', ARGV[2], 'i', ARGV[3], 't', now)
    trim_old(stream, now - tonumber(ARGV[5]))
    redis.call('ZADD', KEYS[3], now, channel)
    if keyed then
      redis.call('SET', KEYS[3 + n + i], offset .. ' ' .. now .. ' ' .. ARGV[3], 'PX', ARGV[9])
    end
    if ARGV[7] ~= '' then
      local entry = {id, {'e', ARGV[1], 'd', ARGV[2], 'i', ARGV[3], 't', tostring(now)}}
      local extra = ',"signalboard":{"channel":' .. cjson.encode(channel) .. ',"offset":' .. offset
        .. ',"epoch":' .. cjson.encode(epoch) .. '}'
      redis.call('PUBLISH', ARGV[7], emit_packet(ARGV[12 + n + i], channel, entry, ARGV[8], extra, ARGV[10]))
    end
    for _, v in ipairs({offset, now, ARGV[3], 0}) do out[#out + 1] = v end
  end
end
return out
"""

# KEYS: epoch, offsets, stream. ARGV: channel, after, limit (0 = all), max_age_ms, epoch candidate.
_SINCE = _LUA_HELPERS + """
local epoch = get_epoch(KEYS[1], ARGV[5])
local latest = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local from = tonumber(ARGV[2])
if from >= latest then
  return {from == latest and 1 or 0, latest, epoch, {}}
end
trim_old(KEYS[3], now_ms() - tonumber(ARGV[4]))
local entries
if tonumber(ARGV[3]) > 0 then
  entries = redis.call('XRANGE', KEYS[3], (from + 1) .. '-0', '+', 'COUNT', ARGV[3])
else
  entries = redis.call('XRANGE', KEYS[3], (from + 1) .. '-0', '+')
end
local complete = 0
if #entries > 0 and offset_of(entries[1][1]) == from + 1 then complete = 1 end
return {complete, latest, epoch, entries}
"""

# Publishes every held message after `after` to one connection's room as one BACKLOG_METHOD packet (a packet per
# message cost the listener of every instance that many packets), then the marker (a python-socketio `callback`
# packet, completed with the latest offset and the epoch) that tells its instance where the replay ends in the
# pub/sub order. KEYS: epoch, offsets, stream.
# ARGV: channel, after, max_age_ms, epoch candidate, pubsub channel, sid room, marker prefix, backlog method.
_REPLAY = _LUA_HELPERS + """
local epoch = get_epoch(KEYS[1], ARGV[4])
local latest = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local after = tonumber(ARGV[2])
local complete = 1
local sent = 0
if after < latest then
  trim_old(KEYS[3], now_ms() - tonumber(ARGV[3]))
  local entries = redis.call('XRANGE', KEYS[3], (after + 1) .. '-0', '+')
  if #entries == 0 or offset_of(entries[1][1]) ~= after + 1 then complete = 0 end
  if #entries > 0 then
    local messages = {}
    for i, entry in ipairs(entries) do
      messages[i] = '[' .. cjson.encode(field(entry, 'e')) .. ',' .. message_args(ARGV[1], entry) .. ']'
    end
    redis.call('PUBLISH', ARGV[5], '{"method":' .. cjson.encode(ARGV[8]) .. ',"room":' .. cjson.encode(ARGV[6])
      .. ',"marker":' .. cjson.encode(ARGV[7]) .. ',"messages":[' .. table.concat(messages, ',') .. ']}')
    sent = #entries
  end
elseif after > latest then
  complete = 0
end
redis.call('PUBLISH', ARGV[5], ARGV[7] .. latest .. ',' .. cjson.encode(epoch) .. ']}')
return {complete, latest, epoch, sent}
"""

# KEYS: epoch, offsets. ARGV: epoch candidate, the epoch the marks were seen in, m, m channels, their m marks.
# Returns: the epoch (a new one if marks of its own were above the counters).
_RECONCILE = _LUA_HELPERS + """
local m = tonumber(ARGV[3])
local channels, seen = {}, {}
for i = 1, m do
  channels[i] = ARGV[3 + i]
  seen[i] = ARGV[3 + m + i]
end
return raise_to_seen(KEYS[1], KEYS[2], get_epoch(KEYS[1], ARGV[1]), ARGV[2], ARGV[1], channels, seen)
"""

# KEYS: channels. ARGV: max_age_ms.
_CHANNELS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# Our own queue packet, {"method": BACKLOG_METHOD, "room", "marker", "messages": [[event, data, meta], ...]}: a
# recovering connection's backlog in one message (replay(); "marker": the join marker's prefix), which
# integration/redis_manager.py's listener handles itself: python-socketio never sees it.
BACKLOG_METHOD = "signalboard:backlog"
# Who the queue packets claim to come from. No python-socketio instance has this host id, so every instance's
# listener handles them, including the one whose hub published.
BROADCAST_HOST_ID = "signalboard"
# The Socket.IO room of a channel is this prefix + its name; it must equal what
# blueprints.realtime.delivery.channel_room() builds (a test checks that they agree).
CHANNEL_ROOM_PREFIX = "channel "


@dataclass(frozen=True)
class Broadcast:
    """Where appended messages are announced live: python-socketio's Redis channel and the channel rooms."""

    pubsub_channel: str
    room_prefix: str

    def room(self, channel: str) -> str:
        return self.room_prefix + channel


class HighWater:
    """The highest offset seen handed out per channel, with its epoch; the most recently seen channels are kept."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        # Guards _marks (request threads and the listener thread record concurrently).
        self._lock = threading.Lock()
        self._marks: OrderedDict[str, tuple[str, int]] = OrderedDict()

    def saw(self, channel: str, epoch: str, offset: int) -> None:
        with self._lock:
            previous = self._marks.get(channel)
            if previous is None or previous[0] != epoch or previous[1] < offset:
                self._marks[channel] = (epoch, offset)
            self._marks.move_to_end(channel)
            if len(self._marks) > self.limit:
                self._marks.popitem(last=False)

    def mark(self, channel: str) -> tuple[str, int] | None:
        with self._lock:
            return self._marks.get(channel)

    def snapshot(self) -> list[tuple[str, str, int]]:
        """(channel, epoch, offset) for every channel remembered."""
        with self._lock:
            return [(channel, epoch, offset) for channel, (epoch, offset) in self._marks.items()]


# Channels per reconcile call: one script must not hold Redis for long.
_RECONCILE_BATCH = 1000


@dataclass(frozen=True)
class Replicas:
    """How many replicas must confirm an append (Redis WAIT) before it is acknowledged, and for how long to wait."""

    count: int = 0
    timeout_ms: int = 1000

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Replicas:
        count = config["REDIS_MIN_REPLICAS"]
        return cls(default_min_replicas(config["REDIS_URL"]) if count is None else count,
                   config["REDIS_REPLICA_TIMEOUT_MS"])


@dataclass(frozen=True)
class Replay:
    """What a replay published: whether nothing was missing after `after`, and up to which offset."""

    complete: bool
    latest: int
    epoch: str
    sent: int


def encode_data(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class RedisHistoryStore(HistoryStore):
    """HistoryStore on Redis Streams; safe to share between any number of instances and publishers."""

    def __init__(
        self,
        client: redis.Redis,
        keys: RedisKeys,
        max_messages: int = 1000,
        max_age_seconds: float = 300.0,
        *,
        idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW,
        broadcast: Broadcast | None = None,
        replicas: Replicas = Replicas(),
    ) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if max_age_seconds <= 0 or idempotency_window <= 0:
            raise ValueError("max_age_seconds and idempotency_window must be positive")
        self.client = client
        self.keys = keys
        self.max_messages = max_messages
        self.max_age_ms = int(max_age_seconds * 1000)
        self.window_ms = int(idempotency_window * 1000)
        self.broadcast = broadcast
        self.replicas = replicas
        self.high_water = HighWater()
        self._reconcile = client.register_script(_RECONCILE)
        self._append = client.register_script(_APPEND)
        self._since = client.register_script(_SINCE)
        self._replay = client.register_script(_REPLAY)
        self._channels = client.register_script(_CHANNELS)
        # Per thread: the kind, channel and latest offset of the last read. A subscription reads history and
        # then attaches on the same thread; the attach continues exactly where that read stopped.
        self._read_points = threading.local()
        # The epoch every script call reports, so reading `epoch` right after a read costs no round trip.
        self._epoch: str | None = None

    @staticmethod
    def _epoch_candidate() -> str:
        return uuid.uuid4().hex[:12]

    def _note_read(self, kind: str, channel: str, latest: int) -> None:
        last = getattr(self._read_points, "last", None)
        if kind == "latest" and last is not None and last[:2] == ("since", channel):
            return  # a subscription reads since() then latest(): its replay continues from the since() read
        self._read_points.last = (kind, channel, latest)

    def take_read_point(self, channel: str) -> int | None:
        """Where this thread's last read of `channel` ended (see replay()); None if its last read was elsewhere."""
        last = getattr(self._read_points, "last", None)
        self._read_points.last = None
        return last[2] if last is not None and last[1] == channel else None

    @property
    def epoch(self) -> str:
        if self._epoch is None:
            candidate = self._epoch_candidate()
            with unavailable_on_outage("epoch"):
                current = self.client.set(self.keys.epoch, candidate, nx=True, get=True)
            # SET ... GET answers the value already there (decoded: this client decodes responses), or None.
            self._epoch = current if isinstance(current, str) else candidate
        return self._epoch

    def append_all(
        self,
        channels: Sequence[str],
        event: str,
        data: Any,
        *,
        idempotency_key: str | None = None,
        exclude: str | None = None,
    ) -> list[Message]:
        message_id = new_message_id()
        encoded = encode_data(data)
        target = self.broadcast
        keys = [self.keys.epoch, self.keys.offsets, self.keys.channels, *(self.keys.stream(c) for c in channels)]
        if idempotency_key is not None:
            keys += [self.keys.idempotency(c, idempotency_key) for c in channels]
        rooms = [target.room(c) if target else "" for c in channels]
        seen_in, marks = self._marks(channels)
        args = [
            event, encoded, message_id, self.max_messages, self.max_age_ms, self._epoch_candidate(),
            target.pubsub_channel if target else "", BROADCAST_HOST_ID, self.window_ms,
            json.dumps(exclude), len(channels), "0" if idempotency_key is None else "1", *channels, *rooms,
            seen_in, *marks,
        ]
        confirmed = self.replicas.count
        with unavailable_on_outage("append"):
            if self.replicas.count == 0:
                reply = self._append(keys=keys, args=args)
            else:
                # WAIT counts the replicas that have this connection's writes so far: one connection for both.
                pipe = self.client.pipeline(transaction=False)
                self._append(keys=keys, args=args, client=pipe)
                pipe.execute_command("WAIT", self.replicas.count, self.replicas.timeout_ms)
                reply, confirmed = pipe.execute()
        messages = self._appended(channels, event, data, reply)
        if confirmed < self.replicas.count:
            self._refuse_unconfirmed(confirmed)
        return messages

    def _marks(self, channels: Sequence[str]) -> tuple[str, list[int]]:
        """The epoch of the marks sent and each channel's mark (0: none seen in that epoch)."""
        seen_in = self._epoch or ""
        marks = []
        for channel in channels:
            mark = self.high_water.mark(channel)
            marks.append(mark[1] if mark is not None and mark[0] == seen_in else 0)
        return seen_in, marks

    def _appended(self, channels: Sequence[str], event: str, data: Any, reply: list[Any]) -> list[Message]:
        """The messages of an append's reply, recorded as seen (they are broadcast, acknowledged or not)."""
        self._epoch = epoch = reply[0]
        answers = [reply[1 + 4 * i: 5 + 4 * i] for i in range(len(channels))]
        messages = [
            Message(channel, event, data, int(offset), str(mid), int(ts), duplicate=bool(int(dup)))
            for channel, (offset, ts, mid, dup) in zip(channels, answers, strict=True)
        ]
        for message in messages:
            self.high_water.saw(message.channel, epoch, message.offset)
        return messages

    def reconcile(self) -> str:
        """Send every high-water mark to Redis (after a reconnect): a new epoch if it lost offsets seen here."""
        marks = self.high_water.snapshot()
        with unavailable_on_outage("reconcile"):
            stored = self.client.get(self.keys.epoch)
            epoch = seen_in = text(stored) if stored is not None else ""
            for start in range(0, len(marks), _RECONCILE_BATCH):
                batch = [(c, o) for c, e, o in marks[start:start + _RECONCILE_BATCH] if e == seen_in]
                if not batch:
                    continue
                # Once the epoch changed (this call or another instance), later batches only raise counters.
                epoch = text(self._reconcile(
                    keys=[self.keys.epoch, self.keys.offsets],
                    args=[self._epoch_candidate(), seen_in if epoch == seen_in else "", len(batch),
                          *(c for c, _ in batch), *(o for _, o in batch)],
                ))
                for channel, offset in batch:
                    self.high_water.saw(channel, epoch, offset)
        self._epoch = epoch or None
        return epoch

    def _refuse_unconfirmed(self, confirmed: int) -> None:
        """Stored and broadcast, but not known to survive a failover: the caller must not take it as acknowledged."""
        count, timeout = self.replicas.count, self.replicas.timeout_ms
        warn_outage("append", f"{confirmed} of {count} replicas confirmed within {timeout} ms")
        raise Unavailable(f"the message was not confirmed by {count} Redis replica(s) within {timeout} ms; retry with "
                          "the same idempotency_key", retry_after=1.0)

    def _entries(self, channel: str, entries: list[Any]) -> list[Message]:
        messages = []
        for entry_id, flat in entries:
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            offset = int(entry_id.split("-", 1)[0])
            data = json.loads(fields["d"])
            messages.append(Message(channel, fields["e"], data, offset, fields["i"], int(fields["t"])))
        return messages

    def since(self, channel: str, offset: int, limit: int | None = None, *,
              subscribing: bool = False) -> tuple[list[Message], bool]:
        with unavailable_on_outage("history read"):
            complete, latest, self._epoch, entries = self._since(
                keys=[self.keys.epoch, self.keys.offsets, self.keys.stream(channel)],
                args=[channel, offset, limit or 0, self.max_age_ms, self._epoch_candidate()],
            )
        self.high_water.saw(channel, self._epoch, int(latest))
        if limit is None or subscribing:
            self._note_read("since", channel, int(latest))
        return self._entries(channel, entries), bool(complete)

    def latest(self, channel: str) -> int:
        with unavailable_on_outage("offset read"):
            pipe = self.client.pipeline(transaction=False)
            pipe.hget(self.keys.offsets, channel)
            pipe.get(self.keys.epoch)
            raw_latest, epoch = pipe.execute()
        latest = int(raw_latest or 0)
        self._epoch = epoch  # None after a flush: the next `epoch` read starts a new one
        if epoch is not None:
            self.high_water.saw(channel, epoch, latest)
        self._note_read("latest", channel, latest)
        return latest

    def channels(self) -> list[str]:
        with unavailable_on_outage("channel list"):
            return list(self._channels(keys=[self.keys.channels], args=[self.max_age_ms]))

    def replay(self, channel: str, after: int, sid_room: str, marker_prefix: str) -> Replay:
        """Publish every held message after `after` to `sid_room`, then the marker, in one atomic step.

        `marker_prefix` is a python-socketio `callback` packet up to its `args` list, which the script completes
        with the latest offset and the epoch; the instance holding the connection runs that callback when its
        listener reaches it, which is the exact point in the live order where the connection should join.
        """
        if self.broadcast is None:
            raise RuntimeError("replay needs a broadcast target")
        with unavailable_on_outage("replay"):
            complete, latest, epoch, sent = self._replay(
                keys=[self.keys.epoch, self.keys.offsets, self.keys.stream(channel)],
                args=[
                    channel, after, self.max_age_ms, self._epoch_candidate(), self.broadcast.pubsub_channel,
                    sid_room, marker_prefix, BACKLOG_METHOD,
                ],
            )
        self._epoch = epoch
        self.high_water.saw(channel, epoch, int(latest))
        return Replay(bool(complete), int(latest), epoch, int(sent))
