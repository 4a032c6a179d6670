"""Revoked ids (a logged-out dashboard login, a token, every token of a user, a user's channel) remembered only until
they would have expired anyway.

One store for every instance: in memory for a single process, in Redis (REDIS_URL) so a revocation made on one
instance is refused on all of them. Keys are namespaced by their caller (`login:<id>`, `jti:<id>`, `sub:<sub>`,
`channel:<sub> <channel>`). Each entry remembers when it was revoked, so "every token of this sub issued until now"
is one entry: a token is revoked when its `iat` is at or before that time. Entries lapse after the TTL they were
given (for tokens, TOKEN_MAX_TTL: the longest a token lives), so the store never grows without bound.

Token `iat` has one-second resolution, so a token minted in the same second as a revocation of its sub is revoked
with it (the safe side of the tie).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import redis

from hub.redis_client import RedisKeys, connect, unavailable_on_outage


class Revocations(Protocol):
    def revoke(self, key: str, ttl: float) -> float:
        """Refuse `key` (as of now) for `ttl` seconds; returns the revocation time (epoch seconds).

        Revoking again keeps the later time and the later lapse. Raises hub.errors.Unavailable when the store
        cannot be written.
        """
        ...

    def is_revoked(self, key: str) -> bool:
        """True while `key` is revoked; raises hub.errors.Unavailable when the store cannot say."""
        ...

    def revoked_at(self, keys: Sequence[str]) -> list[float | None]:
        """For each key, when it was revoked (epoch seconds), None if it is not; one round trip."""
        ...


def sub_key(sub: str) -> str:
    return f"sub:{sub}"


def jti_key(jti: str) -> str:
    return f"jti:{jti}"


def channel_key(sub: str, channel: str) -> str:
    return f"channel:{sub} {channel}"  # a channel name holds no space, so this cannot collide


def token_revoked(store: Revocations, sub: str, jti: str | None, iat: int) -> bool:
    """Is the token (`sub`, `jti`, issued at `iat`) revoked, by its sub or by its own id? One store round trip."""
    by_sub, by_jti = store.revoked_at([sub_key(sub), jti_key(jti or "")])
    return revoked_by(by_sub, by_jti, jti, iat)


def revoked_by(by_sub: float | None, by_jti: float | None, jti: str | None, iat: int) -> bool:
    """The verdict for one token from its two entries (see token_revoked)."""
    return (by_sub is not None and iat <= by_sub) or (jti is not None and by_jti is not None)


def channel_revoked(store: Revocations, sub: str, channel: str, iat: int) -> bool:
    """Was `channel` taken from `sub` after the token issued at `iat` granted it?"""
    (at,) = store.revoked_at([channel_key(sub, channel)])
    return at is not None and iat <= at


class MemoryRevocations:
    """This process only: enough for one instance, lost on restart (a login does not survive one either, unless
    SECRET_KEY is fixed: then the revocation of a login made before the restart is forgotten; see README)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self._clock = clock  # for lapsing
        self._wall = wall  # for the revocation time, compared with token iat
        # Guards _until (key -> when its revocation lapses), _at (key -> when it was revoked) and _expiry (the
        # lapses as a heap, soonest first).
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}
        self._at: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []

    def _forget_lapsed(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            until, key = heapq.heappop(self._expiry)
            if self._until.get(key) == until:
                del self._until[key]
                del self._at[key]

    def revoke(self, key: str, ttl: float) -> float:
        now = self._clock()
        with self._lock:
            self._forget_lapsed(now)
            until = max(self._until.get(key, 0.0), now + ttl)
            at = max(self._at.get(key, 0.0), self._wall())
            self._until[key], self._at[key] = until, at
            heapq.heappush(self._expiry, (until, key))
        return at

    def is_revoked(self, key: str) -> bool:
        return self.revoked_at([key])[0] is not None

    def revoked_at(self, keys: Sequence[str]) -> list[float | None]:
        now = self._clock()
        with self._lock:
            self._forget_lapsed(now)
            return [self._at.get(key) for key in keys]

    def __len__(self) -> int:
        with self._lock:
            self._forget_lapsed(self._clock())
            return len(self._until)


# KEYS: the entry. ARGV: revocation time (ms), ttl (ms). Keeps the later time and the later lapse.
_REVOKE = """
local at = tonumber(ARGV[1])
local old = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local ttl = tonumber(ARGV[2])
local left = redis.call('PTTL', KEYS[1])
if old > at then at = old end
if left > ttl then ttl = left end
redis.call('SET', KEYS[1], string.format('%d', at), 'PX', ttl)
return string.format('%d', at)
"""


class RedisRevocations:
    """One key per revocation, `<prefix>:revoked:<key>`, holding its time (ms) with the revocation's lifetime as
    its TTL, so Redis forgets it by itself."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, wall: Callable[[], float] = time.time) -> None:
        self._client = client
        self._keys = keys
        self._wall = wall
        self._revoke = client.register_script(_REVOKE)

    def revoke(self, key: str, ttl: float) -> float:
        with unavailable_on_outage("revocation"):
            at = self._revoke(keys=[self._keys.revoked(key)], args=[int(self._wall() * 1000), max(1, int(ttl * 1000))])
        return int(at) / 1000

    def is_revoked(self, key: str) -> bool:
        with unavailable_on_outage("revocation check"):
            return bool(self._client.exists(self._keys.revoked(key)))

    def revoked_at(self, keys: Sequence[str]) -> list[float | None]:
        if not keys:
            return []
        with unavailable_on_outage("revocation check"):
            values = self._client.mget([self._keys.revoked(key) for key in keys])
        return [None if value is None else int(value) / 1000 for value in values]


def revocations_for(redis_url: str, key_prefix: str) -> Revocations:
    """The store this deployment uses: Redis when REDIS_URL is set, this process's memory otherwise."""
    if redis_url:
        return RedisRevocations(connect(redis_url), RedisKeys(key_prefix))
    return MemoryRevocations()
