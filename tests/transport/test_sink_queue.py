"""SinkQueue: Engine.IO's outgoing queue until attached, then a straight line to the connection, in order."""

from __future__ import annotations

import queue
import threading

from integration.shared_sockets import SinkQueue


class ListSink:
    def __init__(self) -> None:
        self.items: list = []
        self.lock = threading.Lock()

    def deliver(self, item) -> None:
        with self.lock:
            self.items.append(item)


def test_behaves_as_a_queue_until_attached():
    q = SinkQueue()
    q.put("a")
    assert q.get(timeout=1) == "a"
    q.task_done()
    q.join()


def test_attach_keeps_order_across_the_switch_under_concurrent_puts():
    old = queue.Queue()
    for i in range(3):
        old.put(("early", i))
    q = SinkQueue.taking_over(old)
    sink = ListSink()
    halfway = threading.Event()

    def producer() -> None:
        for n in range(5000):
            q.put(("live", n))
            if n == 2500:
                halfway.set()

    thread = threading.Thread(target=producer)
    thread.start()
    assert halfway.wait(10)
    q.attach(sink)  # while the producer is still putting
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert sink.items[:3] == [("early", 0), ("early", 1), ("early", 2)]
    assert [n for kind, n in sink.items[3:]] == list(range(5000))  # nothing lost, nothing reordered
    assert q.empty()


def test_close_with_wait_does_not_hang_once_attached():
    q = SinkQueue()
    q.put("pending")
    sink = ListSink()
    q.attach(sink)
    q.put(None)  # Engine.IO's "close" marker goes to the sink too
    finished = threading.Event()
    threading.Thread(target=lambda: (q.join(), finished.set()), daemon=True).start()
    assert finished.wait(2), "queue.join() blocked: Socket.close(wait=True) would hang"
    assert sink.items == ["pending", None]


def test_an_unbounded_queue_shares_one_condition_for_not_full_and_still_wakes_its_getter():
    q = SinkQueue()
    assert q.not_full is q.not_empty and q.all_tasks_done is not q.not_empty
    got: list = []
    getter = threading.Thread(target=lambda: got.append(q.get(timeout=10)))
    getter.start()
    q.put("a")  # the getter is woken by put's not_empty.notify()
    getter.join(timeout=10)
    assert got == ["a"]
    q.task_done()
    q.join()
    bounded = SinkQueue(maxsize=1)
    assert bounded.not_full is not bounded.not_empty  # a bounded queue's put waits on not_full: its own Condition


def test_detach_drops_later_packets_and_leaves_no_cycle_through_the_queue():
    import gc
    import weakref

    from integration.bounded_sockets import SlowConsumerDrop

    class Session:  # the socket -> queue -> sink -> socket shape of a shared-loop session
        def __init__(self) -> None:
            self.queue = SinkQueue()
            sink = ListSink()
            sink.socket = self  # type: ignore[attr-defined]
            self.queue.bound(1000, SlowConsumerDrop(self, 1000))
            self.queue.attach(sink)  # type: ignore[arg-type]

    gc.collect()
    gc.disable()
    try:
        session = Session()
        q = session.queue
        sink = q.sink
        q.put("before")
        q.detach()
        q.put("after")  # dropped: the session is over
        assert sink.items == ["before"] and q.on_slow is None and q.empty()
        alive = weakref.ref(session)
        del session, sink, q
        assert alive() is None  # freed by refcounting alone, with the collector off
    finally:
        gc.enable()
