"""Presence shared through Redis: each instance counts its own subscriptions there, and a dead one's expire.

Connections live in one instance's memory, so per-connection facts (is this sid subscribed, to what) stay in a
local PresenceRegistry. What other instances need is aggregated in Redis:

- `<p>:inst:<instance>`: hash "<channel> <subkey>" -> connections this instance holds (subkey `u:<sub>` or `a`
  for anonymous); its contribution, so it can be withdrawn as a whole.
- `<p>:subs:<channel>`: hash subkey -> connections across all live instances.
- `<p>:channels`: set of channels with at least one connection.
- `<p>:instances`: sorted set instance -> last heartbeat (Redis time, ms).

Every instance heartbeats; any instance reaps those silent for longer than the TTL, withdrawing their
contribution, which is how a crashed (SIGKILLed) instance's clients disappear. An instance that finds itself
missing (reaped while paused, or Redis restarted empty) re-publishes its whole local state.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from hub.errors import HubError
from hub.presence import PresenceChange, PresenceRegistry
from hub.redis_client import OUTAGE_ERRORS, RedisKeys, text, unavailable_on_outage

log = logging.getLogger(__name__)

_LUA_APPLY = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Add `delta` connections of "<channel> <subkey>" to the cluster-wide counts.
local function apply(subs_prefix, channels_key, f, delta)
  local space = string.find(f, ' ', 1, true)
  local channel, subkey = string.sub(f, 1, space - 1), string.sub(f, space + 1)
  local key = subs_prefix .. channel
  local n = redis.call('HINCRBY', key, subkey, delta)
  if n <= 0 then redis.call('HDEL', key, subkey) end
  -- edge: 1 when this change took the channel from no connection anywhere to one, or from one to none
  local edge
  if redis.call('HLEN', key) == 0 then
    edge = redis.call('SREM', channels_key, channel)
  else
    edge = redis.call('SADD', channels_key, channel)
  end
  return math.max(n, 0), edge
end
"""

# KEYS: instances, own hash, channels. ARGV: instance, "<channel> <subkey>", delta, subs prefix.
# Returns {the cluster-wide count for the subkey, the channel's edge (see apply)}, or {-1, 0} when this instance is
# not registered (then sync).
_CHANGE = _LUA_APPLY + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {-1, 0} end
local delta = tonumber(ARGV[3])
local mine = redis.call('HINCRBY', KEYS[2], ARGV[2], delta)
if mine <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
local n, edge = apply(ARGV[4], KEYS[3], ARGV[2], delta)
return {n, edge}
"""

# Replace this instance's contribution with a snapshot of its local state (and register it).
# KEYS: instances, own hash, channels. ARGV: instance, subs prefix, then field, count pairs.
_SYNC = _LUA_APPLY + """
redis.call('ZADD', KEYS[1], now_ms(), ARGV[1])
local diff = {}
local old = redis.call('HGETALL', KEYS[2])
for i = 1, #old, 2 do diff[old[i]] = -tonumber(old[i + 1]) end
redis.call('DEL', KEYS[2])
for i = 3, #ARGV, 2 do
  diff[ARGV[i]] = (diff[ARGV[i]] or 0) + tonumber(ARGV[i + 1])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
for f, delta in pairs(diff) do
  if delta ~= 0 then apply(ARGV[2], KEYS[3], f, delta) end
