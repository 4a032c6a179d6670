"""The shared loop: callbacks in order, timers by due time, one thread that survives a failing callback."""

from __future__ import annotations

import threading
import time
from functools import partial

from transport.loop import SharedLoop


def wait_for(event: threading.Event, what: str) -> None:
    assert event.wait(5), f"timed out waiting for {what}"


def test_call_soon_runs_in_order_on_the_loop_thread(loop: SharedLoop):
    seen: list[tuple[int, bool]] = []
    done = threading.Event()
    def record(i: int) -> None:
        seen.append((i, loop.on_loop_thread()))

    for i in range(100):
        loop.call_soon(partial(record, i))
    loop.call_soon(done.set)
    wait_for(done, "callbacks")
    assert seen == [(i, True) for i in range(100)]


def test_timers_fire_by_due_time_not_by_arrival(loop: SharedLoop):
    order: list[str] = []
    done = threading.Event()
    def late() -> None:
        order.append("late")
        done.set()

    loop.call_later(0.3, late)
    loop.call_later(0.1, lambda: order.append("early"))
    started = time.monotonic()
    wait_for(done, "timers")
    assert order == ["early", "late"]
    assert time.monotonic() - started >= 0.25


def test_a_failing_callback_is_logged_and_the_loop_goes_on(loop: SharedLoop, caplog):
    done = threading.Event()
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(done.set)
    wait_for(done, "the callback after the failing one")
    assert any("callback failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_many_timers_share_one_thread(loop: SharedLoop):
    fired: list[int] = []
    done = threading.Event()
    before = threading.active_count()
    for i in range(2000):
        loop.call_later(0.05, partial(fired.append, i))
    loop.call_later(0.1, done.set)
    assert threading.active_count() == before  # no thread per timer, unlike python-engineio's pings
    wait_for(done, "2000 timers")
    assert sorted(fired) == list(range(2000))


def test_an_idle_loop_sleeps_instead_of_spinning(loop: SharedLoop):
    import resource

    loop.call_later(30, lambda: None)  # a far timer, as pings are
    started = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(1.0)
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (used.ru_utime - started.ru_utime) + (used.ru_stime - started.ru_stime)
    assert cpu < 0.3, f"the idle loop used {cpu:.2f} s of CPU in 1 s"


def test_no_wake_up_is_lost_under_concurrent_callers(loop: SharedLoop):
    # Four threads asking at once, with pauses so the loop keeps going back to sleep between bursts: a lost
    # wake-up leaves callbacks waiting forever.
    ran = []
    total = 4 * 300

    def caller() -> None:
        for i in range(300):
            loop.call_soon(lambda: ran.append(1))
            if i % 10 == 0:
                time.sleep(0.001)

    callers = [threading.Thread(target=caller) for _ in range(4)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join()
    deadline = time.monotonic() + 5
    while len(ran) < total and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(ran) == total
