"""Revoked ids (a logged-out dashboard login, a token's jti) remembered until they would have expired anyway.

One store for every instance: in memory for a single process, in Redis (REDIS_URL) so a revocation made on one
instance is refused on all of them. Keys are namespaced by their caller (`login:<id>`, `jti:<id>`).
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis

from hub.redis_client import RedisKeys, connect, unavailable_on_outage


class Revocations(Protocol):
    def revoke(self, key: str, ttl: float) -> None:
        """Refuse `key` from now on, for `ttl` seconds (past it the thing revoked has expired by itself)."""

    def is_revoked(self, key: str) -> bool:
        """True while `key` is revoked; raises hub.errors.Unavailable when the store cannot say."""


class MemoryRevocations:
    """This process only: enough for one instance, lost on restart (a login does not survive one either, unless
    SECRET_KEY is fixed: then the revocation of a login made before the restart is forgotten; see README)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Guards _until (key -> when its revocation lapses) and _expiry (the same as a heap, soonest first).
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []

    def _forget_lapsed(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            until, key = heapq.heappop(self._expiry)
            if self._until.get(key) == until:
                del self._until[key]

    def revoke(self, key: str, ttl: float) -> None:
        now = self._clock()
        with self._lock:
            self._forget_lapsed(now)
            until = max(self._until.get(key, 0.0), now + ttl)
            self._until[key] = until
            heapq.heappush(self._expiry, (until, key))

    def is_revoked(self, key: str) -> bool:
        now = self._clock()
        with self._lock:
            self._forget_lapsed(now)
            return key in self._until

    def __len__(self) -> int:
        with self._lock:
            self._forget_lapsed(self._clock())
            return len(self._until)


class RedisRevocations:
    """One key per revocation with the revocation's lifetime as its TTL, so Redis forgets it by itself."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys

    def revoke(self, key: str, ttl: float) -> None:
        with unavailable_on_outage("revocation"):
            self._client.set(self._keys.revoked(key), "1", ex=max(1, math.ceil(ttl)))

    def is_revoked(self, key: str) -> bool:
        with unavailable_on_outage("revocation check"):
            return bool(self._client.exists(self._keys.revoked(key)))


def revocations_for(redis_url: str, key_prefix: str) -> Revocations:
    """The store this deployment uses: Redis when REDIS_URL is set, this process's memory otherwise."""
    if redis_url:
        return RedisRevocations(connect(redis_url), RedisKeys(key_prefix))
    return MemoryRevocations()
