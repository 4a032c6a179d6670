"""Rate limits keyed by any string (a connection, an API key, an address), in bounded memory."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from hub.errors import RateLimited


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Allows `rate` operations per second per key on average, with bursts of up to `burst`.

    A key whose bucket has refilled completely is indistinguishable from a new key, so it is forgotten;
    beyond `max_keys` live keys the least recently used is dropped (it starts again with a full bucket,
    which errs on the side of letting traffic through).
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._refill_seconds = burst / rate
        # Guards _buckets, kept in least-recently-used order so idle keys are found at the front.
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _forget_idle(self, now: float) -> None:
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if now - oldest.updated < self._refill_seconds and len(self._buckets) <= self.max_keys:
                break
            self._buckets.popitem(last=False)

    def acquire(self, key: str, cost: float = 1.0) -> float:
        """Take `cost` tokens from `key`'s bucket; return 0.0 on success, else seconds until it would pass."""
        if not 0 < cost <= self.burst:
            raise ValueError("cost must be positive and at most the burst, or it could never pass")
        with self._lock:
            now = self._clock()
            bucket = self._buckets.pop(key, None)
            if bucket is None:
                bucket = _Bucket(self.burst, now)
            else:
                bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
                bucket.updated = now
            self._buckets[key] = bucket
            self._forget_idle(now)
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                return 0.0
            return (cost - bucket.tokens) / self.rate

    def check(self, key: str, cost: float = 1.0) -> None:
        """Like acquire(), but raise RateLimited (with retry_after) when the bucket is short."""
        wait = self.acquire(key, cost)
        if wait:
            raise RateLimited(retry_after=round(wait, 3))

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)


class FailureThrottle:
    """At most `failures` wrong credentials per `window` seconds from one address; then every attempt waits, the
    right credential included, so guessing is slow. Successes cost nothing (operators reload and re-login).

    `should_log` lets a caller write one line per address per window however many attempts it refuses.
    """

    def __init__(self, failures: int = 5, window: float = 60.0, max_addresses: int = 10_000,
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.window = window
        self.max_addresses = max_addresses
        self._clock = clock
        # Guards _recent (address -> times of its recent failures, least recently failing address first) and
        # _logged (address -> when a line about it was last written, oldest first).
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, deque[float]] = OrderedDict()
        self._logged: OrderedDict[str, float] = OrderedDict()

    def wait(self, address: str) -> float:
        """Seconds until `address` may try again; 0 when it may now."""
        now = self._clock()
        with self._lock:
            times = self._recent.get(address)
            if times is None:
                return 0.0
            while times and now - times[0] >= self.window:
                times.popleft()
            if not times:
                del self._recent[address]
                return 0.0
            return self.window - (now - times[0]) if len(times) >= self.failures else 0.0

    def failed(self, address: str) -> None:
        with self._lock:
            times = self._recent.pop(address, None) or deque(maxlen=self.failures)
            times.append(self._clock())
            self._recent[address] = times
            while len(self._recent) > self.max_addresses:
                self._recent.popitem(last=False)  # the least recent failures are forgotten first

    def should_log(self, address: str) -> bool:
        """True once per `window` per address: the caller writes its line then, and stays quiet otherwise."""
        now = self._clock()
        with self._lock:
            while self._logged and now - next(iter(self._logged.values())) >= self.window:
                self._logged.popitem(last=False)
            if address in self._logged:
                return False
            self._logged[address] = now
            while len(self._logged) > self.max_addresses:
                self._logged.popitem(last=False)
            return True
