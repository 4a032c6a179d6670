"""A running shared loop for transport tests, stopped (and its thread joined) after each test."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from transport.loop import SharedLoop


@pytest.fixture
def loop() -> Iterator[SharedLoop]:
    threads: list[threading.Thread] = []

    def start(name, target, stop):
        thread = threading.Thread(target=target, daemon=True)
        threads.append(thread)
        thread.start()
        return thread

    shared = SharedLoop(start, name="test-transport")
    shared.ensure_started()
    yield shared
    shared.stop()
    for thread in threads:
        thread.join(timeout=5)
        assert not thread.is_alive(), "the loop thread did not stop"
