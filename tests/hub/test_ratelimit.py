"""Token-bucket limiter with an injected clock."""

from __future__ import annotations

import pytest

from hub.errors import RateLimited
from hub.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill():
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("k") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.acquire("k") == 0.0
    assert limiter.acquire("k") > 0


def test_keys_are_independent():
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=1, clock=clock)
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    assert limiter.acquire("b") == 0.0


def test_check_raises_with_retry_after():
    clock = Clock()
    limiter = RateLimiter(rate=4, burst=1, clock=clock)
    limiter.check("k")
    with pytest.raises(RateLimited) as info:
        limiter.check("k")
    assert info.value.status == 429
    assert info.value.to_dict() == {"code": "rate_limited", "message": "rate limit exceeded", "retry_after": 0.25}


def test_refill_caps_at_burst():
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=2, clock=clock)
    limiter.acquire("k")
    clock.now += 3600
    assert [limiter.acquire("k") == 0.0 for _ in range(3)] == [True, True, False]


def test_idle_keys_are_forgotten():
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=2, clock=clock)
    for n in range(50):
        limiter.acquire(f"k{n}")
    assert len(limiter) == 50
    clock.now += 2  # every bucket has refilled: they carry no state worth keeping
    limiter.acquire("fresh")
    assert len(limiter) == 1


def test_max_keys_bounds_memory():
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=1, max_keys=10, clock=clock)
    for n in range(100):
        limiter.acquire(f"k{n}")
        assert len(limiter) <= 10
    assert limiter.acquire("k99") > 0  # recent keys keep their state


@pytest.mark.parametrize(
    "kwargs", [{"rate": 0, "burst": 1}, {"rate": 1, "burst": 0.5}, {"rate": 1, "burst": 1, "max_keys": 0}]
)
def test_arguments_validated(kwargs):
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)


def test_cost_above_burst_refused():
    with pytest.raises(ValueError):
        RateLimiter(rate=1, burst=2).acquire("k", cost=3)
