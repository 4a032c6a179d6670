"""Who is subscribed where: connections (sids) per channel with the user (`sub`) behind each."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from hub.errors import AlreadySubscribed, TooManySubscriptions

# Which presence events a listener gets: named users' joins and leaves (`subs`), or the same with `sub` left out
# (`anonymous`: someone joined or left), the default for anonymous listeners (ANONYMOUS_PRESENCE_SUBS).
PRESENCE_SUBS = "subs"
PRESENCE_ANONYMOUS = "anonymous"
PresenceView = str  # PRESENCE_SUBS or PRESENCE_ANONYMOUS


@dataclass(frozen=True)
class PresenceChange:
    """One subscription added (`joined`) or removed; `connections` is how many the same `sub` holds there now.

    `sub` is None for anonymous connections, which are counted but never named. `channel_edge` is True when the
    change took the channel from no connection at all to one (joined), or from one to none (left): occupied/vacated.
    """

    channel: str
    sid: str
    sub: str | None
    joined: bool
    connections: int
    channel_edge: bool = False

    @property
    def announces(self) -> bool:
        """True when a named user just arrived (first connection) or just left (last connection)."""
        return self.sub is not None and self.connections == (1 if self.joined else 0)


class Presence(Protocol):
    """Who is subscribed where: PresenceRegistry in one process, hub.redis_presence.RedisPresenceRegistry with Redis
    (per-connection answers from this process, channel-wide ones across every instance)."""

    def add(self, sid: str, sub: str | None, channel: str, *, max_per_sid: int | None = None) -> PresenceChange:
        """Record that `sid` (held by `sub`) subscribed to `channel`.

        Raises AlreadySubscribed, or TooManySubscriptions when `sid` already holds `max_per_sid` channels.
        """
        ...

    def remove(self, sid: str, channel: str) -> PresenceChange | None:
        """Forget one subscription; None if `sid` was not subscribed to `channel`."""
        ...

    def remove_sid(self, sid: str) -> list[PresenceChange]:
        """Forget every subscription of a connection (on disconnect)."""
        ...

    def is_subscribed(self, sid: str, channel: str) -> bool: ...

    def channels_of(self, sid: str) -> set[str]: ...

    def count(self, channel: str) -> int:
        """Connections subscribed to `channel`, anonymous ones included."""
        ...

    def counts(self) -> dict[str, int]:
        """Connections per channel, for every channel with at least one."""
        ...

    def who(self, channel: str) -> dict[str, int]:
        """Named users subscribed to `channel` and how many connections each holds there."""
        ...


class PresenceRegistry:
    """Presence in this process's memory (also the per-connection half of the Redis version)."""

    def __init__(self) -> None:
        # Guards the three maps, which must always describe the same subscriptions.
        self._lock = threading.Lock()
        self._by_channel: dict[str, dict[str, str | None]] = {}
        # Connections per sub per channel, kept alongside so presence checks stay O(1) in busy channels.
        self._subs: dict[str, Counter[str | None]] = {}
        self._by_sid: dict[str, set[str]] = {}

    def add(self, sid: str, sub: str | None, channel: str, *, max_per_sid: int | None = None) -> PresenceChange:
        """Record that `sid` (held by `sub`) subscribed to `channel`.

        Raises AlreadySubscribed, or TooManySubscriptions when `sid` already holds `max_per_sid` channels.
        """
        with self._lock:
            mine = self._by_sid.get(sid, set())
            if channel in mine:
                raise AlreadySubscribed(f"already subscribed to {channel}")
            if max_per_sid is not None and len(mine) >= max_per_sid:
                raise TooManySubscriptions(f"at most {max_per_sid} subscriptions per connection")
            self._by_sid.setdefault(sid, set()).add(channel)
            occupied = channel not in self._by_channel
            self._by_channel.setdefault(channel, {})[sid] = sub
            subs = self._subs.setdefault(channel, Counter())
            subs[sub] += 1
            return PresenceChange(channel, sid, sub, True, subs[sub], occupied)

    def _remove_locked(self, sid: str, channel: str) -> PresenceChange | None:
        members = self._by_channel.get(channel)
        if members is None or sid not in members:
            return None
        sub = members.pop(sid)
        subs = self._subs[channel]
        subs[sub] -= 1
        left = subs[sub]
        if not left:
            del subs[sub]
        if not members:
            del self._by_channel[channel]
            del self._subs[channel]
        channels = self._by_sid[sid]
        channels.discard(channel)
        if not channels:
            del self._by_sid[sid]
        return PresenceChange(channel, sid, sub, False, left, not members)

    def remove(self, sid: str, channel: str) -> PresenceChange | None:
        """Forget one subscription; None if `sid` was not subscribed to `channel`."""
        with self._lock:
            return self._remove_locked(sid, channel)

    def remove_sid(self, sid: str) -> list[PresenceChange]:
        """Forget every subscription of a connection (on disconnect)."""
        with self._lock:
            changes = [self._remove_locked(sid, channel) for channel in sorted(self._by_sid.get(sid, ()))]
            return [c for c in changes if c is not None]

    def is_subscribed(self, sid: str, channel: str) -> bool:
        with self._lock:
            return channel in self._by_sid.get(sid, ())

    def channels_of(self, sid: str) -> set[str]:
        with self._lock:
            return set(self._by_sid.get(sid, ()))

    def count(self, channel: str) -> int:
        """Connections subscribed to `channel`, anonymous ones included."""
        with self._lock:
            return len(self._by_channel.get(channel, {}))

    def counts(self) -> dict[str, int]:
        """Connections per channel, for every channel with at least one."""
        with self._lock:
            return {channel: len(members) for channel, members in self._by_channel.items()}

    def who(self, channel: str) -> dict[str, int]:
        """Named users subscribed to `channel` and how many connections each holds there."""
        with self._lock:
            return {sub: n for sub, n in self._subs.get(channel, {}).items() if sub is not None}
