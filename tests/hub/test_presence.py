"""Presence registry: subscriptions per connection and per channel, and the join/leave edges."""

from __future__ import annotations

import threading

import pytest

from hub.errors import AlreadySubscribed, TooManySubscriptions
from hub.presence import PresenceRegistry


def test_add_counts_and_who():
    registry = PresenceRegistry()
    first = registry.add("s1", "alice", "room")
    assert first.joined and first.connections == 1 and first.announces
    second = registry.add("s2", "alice", "room")
    assert second.connections == 2 and not second.announces  # alice was already there
    registry.add("s3", "bob", "room")
    anonymous = registry.add("s4", None, "room")
    assert not anonymous.announces  # anonymous users are counted, never announced
    registry.add("s1", "alice", "other")
    assert registry.count("room") == 4
    assert registry.who("room") == {"alice": 2, "bob": 1}
    assert registry.counts() == {"room": 4, "other": 1}
    assert registry.channels_of("s1") == {"room", "other"}
    assert registry.is_subscribed("s1", "room") and not registry.is_subscribed("s3", "other")


def test_remove_reports_last_connection():
    registry = PresenceRegistry()
    registry.add("s1", "alice", "room")
    registry.add("s2", "alice", "room")
    change = registry.remove("s1", "room")
    assert change is not None and not change.joined and change.connections == 1 and not change.announces
    change = registry.remove("s2", "room")
    assert change.connections == 0 and change.announces
    assert registry.remove("s2", "room") is None
    assert registry.count("room") == 0 and registry.who("room") == {} and registry.counts() == {}
    assert registry.channels_of("s1") == set()


def test_remove_sid_drops_every_subscription():
    registry = PresenceRegistry()
    for channel in ("a", "b", "c"):
        registry.add("s1", "alice", channel)
    registry.add("s2", "bob", "a")
    changes = registry.remove_sid("s1")
    assert sorted(c.channel for c in changes) == ["a", "b", "c"]
    assert all(c.announces for c in changes)
    assert registry.counts() == {"a": 1}
    assert registry.remove_sid("s1") == []
    assert registry.remove_sid("unknown") == []


def test_duplicate_and_limit():
    registry = PresenceRegistry()
    registry.add("s1", "alice", "a", max_per_sid=2)
    with pytest.raises(AlreadySubscribed):
        registry.add("s1", "alice", "a", max_per_sid=2)
    registry.add("s1", "alice", "b", max_per_sid=2)
    with pytest.raises(TooManySubscriptions) as info:
        registry.add("s1", "alice", "c", max_per_sid=2)
    assert info.value.status == 409 and info.value.code == "too_many_subscriptions"
    assert registry.channels_of("s1") == {"a", "b"}
    registry.add("s2", "alice", "c", max_per_sid=2)  # the limit is per connection


def test_concurrent_subscribe_and_disconnect_leave_it_consistent():
    registry = PresenceRegistry()
    barrier = threading.Barrier(8)

    def churn(n: int) -> None:
        barrier.wait()
        for i in range(200):
            sid = f"s{n}-{i}"
            registry.add(sid, f"user{n % 3}", "room")
            registry.add(sid, f"user{n % 3}", f"side{i % 5}")
            if i % 2:
                registry.remove_sid(sid)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert registry.count("room") == 8 * 100
    assert sum(registry.who("room").values()) == 8 * 100
    assert sum(registry.counts().values()) == 8 * 100 * 2
