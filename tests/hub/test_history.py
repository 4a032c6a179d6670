"""Memory history: offsets, ids, eviction by size and age, and what `since` reports as complete."""

from __future__ import annotations

import threading

import pytest

from hub.history import MemoryHistoryStore, Message


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def offsets(messages: list[Message]) -> list[int]:
    return [m.offset for m in messages]


def test_append_numbers_per_channel_from_one():
    clock = Clock()
    store = MemoryHistoryStore(clock=clock)
    a1 = store.append("a", "e", {"n": 1})
    a2 = store.append("a", "e", {"n": 2})
    b1 = store.append("b", "e", None)
    assert (a1.offset, a2.offset, b1.offset) == (1, 2, 1)
    assert a1.ts == 1_000_000
    assert a1.data == {"n": 1} and a1.event == "e" and a1.channel == "a"
    assert len({a1.id, a2.id, b1.id}) == 3
    assert a1.meta() == {"channel": "a", "offset": 1, "id": a1.id, "ts": 1_000_000}
    assert store.latest("a") == 2 and store.latest("b") == 1 and store.latest("none") == 0
    assert store.channels() == ["a", "b"]


def test_message_is_immutable():
    message = MemoryHistoryStore().append("a", "e", 1)
    with pytest.raises(AttributeError):
        message.offset = 5


def test_concurrent_appends_get_contiguous_unique_offsets():
    store = MemoryHistoryStore(max_messages=10_000)
    threads_count, per_thread = 8, 250
    results: list[list[Message]] = [[] for _ in range(threads_count)]
    start = threading.Barrier(threads_count)

    def publish(slot: int) -> None:
        start.wait()
        for i in range(per_thread):
            results[slot].append(store.append("hot", "e", {"slot": slot, "i": i}))

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    total = threads_count * per_thread
    all_offsets = sorted(m.offset for slot in results for m in slot)
    assert all_offsets == list(range(1, total + 1))
    assert len({m.id for slot in results for m in slot}) == total
    for slot in results:  # each publisher sees its own messages in increasing order
        assert offsets(slot) == sorted(offsets(slot))
    held, complete = store.since("hot", 0)
    assert complete and offsets(held) == list(range(1, total + 1))


def test_since_returns_messages_after_offset_in_order():
    store = MemoryHistoryStore()
    for n in range(5):
        store.append("a", "e", n)
    messages, complete = store.since("a", 2)
    assert complete and offsets(messages) == [3, 4, 5]
    assert [m.data for m in messages] == [2, 3, 4]
    messages, complete = store.since("a", 2, limit=2)
    assert complete and offsets(messages) == [3, 4]
    assert store.since("a", 5) == ([], True)


def test_eviction_by_size_makes_old_offsets_incomplete():
    store = MemoryHistoryStore(max_messages=3)
    for n in range(6):
        store.append("a", "e", n)
    assert store.latest("a") == 6
    messages, complete = store.since("a", 3)  # 4, 5, 6 are held: nothing missing
    assert complete and offsets(messages) == [4, 5, 6]
    messages, complete = store.since("a", 2)  # 3 was evicted
    assert not complete and offsets(messages) == [4, 5, 6]
    assert store.since("a", 0)[1] is False


def test_eviction_by_age_uses_the_clock():
    clock = Clock()
    store = MemoryHistoryStore(max_age_seconds=10, clock=clock)
    store.append("a", "e", 1)
    clock.now += 5
    store.append("a", "e", 2)
    clock.now += 5  # message 1 is now exactly 10 s old: expired
    messages, complete = store.since("a", 0)
    assert offsets(messages) == [2] and not complete
    assert store.since("a", 1) == (messages, True)
    clock.now += 5
    assert store.since("a", 1) == ([], False)
    assert store.channels() == []
    assert store.latest("a") == 2  # offsets never restart
    assert store.append("a", "e", 3).offset == 3


def test_offset_beyond_latest_is_stale_state():
    """A client holding an offset this store never issued (e.g. from before a restart) must resync."""
    store = MemoryHistoryStore()
    store.append("a", "e", 1)
    assert store.since("a", 7) == ([], False)
    assert store.since("never", 3) == ([], False)
    assert store.since("never", 0) == ([], True)


def test_epoch_differs_between_stores():
    assert MemoryHistoryStore().epoch != MemoryHistoryStore().epoch


@pytest.mark.parametrize("kwargs", [{"max_messages": 0}, {"max_age_seconds": 0}])
def test_bounds_validated(kwargs):
    with pytest.raises(ValueError):
        MemoryHistoryStore(**kwargs)


def test_channels_whose_messages_aged_out_are_forgotten():
    """Before: a channel's entry outlived its messages, so 100k channels used once kept ~90 MiB for good."""
    clock = Clock()
    store = MemoryHistoryStore(max_age_seconds=10, clock=clock)
    for n in range(100):
        store.append(f"once.{n}", "e", n)
    store.append("once.7", "e", "again")
    clock.now += 10
    assert store.channels() == [] and len(store._logs) == 0  # white-box: the entries themselves are gone


def test_a_forgotten_channel_never_reuses_an_offset():
    clock = Clock()
    store = MemoryHistoryStore(max_age_seconds=10, clock=clock)
    for _ in range(3):
        store.append("a", "e", None)
    clock.now += 10
    store.channels()  # forgets "a"
    assert store.latest("a") == 3  # numbering resumes from the highest forgotten offset
    assert store.since("a", 3) == ([], True)  # up to date before it was forgotten: nothing missed
    assert store.since("a", 1) == ([], False)  # messages 2 and 3 aged out unseen
    again = store.append("a", "e", "new")
    assert again.offset == 4
    assert store.since("a", 3) == ([again], True)
    assert store.append("fresh", "e", None).offset == 4  # every channel created after counts on from there


def test_a_channel_in_use_keeps_its_numbering():
    clock = Clock()
    subscribed = {"busy"}
    store = MemoryHistoryStore(max_age_seconds=10, in_use=lambda channel: channel in subscribed, clock=clock)
    store.append("busy", "e", None)
    store.append("idle", "e", None)
    clock.now += 10
    for n in range(20):  # each append looks at a few idle channels
        store.append(f"other.{n}", "e", None)
    assert "busy" in store._logs and "idle" not in store._logs
    assert store.append("busy", "e", None).offset == 2
