"""transport/send_bound.py: the slow-consumer rule and the bounded Engine.IO queue, without a server."""

from __future__ import annotations

import queue

from engineio import packet as eio_packet

from integration.bounded_sockets import BoundedSendQueue
from transport import send_bound
from transport.send_bound import HARD_LIMIT, Backlog


def message(size: int) -> eio_packet.Packet:
    return eio_packet.Packet(eio_packet.MESSAGE, data="m" * size)


def test_backlog_allows_a_burst_then_drops_a_client_that_stays_over(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(send_bound.time, "monotonic", lambda: clock[0])
    backlog = Backlog(1000)
    assert not backlog.too_slow(1000)
    assert not backlog.too_slow(3000)  # over: the grace clock starts
    clock[0] += send_bound.SLOW_CONSUMER_GRACE - 0.1
    assert not backlog.too_slow(2000)
    backlog.drained_to(500)  # caught up: the clock is reset
    assert not backlog.too_slow(2000)
    clock[0] += send_bound.SLOW_CONSUMER_GRACE + 0.1
    assert backlog.too_slow(2000)


def test_backlog_far_over_the_bound_drops_at_once():
    backlog = Backlog(1000)
    assert not backlog.too_slow(HARD_LIMIT * 1000)
    assert backlog.too_slow(HARD_LIMIT * 1000 + 1)


def test_queue_counts_bytes_and_reports_a_slow_consumer_once():
    reports: list[int] = []
    q = BoundedSendQueue.taking_over(queue.Queue())
    q.bound(1000, reports.append)
    for _ in range(3):
        q.put(message(1000))
    assert q.qsize() == 3 and q.bytes == 3003 and reports == []
    q.put(message(1000))  # 4004 bytes: past the hard limit
    assert reports == [4004]
    q.put(message(1000))  # dropped: nothing more is kept once the session is being ended
    q.put(None)  # but the close marker still wakes the writer
    assert q.qsize() == 5 and reports == [4004]
    got = [q.get() for _ in range(5)]
    assert got[-1] is None and q.bytes == 0


def test_taking_over_keeps_order_and_counts_what_was_queued():
    old: queue.Queue = queue.Queue()
    first, second = message(10), message(20)
    old.put(first)
    old.put(second)
    q = BoundedSendQueue.taking_over(old)
    assert q.bytes == 32 and q.get() is first and q.get() is second and q.bytes == 0


def test_bound_socket_drops_a_slow_consumer_through_one_slotted_call_not_a_closure():
    from integration.bounded_sockets import SlowConsumerDrop, bound_socket, drop_slow_consumer

    started: list[tuple] = []

    class Server:
        def start_background_task(self, target, *args):
            started.append((target, *args))

    class Sock:
        server = Server()
        queue = BoundedSendQueue()

    sock = Sock()
    bound_socket(sock, BoundedSendQueue, 1000)
    assert isinstance(sock.queue.on_slow, SlowConsumerDrop) and not hasattr(sock.queue.on_slow, "__dict__")
    sock.queue.put(message(HARD_LIMIT * 1000 + 10))  # far over the bound: dropped at once
    assert started == [(drop_slow_consumer, sock, sock.queue.bytes, 1000)]
