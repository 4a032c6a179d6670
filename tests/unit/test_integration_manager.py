"""integration/manager.py: python-socketio's room bookkeeping under concurrent connects and disconnects."""

from __future__ import annotations

import sys
import threading

import pytest
import socketio

from integration.manager import MEMBERSHIP_METHODS, SerializedManager


def test_the_methods_it_wraps_still_exist():
    manager = socketio.Manager()
    assert all(callable(getattr(manager, name, None)) for name in MEMBERSHIP_METHODS)


@pytest.fixture
def tiny_switch_interval():
    """Threads switch every microsecond, so a multi-step dict update is interrupted often."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_concurrent_churn_keeps_the_books_straight(tiny_switch_interval):
    """Without the lock this raises KeyError('/') within a few thousand cycles (pre_disconnect appends to a list
    basic_disconnect of another client just deleted)."""
    server = socketio.Server(async_mode="threading", client_manager=SerializedManager())
    manager = server.manager
    keeper = manager.connect("keeper", "/")
    errors: list[str] = []

    def churn(worker: int) -> None:
        try:
            for n in range(2000):
                sid = manager.connect(f"eio-{worker}-{n}", "/")
                manager.enter_room(sid, "/", "room")
                manager.pre_disconnect(sid, "/")
                manager.disconnect(sid, "/", ignore_queue=True)
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            errors.append(repr(exc))

    threads = [threading.Thread(target=churn, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert list(manager.get_participants("/", None)) == [(keeper, "keeper")]
    assert manager.pending_disconnect == {}
