"""blueprints/realtime/expiry.TokenExpiry: deadlines come due in order; the task is woken only for an earlier one."""

from __future__ import annotations

import threading

from blueprints.realtime.expiry import TokenExpiry


class CountingCondition(threading.Condition):
    def __init__(self) -> None:
        super().__init__()
        self.notified = 0

    def notify(self, n: int = 1) -> None:
        self.notified += 1
        super().notify(n)


def expiry_at(now: list[float]) -> tuple[TokenExpiry, list[str]]:
    started: list[str] = []
    expiry = TokenExpiry("/", lambda: None, lambda name, target, stop: started.append(name),
                         clock=lambda: now[0])
    expiry._changed = CountingCondition()
    return expiry, started


def test_the_task_is_woken_only_for_a_deadline_earlier_than_every_other():
    now = [1000.0]
    expiry, started = expiry_at(now)
    expiry.track("a", 2000)
    assert started == [TokenExpiry.TASK] and expiry._changed.notified == 1
    for n in range(50):  # later tokens (a connect storm with same-length tokens): the task sleeps on
        expiry.track(f"later-{n}", 2000 + n)
    assert expiry._changed.notified == 1
    expiry.track("sooner", 1500)
    assert expiry._changed.notified == 2
    expiry.stop()
    assert expiry._changed.notified == 3


def test_warnings_and_expiries_come_due_in_deadline_order():
    now = [1000.0]
    expiry, _ = expiry_at(now)
    expiry.track("late", 1200)
    expiry.track("early", 1100)
    expiry.track("gone", 1050)
    expiry.forget("gone")
    now[0] = 1080.0  # both warnings (30 s before, at 1070 and 1170) ... only the early one is due
    assert expiry._due() == [("early", 1100, "warn")]
    now[0] = 1300.0
    assert expiry._due() == [("early", 1100, "expire"), ("late", 1200, "warn"), ("late", 1200, "expire")]
    assert expiry.pending() == 0
