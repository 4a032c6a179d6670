"""The fan-out queue: order of items, bound checked before storing, and a worker that survives failures."""

from __future__ import annotations

import logging

import pytest

from hub.errors import Unavailable
from hub.fanout import FanoutQueue
from hub.history import MemoryHistoryStore
from tests.hub.recording_delivery import RecordingDelivery, Worker


def test_items_are_handled_in_queue_order(worker, delivery):
    store = MemoryHistoryStore()
    worker.fanout.deliver(store.append("c", "e", 1))  # nobody subscribed yet: goes nowhere
    backlog, _ = store.since("c", 0)
    worker.fanout.attach("s1", "c", backlog)
    worker.fanout.deliver(store.append("c", "e", 2))
    worker.fanout.detach("s1", "c")
    worker.fanout.deliver(store.append("c", "e", 3))
    worker.drain()
    assert delivery.offsets("s1", "c") == [1, 2]


def test_admit_enforces_the_bound(delivery):
    fanout = FanoutQueue(delivery, max_pending=3)
    store = MemoryHistoryStore()
    fanout.admit(3)
    for n in range(3):
        fanout.deliver(store.append("c", "e", n))
    with pytest.raises(Unavailable) as info:
        fanout.admit()
    assert info.value.status == 503 and info.value.retry_after == 1.0
    assert fanout.pending() == 3 and fanout.stats()["pending"] == 3
    assert fanout.readiness(0.9) == "fan-out queue 3/3"


def test_worker_survives_a_failing_send(caplog):
    class Flaky(RecordingDelivery):
        def send(self, message, sid=None, exclude=None):
            if message.data == "boom":
                raise OSError("socket went away")
            super().send(message, sid, exclude)

    delivery = Flaky()
    worker = Worker(delivery)
    store = MemoryHistoryStore()
    done = worker.fanout.attach("s1", "c", [store.append("c", "e", "boom")])
    worker.fanout.deliver(store.append("c", "e", "fine"))
    with caplog.at_level(logging.ERROR, logger="hub.fanout"):
        worker.drain()
    worker.stop()
    assert done.is_set()  # the waiting subscriber is released even though its backlog failed
    assert delivery.received["s1"] == []  # the attach failed before joining, so no live message either
    stats = worker.fanout.stats()
    assert stats["failed"] == 1 and stats["handled"] >= 2
    assert "fan-out failed for _Attach" in caplog.text


def test_stop_handles_everything_queued_before(delivery):
    fanout = FanoutQueue(delivery)
    store = MemoryHistoryStore()
    fanout.attach("s1", "c", [])
    for n in range(5):
        fanout.deliver(store.append("c", "e", n))
    fanout.stop()
    fanout.run()  # returns once it reaches the stop marker
    assert delivery.offsets("s1", "c") == [1, 2, 3, 4, 5]


def test_worker_starts_once_on_first_use_with_its_stop(delivery):
    starts = []
    fanout = FanoutQueue(delivery, start=lambda name, target, stop: starts.append((name, target, stop)))
    assert starts == [] and fanout.running is None  # building an app starts nothing
    store = MemoryHistoryStore()
    handed_over = [fanout.deliver(store.append("c", "e", n)) for n in range(3)]
    assert len(starts) == 1 and starts[0][0] == "fan-out worker"
    name, run, stop = starts[0]
    stop()  # what the drain calls on SIGTERM: the worker returns after what was queued before
    run()
    assert fanout.running is False and fanout.stats()["handled"] == 3
    assert all(event is not None and event.is_set() for event in handed_over)
    assert fanout.readiness(0.9) == "fan-out worker stopped"
    assert fanout.deliver(store.append("c", "e", 4)) is None  # nobody will hand it over: a publisher must not wait
