"""utils/drain.py in process, on the real app's Socket.IO server with no sessions: timing, flags, stop callbacks.
The drain of real clients under gunicorn is tests/integration/test_drain.py."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from extensions import socketio
from utils.drain import STOP_ORDER, BackgroundTasks, Drain
from utils.metrics import DRAINED_SESSIONS
from utils.readiness import Readiness


def make_drain(graceful_timeout: float = 20, notice: float = 0.0) -> Drain:
    return Drain(socketio.server, Readiness(), BackgroundTasks(socketio.start_background_task),
                 graceful_timeout=graceful_timeout, batch_size=10, notice=notice)


@pytest.mark.parametrize("graceful_timeout, notice, budget, kept_notice", [
    (20, 2, 17, 2), (5, 2, 2, 2), (5, 4, 2, 2), (3, 2, 0, 0), (1, 0, 0, 0),
])
def test_drain_fits_in_the_graceful_timeout(app, graceful_timeout, notice, budget, kept_notice):
    drain = make_drain(graceful_timeout, notice)
    assert (drain.budget, drain.notice) == (budget, kept_notice)


def test_the_app_has_a_drain_from_config(app):
    drain = app.extensions["drain"]
    assert drain.readiness is app.extensions["readiness"]
    assert drain.batch_size == app.config["DRAIN_BATCH_SIZE"]


def test_request_turns_unready_at_once_and_only_once(app):
    drain = make_drain()
    assert drain.request() is True
    assert drain.readiness.draining
    assert drain.request() is False


def test_run_calls_every_stop_callback_even_after_one_fails(app, caplog):
    drain = make_drain(notice=0.3)
    called: list[str] = []
    drain.add_stop_callback("first", lambda: called.append("first"))
    drain.add_stop_callback("broken", lambda: 1 / 0)
    drain.add_stop_callback("last", lambda: called.append("last"))
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="utils.drain"):
        drain.run()
    assert called == ["first", "last"]
    assert time.monotonic() - started >= 0.3  # the notice period is kept even with nobody to drain
    assert drain.finished.is_set() and drain.readiness.draining
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["stop callback broken failed during shutdown"]
    assert "0 sessions drained" in caplog.text


def test_armed_drain_stops_listening_when_the_notice_ends_and_hands_back_after(app):
    drain = make_drain(notice=0.4)
    handed_back = threading.Event()
    stopped_listening: list[float] = []
    drain.arm(then=handed_back.set, stop_listening=lambda: stopped_listening.append(time.monotonic()))
    time.sleep(0.1)
    assert not handed_back.is_set() and stopped_listening == []  # nothing happens before SIGTERM
    requested = time.monotonic()
    drain.request()
    assert handed_back.wait(5)
    assert drain.finished.is_set()
    assert len(stopped_listening) == 1 and stopped_listening[0] - requested >= 0.4


def slow_drain(monkeypatch, graceful_timeout: float, sessions: int, ask_seconds: float) -> tuple[Drain, list]:
    """A drain of `sessions` fake sessions in batches of one, each ask taking `ask_seconds`; the list gets
    (sid, began, ended) per ask. A session is open until asked. `drain.hints` gets (sid, time) per hint."""
    drain = Drain(socketio.server, Readiness(), BackgroundTasks(socketio.start_background_task),
                  graceful_timeout=graceful_timeout, batch_size=1, notice=0)
    asked: list[tuple[str, float, float]] = []

    def slow_ask(eio_sid: str) -> None:
        began = time.monotonic()
        time.sleep(ask_seconds)
        asked.append((eio_sid, began, time.monotonic()))

    sids = [f"sid{n}" for n in range(sessions)]
    monkeypatch.setattr(drain, "_open_sessions", lambda: list(sids))
    monkeypatch.setattr(drain, "_ask_to_leave", slow_ask)
    hints: list[tuple[str, float]] = []
    monkeypatch.setattr(drain, "_hint", lambda eio_sid: hints.append((eio_sid, time.monotonic())))
    drain.hints = hints  # type: ignore[attr-defined]
    monkeypatch.setattr(drain, "_still_open", lambda wanted: [s for s in wanted if s not in {a[0] for a in asked}])
    return drain, asked


def test_batches_keep_their_schedule_without_waiting_on_top_of_slow_ones(app, monkeypatch):
    """Batch n is due n intervals after the start: when asking a batch to leave takes longer than the interval
    (their disconnect handlers), the next one starts at once instead of sleeping a whole interval more."""
    monkeypatch.setattr("utils.drain.MAX_BATCH_INTERVAL", 0.2)
    drain, asked = slow_drain(monkeypatch, graceful_timeout=20, sessions=5, ask_seconds=0.3)
    drain.run()
    assert len(asked) == 5
    waits = [asked[n + 1][1] - asked[n][2] for n in range(4)]
    assert max(waits) < 0.1, waits  # behind schedule from the first batch on: no wait between batches


def test_sessions_there_is_no_time_to_ask_are_left_and_the_background_work_still_stops(app, monkeypatch, caplog):
    """Budget 7 s: asking must end 3.5 s before it (leave grace, then the background tasks), so of ten asks of
    0.5 s each seven fit; the other three end with the process, and the stop callbacks still run in time."""
    drain, asked = slow_drain(monkeypatch, graceful_timeout=10, sessions=10, ask_seconds=0.5)
    stopped: list[float] = []
    drain.add_stop_callback("webhook outbox", lambda: stopped.append(time.monotonic()))
    left_before = DRAINED_SESSIONS.labels("left")._value.get()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="utils.drain"):
        drain.run()
    assert 1 <= len(asked) <= 7 and all(end - started <= 3.5 + 0.5 for _, _, end in asked), asked
    assert DRAINED_SESSIONS.labels("left")._value.get() - left_before == 10 - len(asked)
    assert stopped and stopped[0] - started < drain.budget, (stopped, drain.budget)
    assert f"{10 - len(asked)} sessions were not asked to leave" in caplog.text
    # Every client heard when to come back, the ones left too, before the first was asked to leave.
    assert sorted(sid for sid, _ in drain.hints) == sorted(f"sid{n}" for n in range(10))
    assert max(at for _, at in drain.hints) <= asked[0][1]


def test_background_tasks_stop_in_the_stated_order_and_are_waited_for(app, caplog):
    """Started in any order, stopped in STOP_ORDER; each is joined, and one that does not return is named."""
    drain = make_drain()
    stopped: list[str] = []
    events = {name: threading.Event() for name in ("fan-out worker", "token expiry", "shared websocket loop")}
    for name, event in events.items():
        drain.tasks.start(name, event.wait, lambda n=name, e=event: (stopped.append(n), e.set()))
    stubborn = threading.Event()
    drain.tasks.start("dashboard sampler", stubborn.wait, lambda: stopped.append("dashboard sampler"))
    assert drain.tasks.running() == ["token expiry", "dashboard sampler", "fan-out worker", "shared websocket loop"]
    with caplog.at_level(logging.INFO, logger="utils.drain"):
        assert drain.tasks.stop_all(wait=0.3) == ["dashboard sampler"]
    assert stopped == [name for name in STOP_ORDER if name in stopped]  # the stated order
    assert drain.tasks.running() == ["dashboard sampler"]
    assert "background task dashboard sampler did not stop" in caplog.text
    assert "background task fan-out worker stopped" in caplog.text
    stubborn.set()


def test_a_task_without_a_place_in_the_order_is_refused(app):
    with pytest.raises(ValueError, match="STOP_ORDER"):
        make_drain().tasks.start("mystery", lambda: None, lambda: None)
