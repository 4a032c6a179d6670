"""utils/admission.py with the shared transport: websockets hold no thread, so only polling sessions count against
the threads, and websockets have their own cap (MAX_WEBSOCKET_CLIENTS)."""

from __future__ import annotations

from utils.admission import Admission, ThreadBudget


class Session:
    def __init__(self, upgraded: bool) -> None:
        self.closed, self.upgraded = False, upgraded


class Engine:
    def __init__(self, websockets: int, polling: int) -> None:
        self.sockets = {f"w{i}": Session(True) for i in range(websockets)}
        self.sockets |= {f"p{i}": Session(False) for i in range(polling)}


def admission(engine: Engine, websocket_limit: int | None) -> Admission:
    return Admission(ThreadBudget(10, 3, websocket_limit), engine, lambda: False, long_poll_cap_seconds=5,
                     start_task=lambda name, target, stop: None)


def test_websockets_do_not_use_up_the_threads():
    engine = Engine(websockets=50, polling=2)
    report = admission(engine, websocket_limit=100).budget.report(engine)
    assert (report["sessions"], report["free"]) == (2, 5)
    assert (report["websockets"], report["websocket_capacity"], report["websocket_free"]) == (50, 100, 50)
    assert admission(engine, 100).refusal_reason() is None
    assert admission(engine, 100).refusal_reason(websocket=True) is None


def test_full_threads_refuse_polling_but_not_websockets():
    engine = Engine(websockets=0, polling=7)
    shared = admission(engine, websocket_limit=100)
    assert shared.refusal_reason() == "capacity"
    assert shared.refusal_reason(websocket=True) is None
    assert shared.capacity_check() == "no free Socket.IO capacity"


def test_the_websocket_cap_refuses_every_new_session():
    engine = Engine(websockets=5, polling=0)
    shared = admission(engine, websocket_limit=5)
    assert shared.refusal_reason(websocket=True) == "capacity"
    assert shared.refusal_reason() == "capacity"  # a polling client would upgrade a moment later
    assert shared.capacity_check() == "no free websocket capacity"


def test_threaded_transport_counts_websockets_against_threads_as_before():
    engine = Engine(websockets=7, polling=0)
    threaded = admission(engine, websocket_limit=None)
    assert threaded.refusal_reason(websocket=True) == "capacity"
    assert "websocket_free" not in threaded.budget.report(engine)