end
return 1
"""

# KEYS: instances. ARGV: instance. Returns 1 when the instance was missing (registered anew: sync needed).
_BEAT = _LUA_APPLY + """
return redis.call('ZADD', KEYS[1], now_ms(), ARGV[1])
"""

# Withdraw every instance silent for longer than the TTL. KEYS: instances, channels.
# ARGV: ttl ms, instance hash prefix, subs prefix.
# Returns the reaped instances, the "<channel> u:<sub>" fields that lost their last connection with them, and the
# channels left with no connection anywhere.
_REAP = _LUA_APPLY + """
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms() - tonumber(ARGV[1]))
local gone, vacated = {}, {}
for _, inst in ipairs(dead) do
  local key = ARGV[2] .. inst
  local old = redis.call('HGETALL', key)
  for i = 1, #old, 2 do
    local n, edge = apply(ARGV[3], KEYS[2], old[i], -tonumber(old[i + 1]))
    if n == 0 then table.insert(gone, old[i]) end
    if edge == 1 then table.insert(vacated, string.sub(old[i], 1, string.find(old[i], ' ', 1, true) - 1)) end
  end
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[1], inst)
end
return {dead, gone, vacated}
"""


def _subkey(sub: str | None) -> str:
    return "a" if sub is None else f"u:{sub}"


class RedisPresenceRegistry:
    """PresenceRegistry's methods, with channel-wide answers (counts, who, join/leave) across instances."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, instance_id: str, ttl_seconds: float = 15.0) -> None:
        self.client = client
        self.instance_id = instance_id
        self.ttl_ms = int(ttl_seconds * 1000)
        base = keys.presence
        self._instances = f"{base}:instances"
        self._inst_prefix = f"{base}:inst:"
        self._own = self._inst_prefix + instance_id
        self._subs_prefix = f"{base}:subs:"
        self._channels = f"{base}:channels"
        self._change = client.register_script(_CHANGE)
        self._sync = client.register_script(_SYNC)
        self._beat = client.register_script(_BEAT)
        self._reap = client.register_script(_REAP)
        self._local = PresenceRegistry()
        # Serialises local changes with their Redis counterpart and with sync, so a snapshot never counts a
        # change twice or misses one.
        self._lock = threading.Lock()
        self._dirty = True  # Redis may not match the local state: sync at the next heartbeat
        # No reaping before this (monotonic) time: after start-up or an outage, every live instance first
        # needs a chance to heartbeat, or the first one back would reap all the others.
        self._quiet_until = time.monotonic() + ttl_seconds

    def _snapshot(self) -> list[str]:
        args: list[str] = []
        for channel, total in self._local.counts().items():
            named = self._local.who(channel)
            for sub, n in named.items():
                args += [f"{channel} {_subkey(sub)}", str(n)]
            if total - sum(named.values()):
                args += [f"{channel} {_subkey(None)}", str(total - sum(named.values()))]
        return args

    def _sync_locked(self) -> None:
        self._sync(keys=[self._instances, self._own, self._channels],
                   args=[self.instance_id, self._subs_prefix, *self._snapshot()])
        self._dirty = False

    def _apply_locked(self, channel: str, sub: str | None, delta: int) -> tuple[int, bool]:
        """The cluster-wide connections of `sub` on `channel` after the change, and whether it was the channel's
        first arrival or last departure anywhere (after a resync: never, the snapshot holds it already)."""
        field = f"{channel} {_subkey(sub)}"
        count, edge = self._change(keys=[self._instances, self._own, self._channels],
                                   args=[self.instance_id, field, delta, self._subs_prefix])
        if count < 0:
            self._sync_locked()
            return int(self.client.hget(self._subs_prefix + channel, _subkey(sub)) or 0), False
        return int(count), edge == 1

    def add(self, sid: str, sub: str | None, channel: str, *, max_per_sid: int | None = None) -> PresenceChange:
        with self._lock:
            change = self._local.add(sid, sub, channel, max_per_sid=max_per_sid)
            try:
                with unavailable_on_outage("presence"):
                    count, edge = self._apply_locked(channel, sub, +1)
            except (HubError, redis.RedisError):
                self._local.remove(sid, channel)  # refused: leave no trace of it
                raise
        return PresenceChange(change.channel, sid, sub, True, count, edge)

    def _leave_locked(self, change: PresenceChange) -> PresenceChange:
        try:
            count, edge = self._apply_locked(change.channel, change.sub, -1)
        except OUTAGE_ERRORS as exc:
            # The connection is gone whatever Redis says; the next heartbeat that reaches Redis fixes the count.
            log.warning("presence leave not recorded in redis (will resync): %s", exc)
            self._dirty = True
            return change
        return PresenceChange(change.channel, change.sid, change.sub, False, count, edge)

    def remove(self, sid: str, channel: str) -> PresenceChange | None:
        with self._lock:
            change = self._local.remove(sid, channel)
            return None if change is None else self._leave_locked(change)

    def remove_sid(self, sid: str) -> list[PresenceChange]:
        with self._lock:
            return [self._leave_locked(change) for change in self._local.remove_sid(sid)]

    def is_subscribed(self, sid: str, channel: str) -> bool:
        return self._local.is_subscribed(sid, channel)

    def channels_of(self, sid: str) -> set[str]:
        return self._local.channels_of(sid)

    def count(self, channel: str) -> int:
        with unavailable_on_outage("presence read"):
            return sum(int(n) for n in self.client.hvals(self._subs_prefix + channel))

    def counts(self) -> dict[str, int]:
        with unavailable_on_outage("presence read"):
            channels = sorted(text(channel) for channel in self.client.smembers(self._channels))
            pipe = self.client.pipeline(transaction=False)
            for channel in channels:
                pipe.hvals(self._subs_prefix + channel)
            replies = pipe.execute()
        totals = {channel: sum(int(n) for n in values) for channel, values in zip(channels, replies, strict=True)}
        return {channel: n for channel, n in totals.items() if n > 0}

    def who(self, channel: str) -> dict[str, int]:
        with unavailable_on_outage("presence read"):
            raw = self.client.hgetall(self._subs_prefix + channel)
        subkeys = {text(key): int(n) for key, n in raw.items()}
        return {key[2:]: n for key, n in subkeys.items() if key.startswith("u:") and n > 0}

    def heartbeat(self) -> list[PresenceChange]:
        """Mark this instance alive (re-publishing its state if Redis lost it) and reap silent instances.

        Returns a leave for each named user whose last connection went with a reaped instance (sid empty:
        the connections were elsewhere), and one with `channel_edge` for each channel left with no connection.
        Raises Redis outage errors for the caller's loop to retry.
        """
        try:
            with self._lock:
                missing = self._beat(keys=[self._instances], args=[self.instance_id])
                if missing or self._dirty:
                    if missing:
                        log.info("presence: instance %s registered in redis, publishing its state", self.instance_id)
                    self._sync_locked()
            if time.monotonic() < self._quiet_until:
                return []
            reaped, gone, vacated = self._reap(keys=[self._instances, self._channels],
                                               args=[self.ttl_ms, self._inst_prefix, self._subs_prefix])
        except OUTAGE_ERRORS:
            self._quiet_until = time.monotonic() + self.ttl_ms / 1000
            raise
        for instance in reaped:
            log.info("presence: instance %s stopped heartbeating, its connections were removed", instance)
        changes = []
        unmarked = set(vacated)  # each vacated channel's edge rides on one change: a named leave, else an anonymous one
        for field in gone:
            channel, subkey = field.split(" ", 1)
            if subkey.startswith("u:"):
                changes.append(PresenceChange(channel, "", subkey[2:], False, 0, channel in unmarked))
                unmarked.discard(channel)
        changes += [PresenceChange(channel, "", None, False, 0, True) for channel in sorted(unmarked)]
        return changes
