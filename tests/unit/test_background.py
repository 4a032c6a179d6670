"""utils.background.Once: of many threads racing to start a task lazily, exactly one does."""

from __future__ import annotations

import threading

from utils.background import Once


def test_only_the_first_claim_is_granted():
    once = Once()
    assert once.claim() is True
    assert once.claim() is False
    assert once.claim() is False


def test_one_of_many_racing_threads_is_granted():
    once = Once()
    start = threading.Barrier(16)
    granted: list[bool] = []

    def claim() -> None:
        start.wait(timeout=5)
        granted.append(once.claim())

    threads = [threading.Thread(target=claim) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert sorted(granted) == [False] * 15 + [True]
