"""utils/admission.py: the thread budget, refusals, and long-polls cut short when threads run out."""

from __future__ import annotations

import json
import threading
import time

from engineio import packet as eio_packet

from utils.admission import Admission, LongPollCap, ThreadBudget


class FakeSocket:
    def __init__(self, upgraded=False):
        self.closed, self.upgraded = False, upgraded
        self.sent: list[eio_packet.Packet] = []

    def send(self, pkt):
        self.sent.append(pkt)


class FakeEngineIO:
    """Stands in for python-engineio's server: admission reads `sockets` and starts one background task."""

    def __init__(self, sockets=None):
        self.sockets = sockets or {}

    def start_task(self, name, target, stop):
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        return thread


def test_budget_counts_held_threads_by_kind():
    budget = ThreadBudget(threads=10, reserve=3)
    engine = FakeEngineIO({"a": FakeSocket(upgraded=True), "b": FakeSocket()})
    with budget.hold("websocket"), budget.hold("long_poll"), budget.hold("http"):
        report = budget.report(engine)
        assert (report["held_websocket"], report["held_long_poll"], report["busy_http"]) == (1, 1, 1)
        assert report["free_threads"] == 7
    assert budget.report(engine) | {} == {
        "threads": 10, "reserved": 3, "held_websocket": 0, "held_long_poll": 0, "busy_http": 0, "free_threads": 10,
        "capacity": 7, "sessions": 2, "free": 5,
    }


def test_refuses_when_sessions_fill_capacity_or_while_draining():
    engine = FakeEngineIO({str(i): FakeSocket() for i in range(6)})
    draining = threading.Event()
    admission = Admission(ThreadBudget(10, 3), engine, draining.is_set, long_poll_cap_seconds=5,
                          start_task=engine.start_task)
    assert admission.refusal_reason() is None and admission.capacity_check() is None
    engine.sockets["7"] = FakeSocket()
    assert admission.refusal_reason() == "capacity"
    assert admission.capacity_check() == "no free Socket.IO capacity"  # no figures: the reason is public
    del engine.sockets["7"]
    draining.set()
    assert admission.refusal_reason() == "draining"


def test_refusal_is_a_503_with_retry_after():
    captured = {}
    body = b"".join(Admission.refuse("capacity", lambda status, headers: captured.update(s=status, h=dict(headers))))
    assert captured["s"].startswith("503")
    assert 1 <= int(captured["h"]["Retry-After"]) <= 5
    assert json.loads(body)["reason"] == "capacity"


def _wait_for(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.02)
    return predicate()


def test_long_polls_are_cut_short_only_when_tight():
    socket = FakeSocket()
    budget = ThreadBudget(threads=4, reserve=2)
    engine = FakeEngineIO({"sid": socket})
    cap = LongPollCap(budget, engine, cap_seconds=0.1, start_task=engine.start_task, interval=0.02)
    try:
        with cap.track("sid"):
            time.sleep(0.3)
            assert socket.sent == []  # plenty of threads free: the poll may wait for its ping
            with budget.hold("websocket"), budget.hold("websocket"), budget.hold("long_poll"):
                assert _wait_for(lambda: len(socket.sent) == 1)
                assert socket.sent[0].packet_type == eio_packet.NOOP
                time.sleep(0.2)
                assert len(socket.sent) == 1  # one no-op per poll
    finally:
        cap.stop()
